//! A seeded pseudo-random generator for the fuzzers (SplitMix64). A seed gives
//! the same sequence on every machine and with every Rust release, which is
//! what makes a failure printed as "seed S, session N" replayable; crates'
//! generators do not promise a stable stream across versions.

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit state, full period.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator that gives the same numbers for the same `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed of item `index` of a run seeded with `seed`, so each item
    /// (a connection, a request) can be replayed alone.
    pub fn derive(seed: u64, index: u64) -> u64 {
        Rng(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407)).next_u64()
    }

    /// The next number (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A value a parser is likely to mishandle: a boundary of `bits` bits,
    /// or a random one.
    pub fn interesting(&mut self, bits: u32) -> u64 {
        let max = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let edges = [
            0,
            1,
            2,
            7,
            8,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            max,
            max - 1,
            max / 2,
        ];
        if self.chance(60) {
            *self.pick(&edges) & max
        } else {
            self.next_u64() & max
        }
    }
}
