//! Reactors that give their CPU back while they have nothing to do.
//!
//! SPDK 20.07's reactors poll without pause (its interrupt mode came in
//! v21.01). That is right when the target has its cores to itself, and
//! wrong when what it waits for runs on the same CPUs: a Ceph OSD on this
//! machine (the dev cluster, or a hyper-converged node). Measured on 2 CPUs
//! (scripts/bench.sh --rbd, RBD namespace, randwrite QD 32): the reactor
//! polled one CPU while its 32 writes sat in the OSD, which got 0.46 CPU
//! against 0.86 under `rbd bench` alone, and the namespace gave 0.44x
//! `rbd bench`'s IOPS.
//!
//! With a nap of N microseconds, a reactor that has done no work (no poll of
//! any of its threads found any) for N microseconds sleeps N microseconds at
//! a time until work arrives, from a thread of its own on that reactor. Work
//! that arrives during a nap waits for its end: at most N microseconds more
//! latency, and only after an idle stretch, so a loaded reactor never
//! sleeps. Off (0) by default, as SPDK's nvmf_tgt polls.

use std::cell::RefCell;
use std::ffi::CString;
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{Poller, Thread};

/// How often a nap thread checks whether the application is stopping.
const STOP_CHECK_US: u64 = 100_000;

/// Starts a nap thread on every reactor, from the application thread.
pub fn start(nap: Duration) -> Result<()> {
    if nap.is_zero() {
        return Ok(());
    }
    for core in reactor_cores() {
        let thread = create_thread_on(&format!("idle_nap_{core}"), core)?;
        thread.send(move || {
            if let Err(e) = watch(core, nap) {
                crate::log::error(&format!("idle nap on core {core}: {e}"));
            }
        })?;
    }
    Ok(())
}

/// The cores SPDK runs reactors on.
fn reactor_cores() -> Vec<u32> {
    let mut cores = Vec::new();
    // SAFETY: the environment's core list is fixed once SPDK has started;
    // these only read it.
    let mut core = unsafe { sys::spdk_env_get_first_core() };
    while core != u32::MAX {
        cores.push(core);
        // SAFETY: as above.
        core = unsafe { sys::spdk_env_get_next_core(core) };
    }
    cores
}

/// An SPDK thread that the reactor on `core` runs.
fn create_thread_on(name: &str, core: u32) -> Result<Thread> {
    let name = CString::new(name)
        .map_err(|_| Error::InvalidArgument("a thread name contains a NUL byte".into()))?;
    // SAFETY: zeroed is a valid empty cpuset; the calls fill the one we own,
    // and spdk_thread_create copies the name and the mask.
    let raw = unsafe {
        let mut mask: sys::spdk_cpuset = std::mem::zeroed();
        sys::spdk_cpuset_zero(&mut mask);
        sys::spdk_cpuset_set_cpu(&mut mask, core, true);
        sys::spdk_thread_create(name.as_ptr(), &mut mask)
    };
    if raw.is_null() {
        return Err(Error::spdk("spdk_thread_create (idle nap)", -libc::ENOMEM));
    }
    // SAFETY: `raw` is the live thread just created.
    let id = unsafe { sys::spdk_thread_get_id(raw) };
    Thread::from_id(id).ok_or_else(|| Error::spdk("spdk_thread_get_id (idle nap)", -libc::ENOENT))
}

/// The reactor's busy ticks: they grow whenever a poll of one of its
/// threads did work.
fn reactor_busy_ticks(core: u32) -> Option<u64> {
    let mut busy = 0;
    // SAFETY: reads one field of the reactor on `core`, which is the
    // reactor running this very call (nothing else writes it meanwhile).
    unsafe { sys::spdk_pmem_reactor_busy_tsc(core, &mut busy) }.then_some(busy)
}

/// On the nap thread: naps while the reactor is idle, until the application
/// stops.
fn watch(core: u32, nap: Duration) -> Result<()> {
    // The kernel's default timer slack (50 us) would stretch short naps.
    // SAFETY: prctl with PR_SET_TIMERSLACK only sets the calling thread's
    // slack (this reactor's), in nanoseconds.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    // SAFETY: spdk_get_ticks_hz only reads the environment's tick rate.
    let hz = unsafe { sys::spdk_get_ticks_hz() };
    let idle_ticks = (hz as u128 * nap.as_nanos() / 1_000_000_000) as u64;
    let mut last_busy = reactor_busy_ticks(core)
        .ok_or_else(|| Error::InvalidArgument(format!("no reactor on core {core} to watch")))?;
    // SAFETY: spdk_get_ticks only reads the clock.
    let mut idle_since = unsafe { sys::spdk_get_ticks() };
    let napper = Poller::register(0, move || {
        // SAFETY: as above.
        let now = unsafe { sys::spdk_get_ticks() };
        match reactor_busy_ticks(core) {
            Some(busy) if busy != last_busy => {
                last_busy = busy;
                idle_since = now;
            }
            _ if now.saturating_sub(idle_since) >= idle_ticks => std::thread::sleep(nap),
            _ => {}
        }
        // Napping is not work: the reactor must keep looking idle.
        false
    })?;
    let pollers = Rc::new(RefCell::new(vec![napper]));
    let kept = Rc::clone(&pollers);
    let stopper = Poller::register(STOP_CHECK_US, move || {
        if crate::app::serving() {
            return false;
        }
        // Dropping them here (this closure's own poller included) is what
        // lets the thread exit when SPDK stops its reactors.
        kept.borrow_mut().clear();
        // SAFETY: called on this nap thread, which SPDK then lets finish.
        unsafe { sys::spdk_thread_exit(sys::spdk_get_thread()) };
        false
    })?;
    pollers.borrow_mut().push(stopper);
    Ok(())
}
