//! The write-back cache's log, on a libpmemblk pool.
//!
//! Block 0 is the superblock: what the cache fronts (its identity), the
//! data block size, the number of slots, a nonce of this log, and the
//! sequence number up to which every write is in the backing store
//! (`destaged`). Blocks 1..=slots are slots: one cached block each, a 64-byte
//! header (sequence number, LBA, nonce, CRC-32C of header and data) before
//! the data. libpmemblk writes each block atomically, so a slot holds either
//! its old write or its new one, whole.
//!
//! Write `seq` goes to slot `(seq - 1) % slots + 1`, and may be written only
//! once the write that slot held before is destaged and that is persisted
//! ([`Log::may_write`]): a slot whose old write a crash could still need is
//! never overwritten. Writes are acknowledged in sequence order (the
//! cache's job), and written one after another in sequence order, so a
//! crash leaves every acknowledged write in the unbroken run of slots after
//! `destaged`, and nothing after it: [`Log::open`] replays that run. A write
//! missing with later ones present, or a slot that cannot be read where the
//! run ends, can only be damage (a flipped bit, a media error): those
//! writes were acknowledged, so the log is refused, as it is, naming what
//! was found, unless the caller accepts losing them ([`Damage::Discard`]).

use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::pmem::Pool;

mod format;
use format::{decode_slot, encode_slot, Superblock};

/// Bytes of a slot's header, before its data.
pub const SLOT_HEADER: usize = 64;

/// The longest identity a log keeps.
pub const MAX_IDENTITY: usize = 400;

/// What [`Log::open`] does with a damaged log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Damage {
    /// Refuse it, leaving the pool as it is.
    #[default]
    Refuse,
    /// Replay the unbroken run before the damage and wipe the rest: the
    /// writes from the damaged one on are lost (said in the log).
    Discard,
}

/// A write the log holds that the backing store may not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the order of writes (from 1).
    pub seq: u64,
    /// The block of the cached device it writes.
    pub lba: u64,
}

/// A write-back log on an open pool. `Send + Sync`: slots are written and
/// read from any thread (the pool is thread safe); the superblock's
/// updates are serialised.
#[derive(Debug)]
pub struct Log {
    pool: Pool,
    data_block_size: usize,
    slots: u64,
    nonce: u64,
    identity: String,
    /// The superblock's `destaged`, as last persisted.
    destaged: Mutex<u64>,
}

/// Making and opening a log, and its recovery.
impl Log {
    /// Creates a pool at `path` holding a log of at least `slots` slots of
    /// `data_block_size` bytes for the backing store named `identity`.
    pub fn create(
        path: impl AsRef<Path>,
        data_block_size: usize,
        slots: u64,
        identity: &str,
        mode: u32,
    ) -> Result<Log> {
        check_identity(identity)?;
        if slots == 0 {
            return Err(Error::InvalidArgument(
                "a write-back log needs at least one slot".into(),
            ));
        }
        let data_block_size_u32 = u32::try_from(data_block_size)
            .ok()
            .filter(|s| s.is_power_of_two() && *s >= 512)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "data block size {data_block_size}: give a power of two of 512 or more"
                ))
            })?;
        let pool = Pool::create_with_blocks(path, data_block_size + SLOT_HEADER, slots + 1, mode)?;
        let sb = Superblock {
            data_block_size: data_block_size_u32,
            slots: pool.block_count() - 1,
            nonce: random_nonce(),
            destaged: 0,
            identity: identity.to_string(),
        };
        let mut block = vec![0u8; pool.block_size()];
        sb.encode(&mut block);
        pool.write(0, &block)?;
        Ok(Log {
            data_block_size,
            slots: sb.slots,
            nonce: sb.nonce,
            identity: sb.identity,
            destaged: Mutex::new(0),
            pool,
        })
    }

    /// Opens the log at `path`, which must be the one made for `identity`,
    /// and returns it with the writes to replay (in order): the unbroken run
    /// after the last destaged write. A damaged log is refused or, with
    /// [`Damage::Discard`], cut at the damage.
    pub fn open(
        path: impl AsRef<Path>,
        identity: &str,
        damage: Damage,
    ) -> Result<(Log, Vec<Entry>)> {
        let path = path.as_ref();
        let pool = Pool::open(path, None)?;
        let mut block = vec![0u8; pool.block_size()];
        pool.read(0, &mut block)?;
        let refuse = |why: String| {
            Error::InvalidArgument(format!(
                "pool {} cannot be this cache's log: {why}",
                path.display()
            ))
        };
        let sb = Superblock::decode(&block).map_err(refuse)?;
        if sb.identity != identity {
            return Err(refuse(format!(
                "it caches {:?}, not {identity:?}: give the pool made for this one, or a new pool",
                sb.identity
            )));
        }
        if sb.data_block_size as usize + SLOT_HEADER != pool.block_size()
            || sb.slots + 1 > pool.block_count()
        {
            return Err(refuse(
                "its superblock does not match the pool's geometry".into(),
            ));
        }
        let log = Log {
            data_block_size: sb.data_block_size as usize,
            slots: sb.slots,
            nonce: sb.nonce,
            identity: sb.identity,
            destaged: Mutex::new(sb.destaged),
            pool,
        };
        let replay = log.recover(&mut block, damage)?;
        Ok((log, replay))
    }

    /// Scans every slot; returns the run to replay, or refuses a damaged
    /// log (see the module's doc).
    fn recover(&self, block: &mut [u8], damage: Damage) -> Result<Vec<Entry>> {
        let destaged = self.persisted_destaged();
        let mut found = Vec::new();
        // Slots in the pool's error state (a media error): whatever they
        // held is gone; it matters only where the run ends.
        let mut unreadable = Vec::new();
        for slot in 1..=self.slots {
            if let Err(e) = self.pool.read(slot, block) {
                unreadable.push((slot, e));
                continue;
            }
            if let Some(e) = decode_slot(block, self.nonce) {
                if e.seq > destaged && self.slot_of(e.seq) == slot {
                    found.push(e);
                }
            }
        }
        found.sort_by_key(|e| e.seq);
        let run = found
            .iter()
            .enumerate()
            .take_while(|(i, e)| e.seq == destaged + 1 + *i as u64)
            .count();
        let missing = destaged + 1 + run as u64;
        let missing_slot = self.slot_of(missing);
        let cut_off = &found[run..];
        let unreadable_next = unreadable.iter().find(|(slot, _)| *slot == missing_slot);
        if cut_off.is_empty() && unreadable_next.is_none() {
            return Ok(found);
        }
        let what = match unreadable_next {
            Some((_, e)) => format!("write {missing} (slot {missing_slot}) is unreadable ({e})"),
            None => format!("write {missing} (slot {missing_slot}) is damaged (no valid entry)"),
        };
        let lost = match (cut_off.first(), cut_off.last()) {
            (Some(first), Some(last)) => format!(
                "{} acknowledged writes after it are in the log ({}..={})",
                cut_off.len(),
                first.seq,
                last.seq
            ),
            _ => "it may have been the newest acknowledged write".to_string(),
        };
        if damage == Damage::Refuse {
            return Err(Error::InvalidArgument(format!(
                "pool {}: {what}, and {lost}: the writes cannot reach the backing store in \
                 order. The pool is left as it is (copy it for inspection); to replay the {run} \
                 writes before the damage and give up the rest, create the cache with \
                 accept_damaged_log",
                self.pool.path().display()
            )));
        }
        crate::log::error(&format!(
            "pool {}: {what}, and {lost}; replaying the {run} writes before it and discarding \
             the rest, as asked (accept_damaged_log)",
            self.pool.path().display()
        ));
        for gone in cut_off {
            self.pool.set_zero(self.slot_of(gone.seq))?;
        }
        if unreadable_next.is_some() {
            self.pool.set_zero(missing_slot)?;
        }
        found.truncate(run);
        Ok(found)
    }
}

/// Slots: writing, reading and freeing them.
impl Log {
    /// The pool block that holds write `seq`.
    fn slot_of(&self, seq: u64) -> u64 {
        (seq - 1) % self.slots + 1
    }

    /// Bytes of data per slot (the cached device's block size).
    pub fn data_block_size(&self) -> usize {
        self.data_block_size
    }

    /// How many writes the log holds at most.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// What the log caches.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        self.pool.path()
    }

    /// The last write known to be in the backing store, as persisted.
    pub fn persisted_destaged(&self) -> u64 {
        *crate::sync::lock(&self.destaged)
    }

    /// Whether write `seq` may be written now: the write its slot held
    /// before is destaged, and that is persisted.
    pub fn may_write(&self, seq: u64) -> bool {
        seq > 0 && seq <= self.persisted_destaged() + self.slots
    }

    /// Writes `data` (one data block) as write `seq` to block `lba`,
    /// durably when this returns.
    pub fn write(&self, entry: Entry, data: &[u8]) -> Result<()> {
        if data.len() != self.data_block_size {
            return Err(Error::InvalidArgument(format!(
                "a log write carries {} bytes, not one block of {}",
                data.len(),
                self.data_block_size
            )));
        }
        if !self.may_write(entry.seq) {
            return Err(Error::InvalidArgument(format!(
                "write {} would overwrite a slot not yet destaged (destaged up to {})",
                entry.seq,
                self.persisted_destaged()
            )));
        }
        let mut block = vec![0u8; self.pool.block_size()];
        encode_slot(&mut block, self.nonce, entry, data);
        self.pool.write(self.slot_of(entry.seq), &block)
    }

    /// Reads write `seq` into `data`; returns its LBA, or `None` when its
    /// slot holds another write now (it was destaged and the slot reused).
    pub fn read(&self, seq: u64, data: &mut [u8]) -> Result<Option<u64>> {
        if seq == 0 || data.len() != self.data_block_size {
            return Err(Error::InvalidArgument(format!(
                "a log read of write {seq} into {} bytes (one block is {})",
                data.len(),
                self.data_block_size
            )));
        }
        let mut block = vec![0u8; self.pool.block_size()];
        self.pool.read(self.slot_of(seq), &mut block)?;
        match decode_slot(&block, self.nonce) {
            Some(e) if e.seq == seq => {
                data.copy_from_slice(&block[SLOT_HEADER..]);
                Ok(Some(e.lba))
            }
            _ => Ok(None),
        }
    }

    /// Persists that every write up to `seq` is in the backing store, which
    /// frees their slots. Never moves backwards.
    pub fn set_destaged(&self, seq: u64) -> Result<()> {
        let mut destaged = crate::sync::lock(&self.destaged);
        if seq <= *destaged {
            return Ok(());
        }
        let sb = Superblock {
            data_block_size: self.data_block_size as u32,
            slots: self.slots,
            nonce: self.nonce,
            destaged: seq,
            identity: self.identity.clone(),
        };
        let mut block = vec![0u8; self.pool.block_size()];
        sb.encode(&mut block);
        self.pool.write(0, &block)?;
        *destaged = seq;
        Ok(())
    }
}

fn check_identity(identity: &str) -> Result<()> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY {
        return Err(Error::InvalidArgument(format!(
            "a cache's identity must have 1 to {MAX_IDENTITY} bytes, not {}",
            identity.len()
        )));
    }
    Ok(())
}

/// A number that tells this log's slots from those of an earlier log in the
/// same file.
fn random_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom fills at most `bytes.len()` bytes of our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Without the kernel's randomness, time and pid differ per creation.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 4096;

    fn temp_pool(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("wb-log-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    fn block_of(seq: u64) -> Vec<u8> {
        vec![(seq % 251) as u8; BS]
    }

    fn write_seqs(log: &Log, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            log.write(Entry { seq, lba: seq * 7 }, &block_of(seq))
                .unwrap();
        }
    }

    #[test]
    fn a_new_log_replays_nothing_and_reopens_for_its_identity_only() {
        let (_d, path) = temp_pool("a.pool");
        let log = Log::create(&path, BS, 64, "rbd:fsid/rbd/img0", 0o600).unwrap();
        assert!(log.slots() >= 64);
        drop(log);
        let (log, replay) = Log::open(&path, "rbd:fsid/rbd/img0", Damage::Refuse).unwrap();
        assert!(replay.is_empty());
        assert_eq!(log.persisted_destaged(), 0);
        drop(log);
        let err = Log::open(&path, "rbd:fsid/rbd/img1", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("it caches \"rbd:fsid/rbd/img0\""), "{err}");
        assert!(err.contains("not \"rbd:fsid/rbd/img1\""), "{err}");
    }

    #[test]
    fn a_pool_that_is_no_log_is_refused_by_what_it_is() {
        let (_d, path) = temp_pool("plain.pool");
        drop(Pool::create_with_blocks(&path, BS + SLOT_HEADER, 16, 0o600).unwrap());
        let err = Log::open(&path, "x", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a write-back cache log"), "{err}");
    }

    #[test]
    fn writes_not_destaged_are_replayed_in_order_and_read_back() {
        let (_d, path) = temp_pool("b.pool");
        let log = Log::create(&path, BS, 64, "id", 0o600).unwrap();
        write_seqs(&log, 1..=10);
        log.set_destaged(4).unwrap();
        drop(log);
        let (log, replay) = Log::open(&path, "id", Damage::Refuse).unwrap();
        let seqs: Vec<u64> = replay.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
        assert!(replay.iter().all(|e| e.lba == e.seq * 7));
        let mut data = vec![0u8; BS];
        assert_eq!(log.read(7, &mut data).unwrap(), Some(49));
        assert_eq!(data, block_of(7));
    }

    #[test]
    fn a_gap_is_refused_and_what_follows_it_never_comes_back_once_discarded() {
        let (_d, path) = temp_pool("c.pool");
        let log = Log::create(&path, BS, 64, "id", 0o600).unwrap();
        // Slots are written in sequence order, so 4 missing with 5 and 6
        // present is damage (or a pool write that failed with later ones
        // going on, which the cache no longer does).
        write_seqs(&log, [1, 2, 3, 5, 6]);
        drop(log);
        let err = Log::open(&path, "id", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("write 4 (slot 4)") && err.contains("(5..=6)"),
            "{err}"
        );
        let (log, replay) = Log::open(&path, "id", Damage::Discard).unwrap();
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        // Write 4 anew, crash again: the old 5 and 6 must not come back.
        write_seqs(&log, [4]);
        drop(log);
        let (_log, replay) = Log::open(&path, "id", Damage::Refuse).unwrap();
        assert_eq!(
            replay.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn a_slot_is_reused_only_after_its_write_is_destaged() {
        let (_d, path) = temp_pool("d.pool");
        let log = Log::create(&path, BS, 16, "id", 0o600).unwrap();
        let n = log.slots();
        write_seqs(&log, 1..=n);
        assert!(!log.may_write(n + 1));
        let err = log
            .write(Entry { seq: n + 1, lba: 0 }, &block_of(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not yet destaged"), "{err}");
        log.set_destaged(1).unwrap();
        write_seqs(&log, [n + 1]);
        // Write 1's slot holds n + 1 now.
        let mut data = vec![0u8; BS];
        assert_eq!(log.read(1, &mut data).unwrap(), None);
        drop(log);
        let (_log, replay) = Log::open(&path, "id", Damage::Refuse).unwrap();
        assert_eq!(replay.first().map(|e| e.seq), Some(2));
        assert_eq!(replay.last().map(|e| e.seq), Some(n + 1));
        assert_eq!(replay.len() as u64, n);
    }

    /// A damaged slot with acknowledged writes after it: refused, naming
    /// it, the pool untouched; with Discard, the run before it replays and
    /// the rest is wiped (so a later open finds a clean log).
    #[test]
    fn a_damaged_slot_with_writes_after_it_is_refused_unless_discarded() {
        let (_d, path) = temp_pool("e.pool");
        let log = Log::create(&path, BS, 16, "id", 0o600).unwrap();
        write_seqs(&log, 1..=5);
        let mut block = vec![0u8; BS + SLOT_HEADER];
        log.pool.read(2, &mut block).unwrap();
        block[SLOT_HEADER + 9] ^= 1;
        log.pool.write(2, &block).unwrap();
        drop(log);
        let err = Log::open(&path, "id", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("write 2 (slot 2) is damaged")
                && err.contains("3 acknowledged writes after it are in the log (3..=5)"),
            "{err}"
        );
        let err_again = Log::open(&path, "id", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert_eq!(err, err_again, "the refusal leaves the pool as it was");
        let (log, replay) = Log::open(&path, "id", Damage::Discard).unwrap();
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
        drop(log);
        let (_log, replay) = Log::open(&path, "id", Damage::Refuse).unwrap();
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    }

    /// A slot in pmemblk's error state: harmless where it holds nothing the
    /// replay needs, refused where the run ends (it may have held the
    /// newest acknowledged write).
    #[test]
    fn an_unreadable_slot_is_refused_only_where_the_run_ends() {
        let (_d, path) = temp_pool("g.pool");
        let log = Log::create(&path, BS, 16, "id", 0o600).unwrap();
        write_seqs(&log, 1..=4);
        log.pool.set_error(9).unwrap();
        drop(log);
        let (log, replay) = Log::open(&path, "id", Damage::Refuse).unwrap();
        assert_eq!(replay.len(), 4, "an error slot past the run is not a gap");
        log.pool.set_error(5).unwrap();
        drop(log);
        let err = Log::open(&path, "id", Damage::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("write 5 (slot 5) is unreadable")
                && err.contains("may have been the newest acknowledged write"),
            "{err}"
        );
        let (_log, replay) = Log::open(&path, "id", Damage::Discard).unwrap();
        assert_eq!(replay.len(), 4);
    }

    #[test]
    fn bad_geometry_and_identity_are_refused_by_name() {
        let (_d, path) = temp_pool("f.pool");
        let err = Log::create(&path, 1000, 16, "id", 0o600)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data block size 1000"), "{err}");
        let err = Log::create(&path, BS, 0, "id", 0o600)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one slot"), "{err}");
        let long = "x".repeat(MAX_IDENTITY + 1);
        let err = Log::create(&path, BS, 16, &long, 0o600)
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity"), "{err}");
        assert!(!path.exists(), "nothing is created for refused arguments");
    }
}
