//! The order of the cache's writes: which sequence numbers a host write
//! gets, when it may be acknowledged, what a read finds in the cache, and
//! what to destage next.
//!
//! Host writes are acknowledged in the order of their sequence numbers: a
//! write whose blocks are durable waits for every write before it. That is
//! what lets the log's recovery stop at the first gap (nothing after a gap
//! was acknowledged), and what makes destaging in sequence order keep the
//! promise "a write reaches the backing store only after every write
//! acknowledged before it". Concurrent host writes carry no order of their
//! own (NVMe gives none), so holding back an early finisher changes only
//! its latency.
//!
//! A write that never becomes durable (the pool failed it) holds every
//! later acknowledgement back: the cache stops taking writes then, and the
//! log's recovery ends at that gap.
//!
//! Pure bookkeeping, single-threaded: the cache keeps it behind a lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::RangeInclusive;

use super::log::Entry;

/// A host write's blocks, as sequence numbers: one per block, consecutive.
pub type Seqs = RangeInclusive<u64>;

/// An acknowledged write to destage: its blocks' sequence numbers, and the
/// LBA of its first block (its blocks are consecutive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// One per block.
    pub seqs: Seqs,
    /// Of the first block.
    pub lba: u64,
}

impl Write {
    /// Its blocks.
    pub fn blocks(&self) -> u64 {
        self.seqs.end() - self.seqs.start() + 1
    }
}

/// The cache's order of writes.
#[derive(Debug)]
pub struct Order {
    slots: u64,
    /// The next sequence number to hand out.
    next: u64,
    /// Every write up to here is durable and acknowledged.
    acked: u64,
    /// Writes durable but waiting for an earlier one, by first seq: (last
    /// seq, LBA of the first block).
    waiting: BTreeMap<u64, (u64, u64)>,
    /// The newest acknowledged write of each cached block.
    newest: HashMap<u64, u64>,
    /// Acknowledged writes the backing store does not have, in order: each
    /// host write is destaged whole, as one write of the backing bdev, so
    /// a base that writes it atomically (RBD within one object) never holds
    /// part of it. A replayed log knows blocks, not host writes: each of
    /// its blocks is a write of its own.
    undestaged: VecDeque<Write>,
    /// The last block handed to the destager.
    destage_started: u64,
    /// The last write the backing store has.
    destaged: u64,
}

/// What [`Order::durable`] releases: host writes that may be acknowledged now.
#[derive(Debug, PartialEq, Eq)]
pub struct Acks(pub Vec<Seqs>);

impl Order {
    /// The order of a log with `slots` slots, everything up to `destaged`
    /// in the backing store, and `replayed` (the log's recovery, in order)
    /// durable and acknowledged.
    pub fn new(slots: u64, destaged: u64, replayed: &[Entry]) -> Order {
        let mut order = Order {
            slots,
            next: destaged + 1,
            acked: destaged,
            waiting: BTreeMap::new(),
            newest: HashMap::new(),
            undestaged: VecDeque::new(),
            destage_started: destaged,
            destaged,
        };
        for e in replayed {
            debug_assert_eq!(e.seq, order.next, "replay is gap-free and in order");
            order.newest.insert(e.lba, e.seq);
            order.undestaged.push_back(Write {
                seqs: e.seq..=e.seq,
                lba: e.lba,
            });
            order.next = e.seq + 1;
            order.acked = e.seq;
        }
        order
    }

    /// Sequence numbers for a write of `blocks` blocks, or `None` while the
    /// log has no room (the write waits for destaging: back-pressure).
    /// `persisted` is the log's persisted destage point: a slot is reused
    /// only once the write it held is persisted as destaged.
    pub fn assign(&mut self, blocks: u64, persisted: u64) -> Option<Seqs> {
        if blocks == 0 || blocks > self.slots {
            return None;
        }
        let last = self.next + blocks - 1;
        if last > persisted + self.slots {
            return None;
        }
        let seqs = self.next..=last;
        self.next = last + 1;
        Some(seqs)
    }

    /// Whether a write of `blocks` blocks could ever fit.
    pub fn fits(&self, blocks: u64) -> bool {
        blocks > 0 && blocks <= self.slots
    }

    /// Records that write `seqs` (its first block at `lba`) is durable in
    /// the log; returns the writes that may be acknowledged now, in order.
    pub fn durable(&mut self, seqs: Seqs, lba: u64) -> Acks {
        self.waiting.insert(*seqs.start(), (*seqs.end(), lba));
        let mut acks = Vec::new();
        while let Some((last, lba)) = self.waiting.remove(&(self.acked + 1)) {
            let first = self.acked + 1;
            for (i, seq) in (first..=last).enumerate() {
                self.newest.insert(lba + i as u64, seq);
            }
            self.acked = last;
            self.undestaged.push_back(Write {
                seqs: first..=last,
                lba,
            });
            acks.push(first..=last);
        }
        Acks(acks)
    }

    /// The newest acknowledged write of block `lba` still in the cache.
    pub fn cached(&self, lba: u64) -> Option<u64> {
        self.newest.get(&lba).copied()
    }

    /// The next write to destage, if one is acknowledged and not yet
    /// handed out: strictly one after another, in sequence order.
    pub fn next_destage(&mut self) -> Option<Write> {
        if self.destage_started != self.destaged {
            return None;
        }
        let next = self.undestaged.front()?.clone();
        self.destage_started = *next.seqs.end();
        Some(next)
    }

    /// The write after the one being destaged (the out-of-order control
    /// destages it first).
    #[cfg(feature = "test-hooks")]
    pub fn write_after_next(&self) -> Option<Write> {
        self.undestaged.get(1).cloned()
    }

    /// Records that `write`, the oldest one not destaged, is in the
    /// backing store.
    pub fn destaged(&mut self, write: &Write) {
        debug_assert_eq!(
            *write.seqs.start(),
            self.destaged + 1,
            "destaging is in order"
        );
        debug_assert_eq!(self.undestaged.front(), Some(write));
        self.undestaged.pop_front();
        self.destaged = *write.seqs.end();
        self.destage_started = self.destage_started.max(self.destaged);
        for (i, seq) in write.seqs.clone().enumerate() {
            let lba = write.lba + i as u64;
            if self.newest.get(&lba) == Some(&seq) {
                self.newest.remove(&lba);
            }
        }
    }

    /// Records that destaging `write` failed: it is handed out again.
    pub fn destage_failed(&mut self, write: &Write) {
        if self.destage_started == *write.seqs.end() {
            self.destage_started = self.destaged;
        }
    }

    /// Acknowledged writes the backing store does not have yet.
    pub fn dirty(&self) -> u64 {
        self.acked - self.destaged
    }

    /// The last write the backing store has.
    pub fn destaged_up_to(&self) -> u64 {
        self.destaged
    }

    /// The last acknowledged write (a flush waits until it is destaged).
    pub fn acked_up_to(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_finishes_early_waits_for_the_ones_before_it() {
        let mut o = Order::new(16, 0, &[]);
        let a = o.assign(2, 0).unwrap();
        let b = o.assign(1, 0).unwrap();
        let c = o.assign(3, 0).unwrap();
        assert_eq!((a.clone(), b.clone(), c.clone()), (1..=2, 3..=3, 4..=6));
        assert_eq!(o.durable(c.clone(), 100), Acks(vec![]));
        assert_eq!(o.durable(b.clone(), 50), Acks(vec![]));
        assert_eq!(o.cached(50), None, "not acknowledged yet");
        assert_eq!(o.durable(a.clone(), 10), Acks(vec![a, b, c]));
        assert_eq!(o.cached(11), Some(2));
        assert_eq!(o.cached(50), Some(3));
        assert_eq!(o.cached(102), Some(6));
        assert_eq!(o.acked_up_to(), 6);
    }

    #[test]
    fn destaging_goes_one_write_at_a_time_in_order() {
        let mut o = Order::new(16, 0, &[]);
        for lba in [5, 6, 5] {
            let s = o.assign(1, 0).unwrap();
            o.durable(s, lba);
        }
        let w = |seq: u64, lba: u64| Write {
            seqs: seq..=seq,
            lba,
        };
        assert_eq!(o.cached(5), Some(3));
        assert_eq!(o.next_destage(), Some(w(1, 5)));
        assert_eq!(o.next_destage(), None, "one at a time");
        o.destaged(&w(1, 5));
        assert_eq!(
            o.cached(5),
            Some(3),
            "a newer write of block 5 stays cached"
        );
        assert_eq!(o.next_destage(), Some(w(2, 6)));
        o.destage_failed(&w(2, 6));
        assert_eq!(
            o.next_destage(),
            Some(w(2, 6)),
            "a failed destage is retried first"
        );
        o.destaged(&w(2, 6));
        assert_eq!(o.cached(6), None);
        assert_eq!(o.next_destage(), Some(w(3, 5)));
        o.destaged(&w(3, 5));
        assert_eq!(o.cached(5), None);
        assert_eq!((o.dirty(), o.next_destage()), (0, None));
    }

    #[test]
    fn a_host_write_of_several_blocks_is_destaged_whole() {
        let mut o = Order::new(16, 0, &[]);
        let a = o.assign(3, 0).unwrap();
        let b = o.assign(2, 0).unwrap();
        o.durable(b, 40);
        o.durable(a, 10);
        let first = o.next_destage().unwrap();
        assert_eq!(
            (first.clone(), first.blocks()),
            (
                Write {
                    seqs: 1..=3,
                    lba: 10
                },
                3
            )
        );
        assert_eq!(o.next_destage(), None, "the whole write is under way");
        o.destaged(&first);
        assert_eq!((o.cached(12), o.cached(41)), (None, Some(5)));
        assert_eq!(
            o.next_destage(),
            Some(Write {
                seqs: 4..=5,
                lba: 40
            })
        );
    }

    #[test]
    fn a_full_log_holds_writes_back_until_slots_are_persisted_free() {
        let mut o = Order::new(4, 0, &[]);
        let s = o.assign(3, 0).unwrap();
        assert_eq!(o.assign(2, 0), None, "5 > 0 + 4 slots");
        let t = o.assign(1, 0).unwrap();
        o.durable(s, 0);
        o.durable(t, 3);
        let first = o.next_destage().unwrap();
        assert_eq!(first.seqs, 1..=3);
        o.destaged(&first);
        assert_eq!(o.assign(1, 0), None, "destaged, but not persisted yet");
        assert_eq!(o.assign(1, 3), Some(5..=5));
        assert!(!o.fits(5) && o.fits(4));
    }

    #[test]
    fn a_recovered_log_continues_after_its_replay() {
        let replayed: Vec<Entry> = (8..=10).map(|seq| Entry { seq, lba: seq * 2 }).collect();
        let mut o = Order::new(16, 7, &replayed);
        assert_eq!((o.acked_up_to(), o.dirty()), (10, 3));
        assert_eq!(o.cached(18), Some(9));
        assert_eq!(o.assign(1, 7), Some(11..=11));
        assert_eq!(
            o.next_destage(),
            Some(Write {
                seqs: 8..=8,
                lba: 16
            })
        );
    }
}
