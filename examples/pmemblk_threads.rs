//! How fast libpmemblk writes one pool from several threads: the measurement
//! behind the Rust pmem bdev's choice of inline I/O or worker threads
//! (docs/pmem-modules.md).
//!
//! usage: pmemblk_threads DIR [SECONDS] [THREADS...]
//! Creates a 64 MiB pool of 4 KiB blocks in DIR, then for each thread count
//! writes random blocks for SECONDS and prints writes per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spdk_pmem::pmem::Pool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: pmemblk_threads DIR [SECONDS] [THREADS...]")?;
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let mut counts: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if counts.is_empty() {
        counts = vec![1, 2, 4, 8, 16];
    }
    let path = std::path::Path::new(&dir).join(format!("pmemblk-threads.{}", std::process::id()));
    let pool = Arc::new(Pool::create_with_blocks(&path, 4096, 16384, 0o600)?);
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        for threads in counts {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
                    std::thread::spawn(move || -> spdk_pmem::Result<()> {
                        let block = vec![t as u8; 4096];
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
                        while !stop.load(Ordering::Relaxed) {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            pool.write(x % pool.block_count(), &block)?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            let start = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                h.join().map_err(|_| "a writer panicked")??;
            }
            let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
            println!("{threads:>3} threads: {rate:>10.0} writes/s");
        }
        Ok(())
    })();
    drop(pool);
    let _ = std::fs::remove_file(&path);
    result
}
