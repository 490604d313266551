//! RBD and write-back cache namespaces on a real Ceph, from the kernel host.

use super::*;

/// An RBD namespace and a write-back-cache namespace in front of another
/// RBD image (a real one-node Ceph the test starts), from the kernel: fio
/// randrw QD 32 with crc32c verify, no error; then the cache is flushed and
/// what the host reads of the cached namespace equals Ceph's own copy
/// (`rbd export`).
#[cfg(feature = "rbd")]
#[test]
fn rbd_and_cache_namespaces_from_the_kernel() {
    let _turn = alone();
    if !vm::plain_suite() {
        return;
    }
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/plain", "--size", "64M"]);
    ceph.rbd(&["create", "rbd/cached", "--size", "64M"]);
    let dir = shm_dir();
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    let plain = ceph.bdev_rbd_create("rbd0", "plain");
    t.rpc_ok(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    let cached = ceph.bdev_rbd_create("rbd1", "cached");
    t.rpc_ok(&cached.iter().map(String::as_str).collect::<Vec<_>>());
    let pool = dir.path().join("cache.pool");
    t.jsonrpc_ok(
        "bdev_pmem_cache_create",
        Some(serde_json::json!({"name": "wb0", "base_bdev": "rbd1",
                                "pool": pool.to_str().unwrap(), "slots": 8192})),
    );
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", SERIAL]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "rbd0"]);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
    let script = format!(
        r#"
{GUEST_START}
nvme connect -t tcp -a 127.0.0.1 -s {port} -n {NQN}
wait_for "both namespaces" 20 test -b /dev/nvme0n2
for n in 1 2; do
  echo "== fio n$n"; fio_verify /dev/nvme0n$n 8M
done
echo "== flush"; step flush
echo "== read"
dd if=/dev/nvme0n2 bs=1M count=64 iflag=direct status=none | sha256sum | cut -d' ' -f1
nvme disconnect -n {NQN} >/dev/null
"#
    );
    let run = vm::run(&script, &[port], Duration::from_secs(600), |step| {
        assert_eq!(step, "flush");
        t.rpc_ok(&["--plugin", "rpc_pmem_cache", "bdev_pmem_cache_flush", "wb0"]);
        "flushed".into()
    });
    assert_eq!(
        run.status,
        0,
        "the guest's script failed:\n{}\n{}",
        run.output,
        t.log_text()
    );
    assert_eq!(
        run.section("fio n1").trim(),
        "0",
        "fio on the RBD namespace:\n{}",
        run.output
    );
    assert_eq!(
        run.section("fio n2").trim(),
        "0",
        "fio on the cache namespace:\n{}",
        run.output
    );
    let exported = dir.path().join("exported");
    ceph.rbd(&[
        "export",
        "--no-progress",
        "rbd/cached",
        exported.to_str().unwrap(),
    ]);
    let ceph_sum = {
        let out = crate::common::command("sha256sum")
            .arg(&exported)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        run.section("read").trim(),
        ceph_sum,
        "what the host reads of the cached namespace after the flush differs from rbd export"
    );
}
