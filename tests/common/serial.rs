//! The one way tests keep out of each other's way.
//!
//! The integration binary runs every test that starts a target process, two
//! at a time (one per core). A test that measures (CPU, memory, timing),
//! loads both CPUs, or kills processes in a loop takes [`alone`] and runs
//! with no other test; every other test takes [`beside_others`] and may
//! overlap any test but such a one. Each test takes one of them as its first
//! statement; the integration binary's `every_test_takes_a_turn` checks it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static TURNS: RwLock<()> = RwLock::new(());

/// No other test runs while this is held (std's lock lets a waiting writer
/// in before new readers, so an `alone` test is not starved).
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    TURNS.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by several tests at once, never beside [`alone`].
pub fn beside_others() -> RwLockReadGuard<'static, ()> {
    TURNS.read().unwrap_or_else(|e| e.into_inner())
}
