//! Where the pmem workers run and at what priority.
//!
//! By default on every online CPU: a thread started from a reactor inherits
//! its single-core affinity, and the workers are better off where the
//! scheduler finds room (measured, docs/pmem-modules.md).
//! `--pmem-io-cpumask` narrows that, as `-m` places the reactors: away from
//! the reactors' cores on a machine with CPUs to spare, or onto them.

use std::sync::RwLock;

use crate::error::{Error, Result};

/// A set of CPUs, given as a hexadecimal mask like SPDK's `-m` (`0x3`:
/// CPUs 0 and 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask(Vec<usize>);

impl CpuMask {
    /// Parses a mask of online CPUs; says what to give instead of one
    /// that is empty, not hexadecimal, or names a CPU this machine lacks.
    pub fn parse(s: &str) -> Result<CpuMask> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "CPU mask {s:?}: {why}; give a hexadecimal mask of online CPUs \
                 (0 to {}), like 0x1 for CPU 0",
                online_cpus() - 1
            ))
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("not a hexadecimal number".into()));
        }
        let mut cpus = Vec::new();
        for (i, c) in digits.chars().rev().enumerate() {
            let nibble = c.to_digit(16).unwrap_or(0) as usize;
            cpus.extend((0..4).filter(|b| nibble & (1 << b) != 0).map(|b| 4 * i + b));
        }
        match cpus.iter().find(|&&cpu| cpu >= online_cpus()) {
            _ if cpus.is_empty() => Err(bad("no CPU in it".into())),
            Some(cpu) => Err(bad(format!("CPU {cpu} is not online"))),
            None => Ok(CpuMask(cpus)),
        }
    }

    /// The CPUs, lowest first.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    fn to_cpu_set(&self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in self.0.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: cpu < CPU_SETSIZE, inside the set.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }
}

/// CPUs 0 to N-1 are online here (sysconf's count).
fn online_cpus() -> usize {
    // SAFETY: sysconf only reads.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    cpus.min(libc::CPU_SETSIZE as usize)
}

static WORKER_CPUS: RwLock<Option<CpuMask>> = RwLock::new(None);

/// Where the workers of pmem bdevs created from now on may run; `None`:
/// every online CPU (the default).
pub fn set_worker_cpus(mask: Option<CpuMask>) {
    *WORKER_CPUS.write().unwrap_or_else(|e| e.into_inner()) = mask;
}

/// The CPUs a new bdev's workers run on.
pub(super) fn worker_cpus() -> libc::cpu_set_t {
    let chosen = WORKER_CPUS.read().unwrap_or_else(|e| e.into_inner());
    match &*chosen {
        Some(mask) => mask.to_cpu_set(),
        None => CpuMask((0..online_cpus()).collect()).to_cpu_set(),
    }
}

/// A worker's scheduling: its CPUs, and real-time priority (SCHED_FIFO 1),
/// falling back to nice -20 without CAP_SYS_NICE. A worker runs a few
/// microseconds between msyncs and sleeps otherwise; where reactors and
/// initiators busy-poll every core, each wake-up at the default priority
/// waited for its turn. Measured through the target, four workers wrote
/// about 2,000 blocks/s at the default priority or pinned beside the
/// initiator, 2,600 at nice -20 and 2,860 under SCHED_FIFO (docs/pmem-modules.md). A
/// worker never spins: it takes a reactor's CPU only for the work it does,
/// which the CPU budget limits while the reactor is busy.
pub(super) fn schedule_worker(cpus: &libc::cpu_set_t) {
    // SAFETY: sets the calling thread's own affinity and scheduling from
    // valid arguments; failures leave them as they were.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of_val(cpus), cpus);
        let fifo = libc::sched_param { sched_priority: 1 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn masks_name_online_cpus_or_say_what_to_give() {
        assert_eq!(CpuMask::parse("0x1").unwrap().cpus(), &[0]);
        assert_eq!(CpuMask::parse("1").unwrap().cpus(), &[0]);
        if online_cpus() >= 2 {
            assert_eq!(CpuMask::parse("0X3").unwrap().cpus(), &[0, 1]);
        }
        let beyond = format!("0x1{}", "0".repeat(online_cpus().div_ceil(4)));
        for (bad, why) in [
            ("", "not a hexadecimal number"),
            ("0x", "not a hexadecimal number"),
            ("0xg", "not a hexadecimal number"),
            ("-1", "not a hexadecimal number"),
            ("0x0", "no CPU in it"),
            (beyond.as_str(), "is not online"),
        ] {
            let e = CpuMask::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("like 0x1"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_workers_cpu_set_is_the_mask_or_every_online_cpu() {
        let count = |set: &libc::cpu_set_t| {
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: i < CPU_SETSIZE.
                .filter(|&i| unsafe { libc::CPU_ISSET(i, set) })
                .count()
        };
        assert_eq!(count(&CpuMask::parse("0x1").unwrap().to_cpu_set()), 1);
        assert_eq!(
            count(&CpuMask((0..online_cpus()).collect()).to_cpu_set()),
            online_cpus()
        );
    }
}
