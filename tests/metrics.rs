//! The Prometheus endpoint (`--metrics`), scraped by a real Prometheus
//! server (Debian's `prometheus`, started here on 127.0.0.1 and stopped at
//! the end): the counters move by what SPDK's perf did, `promtool check
//! metrics` passes on the exposition, a restart of the target shows as a
//! counter reset, and hostile HTTP clients neither stall the reactor nor
//! keep the endpoint from answering.

mod common;
#[allow(dead_code)]
mod nvme_tcp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::metrics::{get, sample};
use common::writeback::pmem_base;
use common::*;
use spdk_pmem::metrics::http::OPEN_CLIENTS;

const NQN: &str = "nqn.2016-06.io.spdk:metrics";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:3e7c1b5a-0000-4000-8000-00000000000a";

/// The namespace's reads and writes completed, from our endpoint.
fn io_count(port: u16) -> f64 {
    let (_, body) = get(port, "/metrics", "*/*");
    let reads = sample(&body, "spdk_pmem_namespace_reads_completed_total").unwrap_or(0.0);
    let writes = sample(&body, "spdk_pmem_namespace_writes_completed_total").unwrap_or(0.0);
    reads + writes
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second; killed when
/// dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scraped: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: nvmf_tgt\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{scraped}']\n"
            ),
        )
        .unwrap();
        let port = test_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (scripts/setup-host.sh installs it)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || !get(port, "/-/ready", "*/*").0.contains("200")
        {
            assert!(
                Instant::now() < deadline,
                "prometheus never got ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector `query` gives, as (labels JSON, value) pairs.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(query)),
            "application/json",
        );
        assert!(status.contains("200"), "{query}: {status}\n{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits (bounded) until `query` has one value and `ok` holds for it.
    fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.query(query);
            if let [(_, v)] = got[..] {
                if ok(v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{query}: {got:?} after 30 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(metrics: u16) -> (Target, tempfile::TempDir, u16) {
    let shm = shm_dir();
    let port = test_port();
    let addr = format!("127.0.0.1:{metrics}");
    let t = Target::start(&our_nvmf_tgt(), &["--metrics", &addr]);
    configure_article(&t, &shm.path().join("pmdk0.pool"), NQN, port);
    (t, shm, port)
}

#[test]
fn prometheus_scrapes_counters_that_move_by_what_perf_did() {
    let metrics = test_port();
    let (mut t, _shm, port) = serve(metrics);
    let prometheus = Prometheus::start(metrics);

    // Calls by result: one that fails, and a request that is not JSON-RPC.
    let missing = t.rpc(&["bdev_get_bdevs", "-b", "no_such_bdev"]);
    assert!(!missing.status.success());
    {
        use std::os::unix::net::UnixStream;
        let mut junk = UnixStream::connect(&t.sock).unwrap();
        junk.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        junk.write_all(b"{\"jsonrpc\": \"2.0\", \"id\": 1}\n")
            .unwrap();
        let mut answer = [0u8; 512];
        let n = junk.read(&mut answer).unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).contains("error"));
    }

    let before = io_count(metrics);
    let (iops, _) = perf(NQN, port, "randrw", 2);
    let after = io_count(metrics);
    // perf's own accounting: IOPS over its 2 s; the counters also hold the
    // I/O of its start and end, outside the measured time.
    let done = after - before;
    let expected = iops * 2.0;
    assert!(
        done >= expected * 0.95 && done <= expected * 1.10 + 1000.0,
        "the namespace counted {done} I/Os; perf reported {iops} IOPS for 2 s"
    );

    // The exposition is valid by Prometheus's own checker.
    let (status, classic) = get(metrics, "/metrics", "*/*");
    assert!(status.contains("200 OK"), "{status}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{classic}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for name in [
        "spdk_pmem_build_info",
        "spdk_pmem_reactor_seconds_total",
        "spdk_pmem_thread_seconds_total{thread=\"app_thread\",mode=\"busy\"}",
        "spdk_pmem_thread_seconds_total{thread=\"nvmf_tgt_poll_group_0\",mode=\"busy\"}",
        "spdk_pmem_rpc_requests_total{method=\"nvmf_create_subsystem\"}",
        "spdk_pmem_subsystem_namespaces",
        "spdk_pmem_subsystem_listeners",
        "spdk_pmem_subsystem_allowed_hosts",
        "spdk_pmem_subsystem_connected_hosts",
        "spdk_pmem_namespace_read_bytes_total",
        "spdk_pmem_namespace_written_bytes_total",
        "spdk_pmem_namespace_read_seconds_total",
        "spdk_pmem_namespace_write_seconds_total",
        "spdk_pmem_namespace_capacity_bytes",
    ] {
        assert!(sample(&classic, name).is_some(), "no {name}:\n{classic}");
    }

    // configure_article's rpc.py calls, one nvmf_subsystem_add_ns.
    assert_eq!(
        sample(
            &classic,
            "spdk_pmem_rpc_requests_total{method=\"nvmf_subsystem_add_ns\"}"
        ),
        Some(1.0),
        "{classic}"
    );
    let info = classic
        .lines()
        .find(|l| l.starts_with("spdk_pmem_build_info{"))
        .unwrap_or_default();
    let patches = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/vendor/patches"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "patch")
        })
        .count();
    let listed = info
        .split("patches=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    assert_eq!(listed.split(',').count(), patches, "{info}");
    assert!(listed.starts_with("0001,"), "{info}");
    for (call, count) in [
        ("method=\"nvmf_subsystem_add_ns\",result=\"ok\"", 1.0),
        ("method=\"bdev_get_bdevs\",result=\"error\"", 1.0),
        ("method=\"(invalid request)\",result=\"error\"", 1.0),
    ] {
        let name = format!("spdk_pmem_rpc_responses_total{{{call}}}");
        assert_eq!(sample(&classic, &name), Some(count), "{name}:\n{classic}");
    }
    assert!(
        sample(
            &classic,
            "spdk_pmem_thread_seconds_total{thread=\"nvmf_tgt_poll_group_0\",mode=\"busy\"}"
        )
        .is_some_and(|s| s > 0.0),
        "{classic}"
    );

    // Prometheus holds what the endpoint says (the counters are still now).
    let writes = sample(&classic, "spdk_pmem_namespace_writes_completed_total").unwrap();
    let query = format!("spdk_pmem_namespace_writes_completed_total{{subsystem=\"{NQN}\",nsid=\"1\",bdev=\"pmdk0\"}}");
    prometheus.wait_for(&query, |v| v == writes);
    prometheus.wait_for(
        "spdk_pmem_subsystem_namespaces{subsystem=\"nqn.2016-06.io.spdk:metrics\"}",
        |v| v == 1.0,
    );
    let busy = prometheus.wait_for("spdk_pmem_reactor_seconds_total{mode=\"busy\"}", |v| {
        v > 0.0
    });
    assert!(busy > 0.0);

    // A restart is a counter reset, not garbage.
    assert!(t.stop().success());
    drop(t);
    let (t2, _shm2, port2) = serve(metrics);
    // Prometheus has seen the new target's count from 0: a count that had
    // already passed the old one by its first scrape would look like no
    // reset (perf's 1 s of writes against the old run's 2 s of randrw
    // made that a race, lost once in a loaded suite).
    prometheus.wait_for(&query, |v| v == 0.0);
    perf(NQN, port2, "randwrite", 1);
    prometheus.wait_for(
        "resets(spdk_pmem_namespace_writes_completed_total[2m])",
        |v| v >= 1.0,
    );
    drop(t2);
}

#[test]
fn hostile_http_clients_stall_neither_the_reactor_nor_the_endpoint() {
    let metrics = test_port();
    let (t, _shm, port) = serve(metrics);
    // Clients that connect and send nothing, or a header without end.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap())
        .collect();
    let mut huge = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    huge.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let junk = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(junk.as_bytes());
    // The reactor serves I/O meanwhile.
    let (iops, _) = perf(NQN, port, "randread", 1);
    assert!(iops > 1000.0, "{iops} IOPS beside hostile HTTP clients");
    // And a scrape still gets its answer: it does not wait for the hostile
    // clients' requests, which have 2 s to arrive.
    let at = Instant::now();
    let (status, body) = get(metrics, "/metrics", "*/*");
    assert!(status.contains("200 OK"), "{status}");
    assert!(body.contains("spdk_pmem_namespace_reads_completed_total"));
    assert!(
        at.elapsed() < Duration::from_secs(30),
        "the scrape took {:?}",
        at.elapsed()
    );
    idle.clear();
    let (status, _) = get(metrics, "/nothing", "*/*");
    assert!(status.contains("404"), "{status}");
    drop(t);
}

/// Many connections at once (400 from 127.0.0.1, sending nothing) cost the
/// target at most the [`OPEN_CLIENTS`] descriptors its endpoint waits on
/// (a newer one closes the oldest), and delay no scrape: one sent while
/// all of them are still open is answered (the endpoint answered one
/// connection at a time, so a scrape waited 2 s behind each idle one: this
/// one, behind 130 that the accept queue held, waited past `get`'s 30 s).
/// The reactor serves I/O meanwhile.
#[test]
fn many_idle_http_connections_hold_few_descriptors_and_delay_no_scrape() {
    let metrics = test_port();
    let (t, _shm, port) = serve(metrics);
    let pid = t.child.as_ref().unwrap().id();
    let before = footprint(pid);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    // Up to 400, or until the kernel's queue is full and a connect waits.
    let held: Vec<TcpStream> = (0..400)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    assert!(held.len() >= 100, "only {} connections", held.len());
    let bound = before.fds + OPEN_CLIENTS + 2;
    let during = footprint(pid);
    assert!(
        during.fds <= bound,
        "{} connections held: {} descriptors, {} before",
        held.len(),
        during.fds,
        before.fds
    );
    let (status, body) = get(metrics, "/metrics", "*/*");
    assert!(
        status.contains("200 OK"),
        "a scrape beside {} idle connections: {status}",
        held.len()
    );
    assert!(body.contains("spdk_pmem_namespace_reads_completed_total"));
    let (iops, _) = perf(NQN, port, "randread", 1);
    assert!(
        iops > 1000.0,
        "{iops} IOPS beside {} connections",
        held.len()
    );
    eprintln!(
        "{} connections held: target descriptors {} (before {}), {iops:.0} IOPS",
        held.len(),
        during.fds,
        before.fds
    );
    let after = footprint(pid);
    assert!(after.fds <= bound, "{after:?} against {before:?}");
    drop(held);
    let (status, _) = get(metrics, "/metrics", "*/*");
    assert!(status.contains("200 OK"), "{status}");
    drop(t);
}

#[test]
fn a_write_back_cache_shows_its_state() {
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
    // The RBD namespaces' metrics need a Ceph: tests/rbd_faults.rs checks
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
    let out = Command::new("promtool")
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

/// Review F10: each scrape made the application thread gather everything
/// again, so a client asking back to back kept it busy. One gathering now
/// answers every scrape for `GATHERED_FOR`: two scrapes within it get the
/// same text (the reactors' busy and idle seconds move between any
/// two gatherings), and one after it a new text.
#[test]
fn back_to_back_scrapes_are_answered_from_one_gathering() {
    use spdk_pmem::metrics::http::GATHERED_FOR;
    let metrics = test_port();
    let addr = format!("127.0.0.1:{metrics}");
    let _t = Target::start(&our_nvmf_tgt(), &["--metrics", &addr]);
    let scrape = || {
        let (status, body) = get(metrics, "/metrics", "*/*");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("spdk_pmem_reactor_seconds"), "{body}");
        body
    };
    // A pair that came within the window (a slow moment may take longer).
    let mut pair = None;
    for _ in 0..20 {
        std::thread::sleep(GATHERED_FOR * 2);
        let started = Instant::now();
        let (first, second) = (scrape(), scrape());
        if started.elapsed() < GATHERED_FOR {
            pair = Some((first, second));
            break;
        }
    }
    let (first, second) = pair.expect("no two scrapes within the window in 20 tries");
    assert!(
        first == second,
        "two scrapes within {GATHERED_FOR:?} were gathered apart"
    );
    std::thread::sleep(GATHERED_FOR * 2);
    assert!(
        scrape() != second,
        "a scrape after the window got the old text"
    );
}
