//! Creates a libpmemblk pool and writes every block (4 threads), so that
//! benchmarks read blocks that hold data (scripts/bench.sh): an unwritten
//! BTT block reads as zeros without touching the media.
//!
//! usage: pool_fill POOL NUM_BLOCKS [BLOCK_SIZE]

use std::sync::Arc;

use spdk_pmem::pmem::Pool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(blocks)) = (args.first(), args.get(1)) else {
        return Err("usage: pool_fill POOL NUM_BLOCKS [BLOCK_SIZE]".into());
    };
    let block_size: usize = args.get(2).map_or(Ok(4096), |s| s.parse())?;
    let pool = Arc::new(Pool::create_with_blocks(
        path,
        block_size,
        blocks.parse()?,
        0o600,
    )?);
    let threads: u64 = 4;
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || -> spdk_pmem::Result<()> {
                let mut block = vec![0u8; pool.block_size()];
                for lba in (t..pool.block_count()).step_by(threads as usize) {
                    block.fill((lba % 251) as u8 + 1);
                    pool.write(lba, &block)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().map_err(|_| "a writer panicked")??;
    }
    println!(
        "{path}: {} blocks of {} bytes written",
        pool.block_count(),
        pool.block_size()
    );
    Ok(())
}
