//! A RAM disk's side of a Rust bdev module's I/O.

/// A RAM disk's part of a bdev module's I/O: a read copies from `data` into
/// the I/O's buffers, a write the other way, from block `offset_blocks`.
pub fn ram_transfer(data: &mut [u8], io: &mut spdk_pmem::bdev::module::BdevIo) {
    use spdk_pmem::bdev::module::IoType;
    let mut at = io.offset_blocks() as usize * io.block_size() as usize;
    if io.io_type() == IoType::Read {
        for s in io.segments_mut() {
            s.copy_from_slice(&data[at..at + s.len()]);
            at += s.len();
        }
    } else {
        for s in io.segments() {
            data[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
    }
}
