//! Shared-memory ids and TCP ports no other test uses.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Processes that may run tests side by side, and ids each one hands out
/// before it reuses one: the integration binary's process starts every
/// target of its tests, the crash torture one per kill cycle, so it wraps
/// around, but never while an id it handed out that long ago is in use.
const PROCESS_SLOTS: u32 = 24;
const IDS_PER_PROCESS: u32 = 512;

/// A shared-memory id and a TCP port that no other test uses: derived from
/// the pid, so test binaries run side by side do not collide either. Ports
/// stay below Linux's ephemeral range (32768 and up), where clients' own
/// sockets are.
pub fn unique_ids() -> (i32, u16) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst) % IDS_PER_PROCESS;
    let slot = (std::process::id() % PROCESS_SLOTS) * IDS_PER_PROCESS + n;
    let shm = slot as i32 + 100;
    let port = 20000 + slot as u16;
    (shm, port)
}

/// A free TCP port on 127.0.0.1 for this test.
pub fn test_port() -> u16 {
    unique_ids().1
}
