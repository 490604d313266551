//! The cache in front of a pmem base bdev: writes read back and destage,
//! survive the target's death, and come back with save_config; pools made
//! for another base are refused; a large pool opens beside other calls.

use super::*;

#[test]
fn writes_read_back_and_reach_the_backing_bdev() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 2048, port);
    let info = cache_info(&t);
    assert_eq!(info["base_bdev"], "base0", "{info}");
    assert!(info["slots"].as_u64().unwrap() >= 2048, "{info}");
    for size in [4096, 65536] {
        let (status, out) = bdevperf_verify(dir.path(), NQN, port, size);
        check_bdevperf(status, &out);
    }
    let data = pattern(64, 0x5eed);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    dd_to_namespace(&config, &input, 100);
    let back = dir.path().join("back");
    dd_from_namespace(&config, &back, 100, 64);
    assert!(std::fs::read(&back).unwrap() == data, "read back differs");
    wait_clean(&t);
    let info = cache_info(&t);
    assert!(info["destaged_writes"].as_u64().unwrap() >= 64, "{info}");
    assert_eq!(info["base_reachable"], true, "{info}");
    assert!(t.stop().success(), "{}", t.log_text());
    assert!(
        pool_blocks(&base, 100, 64) == data,
        "the backing bdev lacks the writes"
    );
}

#[test]
fn writes_not_yet_destaged_when_the_target_dies_are_replayed() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(256, 0xdead);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    {
        let mut t = Target::start(&our_nvmf_tgt(), &[]);
        serve_cache(&t, &base, &cache, 1024, port);
        dd_to_namespace(&config, &input, 8);
        let child = t.child.as_mut().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        t.child = None;
    }
    // Some writes may have been destaged before the kill; all are in the
    // pool or the backing bdev, and the restarted cache serves them all.
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 1024, port);
    assert!(
        read_back(dir.path(), &config, 8, 256) == data,
        "read back after the kill differs"
    );
    wait_clean(&t);
    assert!(t.stop().success(), "{}", t.log_text());
    assert!(
        pool_blocks(&base, 8, 256) == data,
        "the backing bdev lacks the writes"
    );
}

#[test]
fn a_pool_made_for_another_backing_bdev_is_refused() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let other = dir.path().join("other.pool");
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, test_port());
    t.rpc_ok(&[
        "bdev_pmem_create_pool",
        other.to_str().unwrap(),
        "64",
        "4096",
    ]);
    t.rpc_ok(&["bdev_pmem_create", "-n", "other0", other.to_str().unwrap()]);
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb1", "base_bdev": "other0", "pool": cache.to_str().unwrap()}),
    );
    assert!(err.contains("it caches \"bdev base0"), "{err}");
    assert!(err.contains("not \"bdev other0"), "{err}");
    let bdevs = t.rpc_json(&["bdev_get_bdevs"]);
    assert!(
        bdevs.as_array().unwrap().iter().all(|b| b["name"] != "wb1"),
        "nothing half-created: {bdevs}"
    );
}

/// Review F15: creating a large pool lays out every block, and opening one
/// scans every slot; on the application thread's reactor either stalled
/// every RPC and namespace for as long. A 1 GiB pool (262,144 slots) is
/// created (about 230 ms) while another client calls the target: its calls
/// are answered while the create is under way (before: none, the create
/// held the reactor). It is opened again the same way (printed only).
#[test]
fn a_large_pool_is_made_and_opened_while_the_target_keeps_answering() {
    let _turn = beside_others();
    let dir = shm_dir();
    let base = dir.path().join("base.pool");
    let cache = dir.path().join("large.pool");
    let t = Target::start(&our_nvmf_tgt(), &[]);
    pmem_base(&t, &base, "base0");
    let create = json!({"name": "wb0", "base_bdev": "base0",
                        "pool": cache.to_str().unwrap(), "slots": 262_144});
    let (t, create) = (&t, &create);
    let pid = t.child.as_ref().unwrap().id();
    let cache_path = cache.as_path();
    // Whether process `pid` has `path` open.
    fn has_open(pid: u32, path: &Path) -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .any(|target| target == path)
            })
            .unwrap_or(false)
    }
    for what in ["created", "opened"] {
        let (answered, slowest, took) = std::thread::scope(|s| {
            let started = Instant::now();
            let creating = s.spawn(move || {
                let r = t.jsonrpc("bdev_pmem_cache_create", Some(create.clone()));
                (r, started.elapsed())
            });
            // Once the target has the pool open, the create is under way
            // on the target: what is answered from then on was answered
            // beside it.
            while !creating.is_finished() && !has_open(pid, cache_path) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (mut answered, mut slowest) = (0u32, Duration::ZERO);
            while !creating.is_finished() {
                let asked = Instant::now();
                let version = t.jsonrpc("spdk_get_version", None);
                assert!(version.get("result").is_some(), "{version}");
                if !creating.is_finished() {
                    answered += 1;
                    slowest = slowest.max(asked.elapsed());
                }
            }
            let (response, took) = creating.join().unwrap();
            assert!(response.get("error").is_none(), "{response}");
            (answered, slowest, took)
        });
        eprintln!(
            "1 GiB pool {what} in {took:?}; meanwhile {answered} calls answered, the slowest in \
             {slowest:?}"
        );
        // Opening this pool scans slots that were never written, which
        // takes about 30 ms: too short to count on a call in between.
        assert!(
            what == "opened" || answered > 0,
            "no call was answered while the pool was {what} ({took:?})"
        );
        t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    }
}

/// `save_config` given back with `--json` brings the cache back on its
/// pool, in front of its backing bdev, with what it held.
#[test]
fn save_config_brings_the_cache_back_with_its_data() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(32, 0x5a7e);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    let saved = dir.path().join("saved.json");
    {
        let mut t = Target::start(&our_nvmf_tgt(), &[]);
        serve_cache(&t, &base, &cache, 256, port);
        dd_to_namespace(&config, &input, 3);
        std::fs::write(&saved, t.rpc_ok(&["save_config"])).unwrap();
        assert!(t.stop().success(), "{}", t.log_text());
    }
    let t = Target::start(&our_nvmf_tgt(), &["--json", saved.to_str().unwrap()]);
    let info = cache_info(&t);
    assert_eq!(info["base_bdev"], "base0", "{info}");
    assert!(
        read_back(dir.path(), &config, 3, 32) == data,
        "the restored cache reads differently"
    );
}

/// Review F3: the cache claims its base, as SPDK's virtual bdevs do, so
/// nothing writes the base behind its back: exporting the base as a
/// namespace and a second cache on it are refused while the cache lives,
/// `bdev_get_bdevs` shows the base claimed, and deleting the cache frees
/// it. Before the fix both succeeded and the base showed `claimed: false`.
#[test]
fn the_cache_claims_its_base() {
    let _turn = beside_others();
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, test_port());
    let claimed = |t: &Target| t.rpc_json(&["bdev_get_bdevs", "-b", "base0"])[0]["claimed"].clone();
    assert_eq!(claimed(&t), true);
    let out = t.rpc(&["nvmf_subsystem_add_ns", NQN, "base0"]);
    assert!(
        !out.status.success(),
        "the cache's base became a namespace: {}",
        output_text(&out)
    );
    let other = dir.path().join("other.pool");
    let err = t.jsonrpc_err(
        "bdev_pmem_cache_create",
        json!({"name": "wb1", "base_bdev": "base0", "pool": other.to_str().unwrap(), "slots": 64}),
    );
    assert!(
        err.contains("\"base0\"") && err.contains("claimed"),
        "{err}"
    );
    assert!(!other.exists(), "a refused cache left its pool behind");
    t.rpc_ok(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    t.jsonrpc_ok("bdev_pmem_cache_delete", Some(json!({"name": "wb0"})));
    assert_eq!(claimed(&t), false);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "base0"]);
}

/// Review F7: a delete and a create of the same cache name sent together
/// (pipelined on one connection, as automation does): the new cache must
/// serve I/O. Before the fix the old bdev's destruct, which runs after the
/// name is already free, removed the new cache by name, and every I/O to
/// the new bdev failed.
#[test]
fn a_cache_deleted_and_made_again_under_its_name_at_once_serves_io() {
    let _turn = beside_others();
    use std::io::Write;
    let dir = shm_dir();
    let (base, cache) = (dir.path().join("base.pool"), dir.path().join("cache.pool"));
    let port = test_port();
    let t = Target::start(&our_nvmf_tgt(), &[]);
    serve_cache(&t, &base, &cache, 64, port);
    t.rpc_ok(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    // The new cache on another base and pool: the old one holds its own
    // until it is gone.
    let base1 = dir.path().join("base1.pool");
    pmem_base(&t, &base1, "base1");
    let second = dir.path().join("second.pool");
    let mut stream = std::os::unix::net::UnixStream::connect(&t.sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_pmem_cache_delete",
               "params": {"name": "wb0"}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "bdev_pmem_cache_create",
               "params": {"name": "wb0", "base_bdev": "base1",
                          "pool": second.to_str().unwrap(), "slots": 64}}),
    ];
    let mut bytes = Vec::new();
    for r in &requests {
        bytes.extend(serde_json::to_vec(r).unwrap());
    }
    stream.write_all(&bytes).unwrap();
    let responses: Vec<serde_json::Value> = serde_json::Deserializer::from_reader(stream)
        .into_iter::<serde_json::Value>()
        .take(2)
        .map(|v| v.unwrap())
        .collect();
    let created = responses.iter().find(|r| r["id"] == 2).unwrap();
    assert!(
        responses
            .iter()
            .all(|r| r["id"] != 1 || r["result"] == true),
        "{responses:?}"
    );
    if created.get("error").is_some() {
        // Refused cleanly while the old bdev still had the name: safe too.
        let message = created["error"]["message"].as_str().unwrap();
        assert!(message.contains("exists"), "{responses:?}");
        t.jsonrpc_ok(
            "bdev_pmem_cache_create",
            Some(json!({"name": "wb0", "base_bdev": "base1",
                        "pool": second.to_str().unwrap(), "slots": 64})),
        );
    }
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
    let config = nvme_bdev_config(dir.path(), NQN, port);
    let data = pattern(8, 0xf7);
    let input = dir.path().join("pattern");
    std::fs::write(&input, &data).unwrap();
    spdk_dd_ok(
        &config,
        &["--if", input.to_str().unwrap(), "--ob", "Nvme0n1"],
    );
    assert!(
        read_back(dir.path(), &config, 0, 8) == data,
        "the new cache reads differently"
    );
    assert_eq!(cache_info(&t)["pool"], second.to_str().unwrap());
}
