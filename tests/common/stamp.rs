//! The crash torture's stamped unit: 4 KiB holding its unit number, a
//! generation and a CRC-32C of the rest, filled with a pattern of that unit
//! and generation, so a unit made of pieces of two writes is told from either.
//! Shared by the torture's checker (tests/integration/crash_torture/) and its writer
//! (examples/stamped_writer.rs).

use super::crc32c::crc32c;
use super::rng::Rng;

/// The bytes of one stamped unit: a 4 KiB block.
pub const UNIT: usize = 4096;

/// Unit `unit`'s contents for generation `gen`: unit, generation, pattern,
/// and a CRC-32C of all that in the last 4 bytes.
pub fn stamp(unit: u64, gen: u64) -> Vec<u8> {
    let mut b = Rng::new(unit.rotate_left(32) ^ gen).bytes(UNIT);
    b[0..8].copy_from_slice(&unit.to_le_bytes());
    b[8..16].copy_from_slice(&gen.to_le_bytes());
    let crc = crc32c(&b[..UNIT - 4]);
    b[UNIT - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The (unit, generation) a unit's contents claim, if its checksum holds.
pub fn claimed(data: &[u8]) -> Option<(u64, u64)> {
    let crc = u32::from_le_bytes(data[UNIT - 4..].try_into().ok()?);
    (crc == crc32c(&data[..UNIT - 4])).then(|| {
        (
            u64::from_le_bytes(data[0..8].try_into().unwrap()),
            u64::from_le_bytes(data[8..16].try_into().unwrap()),
        )
    })
}
