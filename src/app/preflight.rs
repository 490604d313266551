//! Checks run before SPDK starts, each naming the problem and its fix
//! where SPDK would print its usage text or fail deep in DPDK.

use std::path::Path;

use super::AppOptions;
use crate::error::{Error, Result};

/// The cores of a core mask in SPDK's forms: hex (`0x3`, `3`) or a list
/// (`[0,2-3]`).
pub fn parse_core_mask(mask: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::InvalidArgument(format!(
            "invalid core mask {mask:?}: use hex (0x3) or a list ([0,2-3])"
        ))
    };
    let m = mask.trim();
    let mut cores = Vec::new();
    if let Some(list) = m.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        for part in list.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let c: usize = part.trim().parse().map_err(|_| bad())?;
                    (c, c)
                }
            };
            if lo > hi || hi >= 1024 {
                return Err(bad());
            }
            cores.extend(lo..=hi);
        }
    } else {
        let hex = m
            .strip_prefix("0x")
            .or_else(|| m.strip_prefix("0X"))
            .unwrap_or(m);
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        for (i, digit) in hex.chars().rev().enumerate() {
            let v = digit.to_digit(16).unwrap_or(0);
            for bit in 0..4 {
                if v & (1 << bit) != 0 {
                    cores.push(i * 4 + bit);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "core mask {mask:?} selects no core"
        )));
    }
    Ok(cores)
}

/// SPDK 20.07 logs "socket in use" and then runs on without its RPC server,
/// unreachable; refuse to start instead when another server answers there.
fn check_rpc_socket_free(addr: &str) -> Result<()> {
    if !addr.starts_with('/') {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(addr).is_ok() {
        return Err(Error::InvalidArgument(format!(
            "RPC socket {addr} is in use by another SPDK application: stop it, or pass -r with another path"
        )));
    }
    Ok(())
}

/// DPDK starts with `--proc-type=auto`: a second process on the same shared
/// memory id does not fail, it attaches to the first one's memory as a DPDK
/// secondary process. Refuse instead while a live process holds the lock
/// DPDK's primary takes on its runtime config file.
fn check_shm_id_free(shm_id: i32, runtime_dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let config = runtime_dir.join(format!("spdk{shm_id}")).join("config");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&config)
    else {
        return Ok(());
    };
    // SAFETY: a zeroed flock is a valid value to fill in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_GETLK on an open descriptor, with a valid flock to fill in.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    if rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short {
        return Err(Error::InvalidArgument(format!(
            "shared-memory id {shm_id} is in use by another SPDK application (process {}): stop it, or pass -i with another id",
            lock.l_pid
        )));
    }
    Ok(())
}

/// The cores this process may run on.
fn usable_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and its size is passed along.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads the set filled above; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// A core mask naming cores the machine lacks makes DPDK print its usage text;
/// say which core is missing and which exist instead.
fn check_core_mask(mask: &str) -> Result<()> {
    let usable = usable_cores();
    let missing: Vec<usize> = parse_core_mask(mask)?
        .into_iter()
        .filter(|c| !usable.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "core mask {mask} selects core(s) {missing:?}, which this machine does not have for this process; \
         usable cores: {usable:?} (e.g. -m 0x1)"
    )))
}

/// Hugepages are where SPDK gets DMA-able memory; without them DPDK prints a
/// page of usage text. Say what to run instead.
fn check_hugepages(hugedir: Option<&Path>) -> Result<()> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fix =
        "run `echo 1024 > /proc/sys/vm/nr_hugepages && mount -t hugetlbfs nodev /dev/hugepages` \
               as root (scripts/setup-host.sh does both), or start with --no-huge";
    if free == 0 {
        return Err(Error::Environment(format!(
            "no free hugepages (HugePages_Free: 0 in /proc/meminfo): {fix}"
        )));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let dir = f.nth(1);
        let fstype = f.next();
        fstype == Some("hugetlbfs")
            && hugedir.is_none_or(|want| dir == Some(&*want.to_string_lossy()))
    });
    if !mounted {
        let where_ = hugedir.map_or("any directory".to_string(), |d| d.display().to_string());
        return Err(Error::Environment(format!(
            "hugetlbfs is not mounted at {where_}: {fix}"
        )));
    }
    Ok(())
}

impl AppOptions {
    /// Checks the options that SPDK would otherwise reject with a page of usage text.
    pub(super) fn validate(&self) -> Result<()> {
        if !self.env.pci_blocked.is_empty() && !self.env.pci_allowed.is_empty() {
            return Err(Error::InvalidArgument(
                "-B (PCI block list) and -W (PCI allow list) cannot be used at the same time"
                    .into(),
            ));
        }
        if self.config_file.is_some() && self.json_config_file.is_some() {
            return Err(Error::InvalidArgument(
                "a legacy config (-c) and a JSON config (--json) can't be used together".into(),
            ));
        }
        if self.json_config_file.is_some() && self.wait_for_rpc {
            return Err(Error::InvalidArgument(
                "a JSON configuration (--json) can't be used together with --wait-for-rpc".into(),
            ));
        }
        if let Some(n) = self.num_trace_entries {
            if n == 0 || !n.is_power_of_two() {
                return Err(Error::InvalidArgument(format!(
                    "num-trace-entries must be a power of 2, not {n}"
                )));
            }
        }
        for path in self.json_config_file.iter().chain(&self.config_file) {
            if let Err(e) = std::fs::File::open(path) {
                return Err(Error::InvalidArgument(format!(
                    "can't read configuration file {}: {e}",
                    path.display()
                )));
            }
        }
        if let Some(mask) = &self.reactor_mask {
            check_core_mask(mask)?;
        }
        check_rpc_socket_free(self.effective_rpc_addr())?;
        if let Some(id) = self.env.shm_id.filter(|&id| id >= 0) {
            check_shm_id_free(id, Path::new("/var/run/dpdk"))?;
        }
        if !self.env.no_huge {
            check_hugepages(self.env.hugedir.as_deref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_options_are_refused_before_spdk_starts() {
        let err = AppOptions::new("t")
            .pci_block("0000:01:00.0")
            .pci_allow("0000:02:00.0")
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot be used at the same time"),
            "{err}"
        );

        let err = AppOptions::new("t")
            .num_trace_entries(1000)
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(err.to_string().contains("power of 2"), "{err}");

        let err = AppOptions::new("t")
            .json_config_file("/nonexistent/config.json")
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/config.json"),
            "{err}"
        );
    }

    #[test]
    fn an_rpc_socket_with_a_server_on_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let path = path.to_str().unwrap();
        assert!(check_rpc_socket_free(path).is_ok());
        let _server = std::os::unix::net::UnixListener::bind(path).unwrap();
        let err = check_rpc_socket_free(path).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains("-r"), "{err}");
    }

    #[test]
    fn core_masks_parse_in_spdks_forms() {
        assert_eq!(parse_core_mask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_core_mask("0x5").unwrap(), vec![0, 2]);
        assert_eq!(parse_core_mask("30").unwrap(), vec![4, 5]);
        assert_eq!(parse_core_mask("[0,2-3]").unwrap(), vec![0, 2, 3]);
        assert!(parse_core_mask("0x0").is_err());
        assert!(parse_core_mask("zz").is_err());
        assert!(parse_core_mask("[3-1]").is_err());
    }

    #[test]
    fn a_core_the_machine_lacks_is_named() {
        let err = check_core_mask("[1000]").unwrap_err().to_string();
        assert!(
            err.contains("[1000]") && err.contains("usable cores"),
            "{err}"
        );
        assert!(check_core_mask("0x1").is_ok());
    }

    #[test]
    fn missing_hugetlbfs_mount_names_the_fix() {
        let err = check_hugepages(Some(Path::new("/nonexistent-hugedir"))).unwrap_err();
        let text = err.to_string();
        // With no free hugepages the first check fires; either way the fix is named.
        assert!(
            text.contains("--no-huge") && text.contains("nr_hugepages"),
            "{text}"
        );
    }
}
