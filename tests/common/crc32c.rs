//! CRC-32C (Castagnoli): NVMe/TCP's digest, and the checksum of the crash
//! torture's stamped units.

/// Bit by bit: the fuzzer's PDUs and the stamped units are small, and a
/// table would be the only thing here longer than this.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
