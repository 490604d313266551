//! The log's layout on the pool: block 0 the superblock (magic, version,
//! geometry, nonce, identity, the destaged point), every other block a
//! slot (a header with the write's sequence number, block and checksum,
//! then its data).

use super::{Entry, MAX_IDENTITY, SLOT_HEADER};

const SUPER_MAGIC: &[u8; 8] = b"SPDKWBL1";
const SLOT_MAGIC: &[u8; 4] = b"WBSL";
const VERSION: u32 = 1;

/// The superblock's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Superblock {
    pub data_block_size: u32,
    pub slots: u64,
    pub nonce: u64,
    pub destaged: u64,
    pub identity: String,
}

impl Superblock {
    pub fn encode(&self, block: &mut [u8]) {
        block.fill(0);
        block[0..8].copy_from_slice(SUPER_MAGIC);
        block[8..12].copy_from_slice(&VERSION.to_le_bytes());
        block[12..16].copy_from_slice(&self.data_block_size.to_le_bytes());
        block[16..24].copy_from_slice(&self.slots.to_le_bytes());
        block[24..32].copy_from_slice(&self.nonce.to_le_bytes());
        block[32..40].copy_from_slice(&self.destaged.to_le_bytes());
        let id = self.identity.as_bytes();
        block[40..42].copy_from_slice(&(id.len() as u16).to_le_bytes());
        block[42..42 + id.len()].copy_from_slice(id);
        let end = 42 + id.len();
        let crc = crc32c::crc32c(&block[..end]);
        block[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The superblock in `block`, or why it is not one.
    pub fn decode(block: &[u8]) -> std::result::Result<Superblock, String> {
        if block.len() < 42 || &block[0..8] != SUPER_MAGIC {
            return Err("it is not a write-back cache log (no log superblock in block 0)".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(block[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!(
                "its log is version {version}; this build reads version {VERSION}"
            ));
        }
        let len = u16::from_le_bytes([block[40], block[41]]) as usize;
        let end = 42 + len;
        if len > MAX_IDENTITY || end + 4 > block.len() {
            return Err("its log superblock is damaged (identity length)".into());
        }
        if crc32c::crc32c(&block[..end]) != u32_at(end) {
            return Err("its log superblock is damaged (checksum)".into());
        }
        let identity = std::str::from_utf8(&block[42..end])
            .map_err(|_| "its log superblock is damaged (identity)".to_string())?;
        Ok(Superblock {
            data_block_size: u32_at(12),
            slots: u64_at(16),
            nonce: u64_at(24),
            destaged: u64_at(32),
            identity: identity.to_string(),
        })
    }
}

/// One slot's header and data, as encoded in a pool block.
pub(super) fn encode_slot(block: &mut [u8], nonce: u64, entry: Entry, data: &[u8]) {
    block[..SLOT_HEADER].fill(0);
    block[0..4].copy_from_slice(SLOT_MAGIC);
    block[8..16].copy_from_slice(&entry.seq.to_le_bytes());
    block[16..24].copy_from_slice(&entry.lba.to_le_bytes());
    block[24..32].copy_from_slice(&nonce.to_le_bytes());
    block[SLOT_HEADER..].copy_from_slice(data);
    let crc = crc32c::crc32c(&block[8..]);
    block[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The entry a pool block holds, if it is a whole slot of this log.
pub(super) fn decode_slot(block: &[u8], nonce: u64) -> Option<Entry> {
    let u64_at = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().unwrap());
    let crc = u32::from_le_bytes(block[4..8].try_into().unwrap());
    (&block[0..4] == SLOT_MAGIC && u64_at(24) == nonce && crc32c::crc32c(&block[8..]) == crc).then(
        || Entry {
            seq: u64_at(8),
            lba: u64_at(16),
        },
    )
}
