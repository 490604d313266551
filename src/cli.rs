//! The command line of SPDK 20.07's `nvmf_tgt` (`lib/event/app.c`), parsed with
//! clap: the same short and long flags, meanings and defaults, plus `--no-huge`.

use clap::{ArgAction, Parser, ValueEnum};

use crate::app::AppOptions;
use crate::error::{Error, Result};

/// Which implementation of a bdev module serves SPDK's RPC methods for it.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleChoice {
    /// This project's module, written in Rust.
    #[default]
    Rust,
    /// SPDK 20.07's own C module.
    C,
}

/// `nvmf_tgt`: SPDK's NVMe over Fabrics target, built on the Rust `spdk_pmem` library.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "nvmf_tgt",
    disable_version_flag = true,
    // getopt semantics: a repeated flag overrides the earlier one.
    args_override_self = true,
    about = "SPDK NVMe-oF target (drop-in for SPDK 20.07's nvmf_tgt), configured over JSON-RPC with scripts/rpc.py"
)]
pub struct Args {
    /// Legacy INI config file
    #[arg(short = 'c', long = "config", value_name = "config")]
    pub config: Option<String>,
    /// JSON config file (e.g. the output of `rpc.py save_config`)
    #[arg(long = "json", value_name = "config")]
    pub json: Option<String>,
    /// Don't exit on an invalid config entry
    #[arg(long = "json-ignore-init-errors")]
    pub json_ignore_init_errors: bool,
    /// Do not set max coredump size to RLIM_INFINITY
    #[arg(short = 'd', long = "limit-coredump")]
    pub limit_coredump: bool,
    /// Tracepoint group mask for spdk trace buffers
    #[arg(short = 'e', long = "tpoint-group-mask", value_name = "mask")]
    pub tpoint_group_mask: Option<String>,
    /// Force creating just one hugetlbfs file
    #[arg(short = 'g', long = "single-file-segments")]
    pub single_file_segments: bool,
    /// Shared memory ID
    #[arg(short = 'i', long = "shm-id", value_name = "id", value_parser = parse_non_negative)]
    pub shm_id: Option<i32>,
    /// Core mask for DPDK, e.g. `0x3` or `[0,1]` (the help text is SPDK's).
    #[arg(
        short = 'm',
        long = "cpumask",
        value_name = "mask",
        help = "Core mask for DPDK, e.g. 0x3 or [0,1]"
    )]
    pub cpumask: Option<String>,
    /// Number of memory channels used for DPDK
    #[arg(short = 'n', long = "mem-channels", value_name = "num", value_parser = parse_non_negative)]
    pub mem_channels: Option<i32>,
    /// Master (primary) core for DPDK
    #[arg(short = 'p', long = "master-core", value_name = "id", value_parser = parse_non_negative)]
    pub master_core: Option<i32>,
    /// RPC listen address
    #[arg(
        short = 'r',
        long = "rpc-socket",
        value_name = "path",
        default_value = "/var/tmp/spdk.sock"
    )]
    pub rpc_socket: String,
    /// Memory size in MB for DPDK (suffixes k, m, g accepted)
    #[arg(short = 's', long = "mem-size", value_name = "size", value_parser = parse_mem_size_mb)]
    pub mem_size: Option<i32>,
    /// Disable notice level logging to stderr
    #[arg(long = "silence-noticelog")]
    pub silence_noticelog: bool,
    /// Disable PCI access
    #[arg(short = 'u', long = "no-pci")]
    pub no_pci: bool,
    /// Wait for RPCs to initialize subsystems
    #[arg(long = "wait-for-rpc")]
    pub wait_for_rpc: bool,
    /// Maximum reactor delay in microseconds (deprecated, no effect)
    #[arg(long = "max-delay", value_name = "num")]
    pub max_delay: Option<String>,
    /// PCI address to block (can be used more than once)
    #[arg(short = 'B', long = "pci-blacklist", value_name = "bdf", action = ArgAction::Append)]
    pub pci_blacklist: Vec<String>,
    /// Enable a debug log flag (needs an SPDK built with --enable-debug)
    #[arg(short = 'L', long = "logflag", value_name = "flag", action = ArgAction::Append)]
    pub logflag: Vec<String>,
    /// Unlink huge files after initialization
    #[arg(short = 'R', long = "huge-unlink")]
    pub huge_unlink: bool,
    /// Print the SPDK version
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// PCI address to allow (-B and -W cannot be used at the same time)
    #[arg(short = 'W', long = "pci-whitelist", value_name = "bdf", action = ArgAction::Append)]
    pub pci_whitelist: Vec<String>,
    /// Use a specific hugetlbfs mount to reserve memory from
    #[arg(long = "huge-dir", value_name = "path")]
    pub huge_dir: Option<String>,
    /// IOVA mode: 'pa' for IOVA_PA and 'va' for IOVA_VA
    #[arg(long = "iova-mode", value_name = "pa/va")]
    pub iova_mode: Option<String>,
    /// Base virtual address for DPDK (default: 0x200000000000)
    #[arg(long = "base-virtaddr", value_name = "addr", value_parser = parse_positive_u64)]
    pub base_virtaddr: Option<u64>,
    /// Number of trace entries for each core, a power of 2 (default 32768)
    #[arg(long = "num-trace-entries", value_name = "num", value_parser = parse_power_of_two)]
    pub num_trace_entries: Option<u64>,
    /// Run without hugepages (not in SPDK 20.07; PCI devices cannot be used)
    #[arg(long = "no-huge")]
    pub no_huge: bool,
    /// Which pmem bdev module serves bdev_pmem_create/_delete: rust (this
    /// project's, I/O off the reactor for pools on disk; the default) or c
    /// (SPDK 20.07's, for comparison). Not in SPDK 20.07.
    #[arg(long = "pmem-module", value_name = "rust|c", default_value = "rust")]
    pub pmem_module: ModuleChoice,
    /// Which RBD bdev module serves bdev_rbd_create/_delete: rust (this
    /// project's: connects and opens images off the reactors, one
    /// connection per cluster; the default) or c (SPDK 20.07's). Not in
    /// SPDK 20.07.
    #[arg(long = "rbd-module", value_name = "rust|c", default_value = "rust")]
    pub rbd_module: ModuleChoice,
    /// Where the Rust pmem module does pool I/O: auto (inline for a pool on
    /// tmpfs or ramfs, worker threads otherwise), inline, or a number of
    /// worker threads. Not in SPDK 20.07.
    #[arg(long = "pmem-io-threads", value_name = "auto|inline|N", default_value = "auto",
          value_parser = parse_io_threads)]
    pub pmem_io_threads: crate::pmem_bdev::IoThreads,
    /// The share of one CPU, in percent, that the Rust pmem module's worker
    /// threads may use together while an SPDK thread serving its bdevs is
    /// busy (half its time or more in polls that do work); 100 lifts the
    /// limit. Not in SPDK 20.07.
    #[arg(long = "pmem-busy-cpu-limit", value_name = "PERCENT", default_value = "10",
          value_parser = parse_percent)]
    pub pmem_busy_cpu_limit: f64,
    /// The CPUs the Rust pmem module's worker threads may run on, as a
    /// hexadecimal mask like -m's; every online CPU if not given. Not in
    /// SPDK 20.07.
    #[arg(long = "pmem-io-cpumask", value_name = "MASK", value_parser = parse_cpumask)]
    pub pmem_io_cpumask: Option<crate::pmem_bdev::placement::CpuMask>,
    /// Microseconds a reactor must find no work before it sleeps, as long
    /// each time, until work arrives: CPU back to what shares the machine
    /// (a Ceph OSD), at up to that much more latency after an idle
    /// stretch. 0 (the default) polls without pause, as SPDK 20.07 does.
    /// Not in SPDK 20.07.
    #[arg(long = "idle-nap-us", value_name = "USEC", default_value = "0",
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub idle_nap_us: u64,
    /// Log lines (errors, warnings, notices) of one kind, one source line
    /// of SPDK's, written per 10 s; then one line says how many more were
    /// left out, so hosts sending bad commands cannot fill the disk with
    /// the log. 0 writes every line, as SPDK 20.07 does. Not in SPDK 20.07.
    #[arg(long = "log-limit", value_name = "LINES", default_value = "10")]
    pub log_limit: u32,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (off unless
    /// given), from a thread of its own, never a reactor. Not in SPDK 20.07.
    #[arg(long = "metrics", value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// How many NVMe/TCP connections may wait for a Fabrics Connect at
    /// once, from all sources; more are closed when accepted. Not in SPDK
    /// 20.07.
    #[arg(long = "tcp-max-waiting-connects", value_name = "N", default_value = "1024",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_waiting_connects: u32,
    /// How many of those may come from one source address (a host connects
    /// all its queues before their Connects: keep it above its queue
    /// count). Not in SPDK 20.07.
    #[arg(long = "tcp-max-waiting-connects-per-address", value_name = "N",
          default_value = "128", value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_waiting_connects_per_address: u32,
    /// Seconds an NVMe/TCP connection may take to send its Fabrics Connect
    /// before it is closed. Not in SPDK 20.07.
    #[arg(long = "tcp-connect-timeout", value_name = "SECONDS", default_value = "10",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub tcp_connect_timeout: u32,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.1..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?}: give a percentage from 0.1 to 100")),
    }
}

fn parse_cpumask(s: &str) -> std::result::Result<crate::pmem_bdev::placement::CpuMask, String> {
    crate::pmem_bdev::placement::CpuMask::parse(s).map_err(|e| e.to_string())
}

fn parse_io_threads(s: &str) -> std::result::Result<crate::pmem_bdev::IoThreads, String> {
    crate::pmem_bdev::IoThreads::parse(s).map_err(|e| e.to_string())
}

impl Args {
    /// The limits on NVMe/TCP connections waiting for a Fabrics Connect
    /// (checked when applied: `ConnectLimits::apply`).
    pub fn tcp_connect_limits(&self) -> crate::tcp_admission::ConnectLimits {
        crate::tcp_admission::ConnectLimits {
            max_waiting: self.tcp_max_waiting_connects,
            max_waiting_per_address: self.tcp_max_waiting_connects_per_address,
            deadline: std::time::Duration::from_secs(self.tcp_connect_timeout.into()),
        }
    }

    /// The application options these flags ask for, named `nvmf` as in the
    /// C binary (`AppOptions::try_from`).
    pub fn app_options(&self) -> Result<AppOptions> {
        AppOptions::try_from(self)
    }
}

impl TryFrom<&Args> for AppOptions {
    type Error = Error;

    /// The application options the flags ask for, named `nvmf` as in the C binary.
    fn try_from(args: &Args) -> Result<AppOptions> {
        if !args.logflag.is_empty() && !crate::sys::DEBUG_BUILD {
            return Err(Error::InvalidArgument(
                "nvmf_tgt must be configured with --enable-debug for -L flag".into(),
            ));
        }
        let mut o = AppOptions::new("nvmf")
            .rpc_addr(&args.rpc_socket)
            .json_config_ignore_errors(args.json_ignore_init_errors)
            .enable_coredump(!args.limit_coredump)
            .hugepage_single_segments(args.single_file_segments)
            .silence_noticelog(args.silence_noticelog)
            .no_pci(args.no_pci)
            .wait_for_rpc(args.wait_for_rpc)
            .unlink_hugepage(args.huge_unlink)
            .no_huge(args.no_huge)
            .log_limit(args.log_limit);
        if let Some(v) = &args.config {
            o = o.config_file(v);
        }
        if let Some(v) = &args.json {
            o = o.json_config_file(v);
        }
        if let Some(v) = &args.tpoint_group_mask {
            o = o.tpoint_group_mask(v);
        }
        if let Some(v) = args.shm_id {
            o = o.shm_id(v);
        }
        if let Some(v) = &args.cpumask {
            o = o.reactor_mask(v);
        }
        if let Some(v) = args.mem_channels {
            o = o.mem_channel(v);
        }
        if let Some(v) = args.master_core {
            o = o.master_core(v);
        }
        if let Some(v) = args.mem_size {
            o = o.mem_size_mb(v);
        }
        if let Some(v) = &args.huge_dir {
            o = o.hugedir(v);
        }
        if let Some(v) = &args.iova_mode {
            o = o.iova_mode(v);
        }
        if let Some(v) = args.base_virtaddr {
            o = o.base_virtaddr(v);
        }
        if let Some(v) = args.num_trace_entries {
            o = o.num_trace_entries(v);
        }
        for f in &args.logflag {
            o = o.log_flag(f);
        }
        for b in &args.pci_blacklist {
            o = o.pci_block(b);
        }
        for w in &args.pci_whitelist {
            o = o.pci_allow(w);
        }
        Ok(o)
    }
}

/// strtol with base 0, as SPDK's `spdk_strtol(optarg, 0)`: decimal, 0x hex or 0 octal.
fn parse_c_integer(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -value } else { value })
}

fn parse_non_negative(s: &str) -> std::result::Result<i32, String> {
    parse_c_integer(s)
        .filter(|v| *v >= 0)
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is not a non-negative integer"))
}

fn parse_positive_u64(s: &str) -> std::result::Result<u64, String> {
    parse_c_integer(s)
        .filter(|v| *v > 0)
        .map(|v| v as u64)
        .ok_or_else(|| format!("`{s}` is not a positive integer"))
}

fn parse_power_of_two(s: &str) -> std::result::Result<u64, String> {
    let n = parse_positive_u64(s)?;
    if n.is_power_of_two() {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of 2"))
    }
}

/// As `spdk_parse_capacity`: a plain number is MB; with a k/m/g suffix (optionally
/// followed by `b`) it is a byte count converted to MB.
fn parse_mem_size_mb(s: &str) -> std::result::Result<i32, String> {
    let bad = || format!("invalid memory pool size `-s {s}`");
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mb = if shift == 0 {
        n
    } else {
        n.checked_shl(shift).ok_or_else(bad)? / (1024 * 1024)
    };
    i32::try_from(mb).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("nvmf_tgt").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_c_binary() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.rpc_socket, "/var/tmp/spdk.sock");
        assert_eq!(a.shm_id, None);
        assert!(!a.no_huge);
    }

    #[test]
    fn short_long_and_attached_forms_parse_alike() {
        let a = parse(&["-m", "0x1", "-i", "3", "-r", "/tmp/x.sock", "-s", "1g"]).unwrap();
        let b = parse(&[
            "--cpumask=0x1",
            "--shm-id",
            "3",
            "--rpc-socket=/tmp/x.sock",
            "-s1024",
        ])
        .unwrap();
        assert_eq!(a.cpumask.as_deref(), Some("0x1"));
        assert_eq!((a.shm_id, a.mem_size), (Some(3), Some(1024)));
        assert_eq!((b.shm_id, b.mem_size), (Some(3), Some(1024)));
        assert_eq!(a.rpc_socket, b.rpc_socket);
        let c = parse(&[
            "-B",
            "0000:01:00.0",
            "-B",
            "0000:02:00.0",
            "--wait-for-rpc",
            "-u",
            "-R",
            "-g",
            "-d",
        ])
        .unwrap();
        assert_eq!(c.pci_blacklist.len(), 2);
        assert!(
            c.wait_for_rpc
                && c.no_pci
                && c.huge_unlink
                && c.single_file_segments
                && c.limit_coredump
        );
    }

    #[test]
    fn a_repeated_flag_overrides_as_with_getopt() {
        let a = parse(&["-r", "/tmp/a.sock", "-r", "/tmp/b.sock"]).unwrap();
        assert_eq!(a.rpc_socket, "/tmp/b.sock");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["-i", "-1"]).is_err());
        assert!(parse(&["-s", "lots"]).is_err());
        assert!(parse(&["--num-trace-entries", "1000"]).is_err());
        assert!(parse(&["--num-trace-entries", "1024"]).is_ok());
        assert!(parse(&["--base-virtaddr", "0"]).is_err());
        assert_eq!(parse(&["-i", "0x10"]).unwrap().shm_id, Some(16));
    }

    #[test]
    fn mem_size_follows_spdk_parse_capacity() {
        assert_eq!(parse_mem_size_mb("512"), Ok(512));
        assert_eq!(parse_mem_size_mb("2G"), Ok(2048));
        assert_eq!(parse_mem_size_mb("512MB"), Ok(512));
        assert_eq!(parse_mem_size_mb("4096k"), Ok(4));
        assert!(parse_mem_size_mb("").is_err());
    }
}
