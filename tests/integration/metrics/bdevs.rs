//! What the bdevs report: the write-back cache's state, pmem pools and
//! their blocks in error, and scrapes racing deletions.

use super::*;

#[test]
fn a_write_back_cache_shows_its_state() {
    let _turn = beside_others();
    let metrics = test_port();
    let shm = shm_dir();
    let port = test_port();
    let addr = format!("127.0.0.1:{metrics}");
    let t = Target::start(&our_nvmf_tgt(), &["--metrics", &addr]);
    let base = shm.path().join("base.pool");
    pmem_base(&t, &base, "base0");
    let cache = shm.path().join("cache.pool");
    t.rpc_ok(&[
        "--plugin",
        "rpc_pmem_cache",
        "bdev_pmem_cache_create",
        "-b",
        "wb0",
        "--slots",
        "4096",
        "base0",
        cache.to_str().unwrap(),
    ]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDKMETRICS"]);
    add_tcp_listener(&t, NQN, port);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "wb0"]);
    perf(NQN, port, "randwrite", 1);
    t.rpc_ok(&["--plugin", "rpc_pmem_cache", "bdev_pmem_cache_flush", "wb0"]);

    let (_, text) = get(metrics, "/metrics", "*/*");
    let labels = "{bdev=\"wb0\",base_bdev=\"base0\"}";
    let value = |name: &str| {
        sample(&text, &format!("{name}{labels}"))
            .unwrap_or_else(|| panic!("no {name}{labels}:\n{text}"))
    };
    assert!(
        value("spdk_pmem_cache_destaged_writes_total") > 0.0,
        "{text}"
    );
    assert_eq!(value("spdk_pmem_cache_dirty_blocks"), 0.0, "{text}");
    assert_eq!(value("spdk_pmem_cache_base_reachable"), 1.0, "{text}");
    assert_eq!(value("spdk_pmem_cache_waiting_writes"), 0.0, "{text}");
    assert!(value("spdk_pmem_cache_slots") >= 4096.0, "{text}");
    assert_eq!(
        value("spdk_pmem_cache_destage_failures_total"),
        0.0,
        "{text}"
    );

    dashboard_names_only_what_is_served(&text);
}

/// scripts/grafana-dashboard.json is valid JSON whose panels' queries are
/// valid PromQL (`promtool check rules`) and name only metrics that `text`
/// (a scrape of a target with a namespace and a cache) has.
fn dashboard_names_only_what_is_served(text: &str) {
    let exprs = common::metrics::dashboard_queries();
    assert!(exprs.len() >= 6, "{} queries", exprs.len());
    // The RBD namespaces' metrics need a Ceph: tests/integration/rbd_faults.rs checks
    // those against a target serving one.
    let missing: Vec<String> = common::metrics::dashboard_metrics()
        .into_iter()
        .filter(|name| !name.starts_with("spdk_pmem_rbd_"))
        .filter(|name| !common::metrics::served(text, name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard's {missing:?} are not served"
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let body: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = serde_json::to_string(e).unwrap();
            format!("      - record: dashboard:query{i}\n        expr: {e}\n")
        })
        .collect();
    std::fs::write(
        &rules,
        format!("groups:\n  - name: dashboard\n    rules:\n{body}"),
    )
    .unwrap();
    let out = crate::common::command("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pmem bdev's pool shows for either module; a block marked in error
/// (libpmemblk's `pmemblk_set_error`, as a media error leaves it) that a
/// host reads counts once in the Rust module's media errors, and its
/// workers show.
#[test]
fn pmem_bdevs_show_their_pool_and_count_a_block_in_error_a_host_read() {
    let _turn = beside_others();
    let shm = shm_dir();
    let pool_path = shm.path().join("pmdk0.pool");
    let blocks = {
        let pool = spdk_pmem::pmem::Pool::create(&pool_path, 4096, 32 << 20, 0o600).unwrap();
        pool.set_error(9).unwrap();
        pool.block_count() as f64
    };
    for module in ["rust", "c"] {
        let (metrics, port) = (test_port(), test_port());
        let addr = format!("127.0.0.1:{metrics}");
        let mut t = Target::start(
            &our_nvmf_tgt(),
            &[
                "--metrics",
                &addr,
                "--pmem-module",
                module,
                "--pmem-io-threads",
                "2",
            ],
        );
        configure_article(&t, &pool_path, NQN, port);
        {
            let (_admin, mut io) = nvme_tcp::host::io_queue(port, NQN, HOSTNQN);
            let (status, _) = nvme_tcp::host::read_blocks(&mut io, 1, 9, 1, 4096);
            assert_ne!(status, 0, "{module}: the block in error read back");
            let (status, _) = nvme_tcp::host::read_blocks(&mut io, 2, 10, 1, 4096);
            assert_eq!(status, 0, "{module}: a good block");
        }
        let (_, body) = get(metrics, "/metrics", "*/*");
        let labels = match module {
            "rust" => "{bdev=\"pmdk0\",module=\"pmem_rs\"}",
            _ => "{bdev=\"pmdk0\",module=\"pmem\"}",
        };
        let value = |name: &str| sample(&body, &format!("spdk_pmem_{name}{labels}"));
        assert_eq!(value("pmem_pool_blocks"), Some(blocks), "{module}:\n{body}");
        assert_eq!(
            value("pmem_block_size_bytes"),
            Some(4096.0),
            "{module}:\n{body}"
        );
        if module == "rust" {
            assert_eq!(value("pmem_media_errors_total"), Some(1.0), "{body}");
            assert_eq!(value("pmem_io_threads"), Some(2.0), "{body}");
            assert_eq!(value("pmem_queued_ios"), Some(0.0), "{body}");
            assert!(value("pmem_budget_waits_total").is_some(), "{body}");
        } else {
            // SPDK's C module counts nothing of its own.
            assert_eq!(value("pmem_media_errors_total"), None, "{body}");
        }
        assert!(t.stop().success(), "{}", t.log_text());
    }
}

/// Review F6: a scrape counts each namespace's I/O with
/// `spdk_bdev_get_device_stat`, which iterates over the bdev's channels. A
/// bdev removed meanwhile used to have its descriptor closed at once; that
/// last close unregistered the bdev while SPDK iterated, SPDK refused the
/// unregistration ("for_each calls outstanding"), and the delete never
/// answered. Namespaces are added, removed and their bdevs deleted while a
/// client scrapes without a pause: every delete answers, and none is
/// refused.
#[test]
fn scrapes_racing_namespace_removal_and_bdev_deletion_keep_no_bdev() {
    let _turn = beside_others();
    let shm = shm_dir();
    let metrics = test_port();
    let addr = format!("127.0.0.1:{metrics}");
    let t = Target::start(&our_nvmf_tgt(), &["--metrics", &addr]);
    let pool = shm.path().join("racing.pool");
    let pool = pool.to_str().unwrap();
    t.rpc_ok(&["bdev_pmem_create_pool", pool, "32", "4096"]);
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-a", "-s", "SPDKRACE"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = get(metrics, "/metrics", "*/*");
                scrapes += 1;
            }
            scrapes
        })
    };
    let cycles = 100;
    for i in 0..cycles {
        let name = format!("race{i}");
        t.jsonrpc_ok(
            "bdev_pmem_create",
            Some(serde_json::json!({"name": name, "pmem_file": pool})),
        );
        t.jsonrpc_ok(
            "nvmf_subsystem_add_ns",
            Some(serde_json::json!({"nqn": NQN, "namespace": {"bdev_name": name, "nsid": 1}})),
        );
        t.jsonrpc_ok(
            "nvmf_subsystem_remove_ns",
            Some(serde_json::json!({"nqn": NQN, "nsid": 1})),
        );
        // Answered within the RPC helper's 60 s, or it fails the test.
        t.jsonrpc_ok("bdev_pmem_delete", Some(serde_json::json!({"name": name})));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    let log = t.log_text();
    assert!(
        !log.contains("for_each calls outstanding"),
        "SPDK refused an unregistration:\n{log}"
    );
    let bdevs = t.jsonrpc_ok("bdev_get_bdevs", None);
    assert_eq!(bdevs, serde_json::json!([]), "bdevs left: {bdevs}");
    eprintln!("{cycles} add/remove/delete cycles beside {scrapes} scrapes");
}
