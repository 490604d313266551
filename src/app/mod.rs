//! The SPDK application framework (`spdk_app_start`): environment, reactors,
//! subsystems and the JSON-RPC server, configured by [`AppOptions`].
//!
//! ```no_run
//! use spdk_pmem::app::{self, AppOptions};
//!
//! let code = AppOptions::new("example")
//!     .reactor_mask("0x1")
//!     .rpc_addr("/var/tmp/example.sock")
//!     .run(|| {
//!         println!("SPDK is up");
//!         app::stop(0).expect("the app is serving");
//!     })
//!     .expect("options are valid");
//! std::process::exit(code);
//! ```
//!
//! - this module: the options ([`AppOptions`]);
//! - `preflight`: the checks that name a problem before SPDK would answer
//!   it with a page of usage text (core masks, the RPC socket, the shm id,
//!   hugepages);
//! - `spdk_opts`: the options as SPDK's `spdk_app_opts`;
//! - `lifecycle`: starting, serving, stopping and shutting down, and the
//!   panic policy of application callbacks.

use std::path::PathBuf;

mod lifecycle;
mod preflight;
mod spdk_opts;

pub(crate) use lifecycle::{app_thread_id, catch_panic, is_running, serving};
pub use lifecycle::{on_shutdown, shutdown, stop, ShutdownHook};
pub use preflight::parse_core_mask;

/// Options of an SPDK application: the fields of `spdk_app_opts`, plus `--no-huge`.
/// Unset options keep SPDK's defaults (`spdk_app_opts_init`).
#[derive(Debug, Clone)]
pub struct AppOptions {
    name: String,
    config_file: Option<PathBuf>,
    json_config_file: Option<PathBuf>,
    json_config_ignore_errors: bool,
    rpc_addr: Option<String>,
    reactor_mask: Option<String>,
    tpoint_group_mask: Option<String>,
    enable_coredump: bool,
    silence_noticelog: bool,
    wait_for_rpc: bool,
    num_trace_entries: Option<u64>,
    log_flags: Vec<String>,
    log_limit: u32,
    env: EnvOptions,
}

/// The DPDK environment's part of [`AppOptions`]: shared memory, cores,
/// memory and hugepages, IOVA, PCI.
#[derive(Debug, Clone, Default)]
struct EnvOptions {
    shm_id: Option<i32>,
    mem_channel: Option<i32>,
    master_core: Option<i32>,
    mem_size_mb: Option<i32>,
    no_pci: bool,
    hugepage_single_segments: bool,
    unlink_hugepage: bool,
    hugedir: Option<PathBuf>,
    iova_mode: Option<String>,
    base_virtaddr: Option<u64>,
    no_huge: bool,
    pci_blocked: Vec<String>,
    pci_allowed: Vec<String>,
}

/// Memory reserved with `--no-huge` when no size is given: DPDK's own default
/// (64 MiB) is too small for the NVMe-oF TCP transport's buffer pool.
const NO_HUGE_DEFAULT_MEM_MB: i32 = 1024;

/// The application: name, configuration, RPC server, reactors, tracing, logs.
impl AppOptions {
    /// Options with SPDK's defaults and the given application name.
    pub fn new(name: &str) -> Self {
        AppOptions {
            name: name.to_string(),
            config_file: None,
            json_config_file: None,
            json_config_ignore_errors: false,
            rpc_addr: None,
            reactor_mask: None,
            tpoint_group_mask: None,
            enable_coredump: true,
            silence_noticelog: false,
            wait_for_rpc: false,
            num_trace_entries: None,
            log_flags: Vec::new(),
            log_limit: crate::log_limit::DEFAULT_BURST,
            env: EnvOptions::default(),
        }
    }

    /// Legacy INI configuration file (`-c`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }
    /// JSON configuration file (`--json`), e.g. the output of `save_config`.
    pub fn json_config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.json_config_file = Some(path.into());
        self
    }
    /// Keep going when a JSON configuration entry fails (`--json-ignore-init-errors`).
    pub fn json_config_ignore_errors(mut self, yes: bool) -> Self {
        self.json_config_ignore_errors = yes;
        self
    }
    /// JSON-RPC listen address: a Unix socket path or `IP:port` (`-r`).
    pub fn rpc_addr(mut self, addr: &str) -> Self {
        self.rpc_addr = Some(addr.to_string());
        self
    }
    /// Reactor core mask, e.g. `0x1` or `[0,1]` (`-m`).
    pub fn reactor_mask(mut self, mask: &str) -> Self {
        self.reactor_mask = Some(mask.to_string());
        self
    }
    /// Tracepoint group mask (`-e`).
    pub fn tpoint_group_mask(mut self, mask: &str) -> Self {
        self.tpoint_group_mask = Some(mask.to_string());
        self
    }
    /// Whether a crash may write a full core dump (`-d` turns it off).
    pub fn enable_coredump(mut self, yes: bool) -> Self {
        self.enable_coredump = yes;
        self
    }
    /// Print warnings and errors only (`--silence-noticelog`).
    pub fn silence_noticelog(mut self, yes: bool) -> Self {
        self.silence_noticelog = yes;
        self
    }
    /// Start only the RPC server and wait for `framework_start_init` (`--wait-for-rpc`).
    pub fn wait_for_rpc(mut self, yes: bool) -> Self {
        self.wait_for_rpc = yes;
        self
    }
    /// Trace entries per core, a power of two (`--num-trace-entries`).
    pub fn num_trace_entries(mut self, n: u64) -> Self {
        self.num_trace_entries = Some(n);
        self
    }
    /// At most `lines` log lines (errors, warnings, notices) of one kind
    /// (one source line of SPDK's) per 10 s, then one that says how many
    /// more were left out; 0: every line (`--log-limit`, default 10).
    pub fn log_limit(mut self, lines: u32) -> Self {
        self.log_limit = lines;
        self
    }
    /// Enable a debug log flag (`-L`); effective in debug builds of SPDK.
    pub fn log_flag(mut self, flag: &str) -> Self {
        self.log_flags.push(flag.to_string());
        self
    }

    /// The RPC listen address in effect (SPDK's default `/var/tmp/spdk.sock` if unset).
    pub fn effective_rpc_addr(&self) -> &str {
        self.rpc_addr.as_deref().unwrap_or("/var/tmp/spdk.sock")
    }
}

/// The DPDK environment.
impl AppOptions {
    /// Shared-memory id: processes with the same id share hugepage files (`-i`).
    pub fn shm_id(mut self, id: i32) -> Self {
        self.env.shm_id = Some(id);
        self
    }
    /// Memory channels (`-n`).
    pub fn mem_channel(mut self, n: i32) -> Self {
        self.env.mem_channel = Some(n);
        self
    }
    /// The main reactor's core (`-p`).
    pub fn master_core(mut self, core: i32) -> Self {
        self.env.master_core = Some(core);
        self
    }
    /// Memory to reserve, in MiB (`-s`).
    pub fn mem_size_mb(mut self, mb: i32) -> Self {
        self.env.mem_size_mb = Some(mb);
        self
    }
    /// Do not touch PCI devices (`-u`).
    pub fn no_pci(mut self, yes: bool) -> Self {
        self.env.no_pci = yes;
        self
    }
    /// One hugepage file per segment list (`-g`).
    pub fn hugepage_single_segments(mut self, yes: bool) -> Self {
        self.env.hugepage_single_segments = yes;
        self
    }
    /// Unlink hugepage files after mapping them (`-R`).
    pub fn unlink_hugepage(mut self, yes: bool) -> Self {
        self.env.unlink_hugepage = yes;
        self
    }
    /// Where hugetlbfs is mounted (`--huge-dir`).
    pub fn hugedir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.env.hugedir = Some(dir.into());
        self
    }
    /// DPDK IOVA mode, `pa` or `va` (`--iova-mode`).
    pub fn iova_mode(mut self, mode: &str) -> Self {
        self.env.iova_mode = Some(mode.to_string());
        self
    }
    /// Base virtual address for DPDK's memory map (`--base-virtaddr`).
    pub fn base_virtaddr(mut self, addr: u64) -> Self {
        self.env.base_virtaddr = Some(addr);
        self
    }
    /// Run from ordinary memory instead of hugepages (`--no-huge`): DPDK gets
    /// `--no-huge`, IOVA mode `va`, and 1 GiB unless a memory size is given.
    /// SPDK's own NVMe-oF TCP target serves I/O like this; PCI devices cannot be used.
    pub fn no_huge(mut self, yes: bool) -> Self {
        self.env.no_huge = yes;
        self
    }
    /// Block a PCI address, `domain:bus:device.function` (`-B`).
    pub fn pci_block(mut self, bdf: &str) -> Self {
        self.env.pci_blocked.push(bdf.to_string());
        self
    }
    /// Allow only listed PCI addresses (`-W`).
    pub fn pci_allow(mut self, bdf: &str) -> Self {
        self.env.pci_allowed.push(bdf.to_string());
        self
    }
}
