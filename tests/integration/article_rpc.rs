//! scripts/article-rpc.sh, the article's sequence with its 2018 method names
//! where SPDK still accepts them, configures our target; identify sees the
//! namespace. A second run on the same pool reuses it (data kept).

use crate::common;
use common::*;

fn run_script(t: &Target, pool: &std::path::Path, nqn: &str, port: u16) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/article-rpc.sh");
    let out = crate::common::command("bash")
        .arg(script)
        .env("SPDK_RPC_PY", spdk_tool("scripts/rpc.py"))
        .args([
            "-s",
            t.sock.to_str().unwrap(),
            "--pool",
            pool.to_str().unwrap(),
        ])
        .args(["--nqn", nqn, "--port", &port.to_string()])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "article-rpc.sh failed:\n{text}\n{}",
        t.log_text()
    );
    text
}

#[test]
fn the_articles_rpc_sequence_configures_our_target() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0");
    let nqn = "nqn.2016-06.io.spdk:cnode1";
    let port = test_port();

    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    let first = run_script(&t, &pool, nqn, port);
    assert!(
        first.contains("create_pmem_pool") && first.contains("construct_pmem_bdev"),
        "{first}"
    );
    let id = identify(nqn, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert_eq!(identify_block_size(&id), 4096);
    assert!(t.stop().success());

    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    let second = run_script(&t, &pool, nqn, port);
    assert!(
        !second.contains("create_pmem_pool"),
        "the pool was recreated:\n{second}"
    );
    assert!(second.contains("pmem_pool_info"), "{second}");
    assert!(identify(nqn, port).contains("Namespace ID:1"));
    assert!(t.stop().success());
}
