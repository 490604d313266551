//! Data written through NVMe-oF lands in the libpmemblk pool and survives the
//! target: written by SPDK's spdk_dd over TCP, read back intact by spdk_dd
//! after the target was stopped and started again on the same pool, and seen
//! in the pool file itself through our safe pool API while no target holds it.

use crate::common;
use common::*;
use spdk_pmem::pmem::Pool;

const NQN: &str = "nqn.2016-06.io.spdk:persist";
const BLOCK: usize = 4096;
const COUNT: usize = 64;
const SEEK: usize = 100;

#[test]
fn data_written_over_nvmf_is_intact_after_a_target_restart() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0.pool");
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    // Pseudo-random, so a shifted or repeated block cannot pass for the right one.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    let data: Vec<u8> = (0..BLOCK * COUNT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&input, &data).unwrap();

    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let seek = SEEK.to_string();
    let count = COUNT.to_string();

    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    configure_article(&t, &pool, NQN, port);
    spdk_dd_ok(
        &config,
        &[
            "--if",
            input.to_str().unwrap(),
            "--ob",
            "Nvme0n1",
            "--seek",
            &seek,
        ],
    );
    assert!(t.stop().success(), "{}", t.log_text());

    // The pool file holds the blocks, at the offsets written.
    {
        let p = Pool::open(&pool, Some(BLOCK)).expect("the pool opens once the target let go");
        let mut block = vec![0u8; BLOCK];
        for i in 0..COUNT {
            p.read((SEEK + i) as u64, &mut block).unwrap();
            assert!(
                block == data[i * BLOCK..(i + 1) * BLOCK],
                "pool block {} differs",
                SEEK + i
            );
        }
        p.read((SEEK - 1) as u64, &mut block).unwrap();
        assert!(
            block.iter().all(|b| *b == 0),
            "the block before the write was touched"
        );
    }

    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    configure_article(&t, &pool, NQN, port);
    spdk_dd_ok(
        &config,
        &[
            "--ib",
            "Nvme0n1",
            "--skip",
            &seek,
            "--count",
            &count,
            "--of",
            output.to_str().unwrap(),
        ],
    );
    assert!(t.stop().success(), "{}", t.log_text());
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(
        back == data,
        "data read back over NVMe-oF differs from what was written"
    );
}
