//! The Prometheus endpoint (`--metrics`), scraped by a real Prometheus
//! server (Debian's `prometheus`, started here on 127.0.0.1 and stopped at
//! the end): the counters move by what SPDK's perf did, `promtool check
//! metrics` passes on the exposition, a restart of the target shows as a
//! counter reset, and hostile HTTP clients neither stall the reactor nor
//! keep the endpoint from answering.

use crate::common;
use crate::nvme_tcp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::metrics::{get, sample};
use common::writeback::pmem_base;
use common::*;
use spdk_pmem::metrics::http::OPEN_CLIENTS;

mod bdevs;
mod http;

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
        let child = crate::common::command("prometheus")
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
    let _turn = beside_others();
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
    let mut promtool = crate::common::command("promtool")
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
