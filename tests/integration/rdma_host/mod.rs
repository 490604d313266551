//! RDMA, the article's transport, carried for real: Soft-RoCE (`rdma_rxe`)
//! on the network device of a QEMU guest, our nvmf_tgt from the portable
//! build (`--features portable`: TCG's CPU lacks this machine's AVX-512)
//! running in the guest, configured with the article's commands
//! (scripts/article-rpc.sh, `-t RDMA`), and the Linux kernel host
//! (`nvme connect -t rdma`: fio with crc32c verify, an ext4 roundtrip) and
//! SPDK's perf and bdevperf against it over RDMA. SPDK's C nvmf_tgt from the
//! same portable build and Linux's nvmet get the same checks: the controls.
//! Ours also gets RDMA's failure paths: connect rounds without a leak, a
//! listener where no RDMA device is refused while the target serves on, a
//! kill and a restart from save_config the host reconnects to, and
//! nvme_fuzz over RDMA.
//!
//! The target and its initiator share one guest and connect to the guest's
//! own address: two TCG guests on one QEMU network would halve what each
//! gets of this machine's two cores. Times under TCG are no performance
//! figures.
//!
//! It needs the portable build in `target/portable` (scripts/test.sh makes
//! it; `SPDK_PMEM_PORTABLE_DIR` names another) and runs in the plain suite.

use crate::common;

use common::vm::{self, GuestRun, Size};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GUEST: &str = include_str!("guest.sh");
const SERIAL: &str = "SPDK0001";
/// Hugepages of 2 MiB the guest reserves: a target with an RDMA transport
/// beside perf, bdevperf or nvme_fuzz.
const HUGEPAGES: u32 = 1024;
const CONNECT_ROUNDS: u32 = 50;
const FUZZ_SECONDS: u32 = 30;

/// Where the portable build is: its target directory.
fn portable_dir() -> PathBuf {
    std::env::var_os("SPDK_PMEM_PORTABLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/portable"))
}

/// The programs the guest runs, copied into one directory (the guest sees
/// nothing under this machine's /tmp, where a clone of the project may be).
fn stage(dir: &Path) -> PathBuf {
    let build = portable_dir();
    let spdk = build.join("spdk/current");
    let ours = ["debug", "release"]
        .iter()
        .map(|profile| build.join(profile).join("nvmf_tgt"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no portable nvmf_tgt under {}: scripts/test.sh builds it \
                 (CARGO_TARGET_DIR=target/portable cargo build --features portable)",
                build.display()
            )
        });
    let staged = dir.join("rdma");
    std::fs::create_dir_all(&staged).unwrap();
    for (from, name) in [
        (ours, "ours"),
        (spdk.join("build/bin/nvmf_tgt"), "c_nvmf_tgt"),
        (spdk.join("build/examples/perf"), "perf"),
        (spdk.join("test/bdev/bdevperf/bdevperf"), "bdevperf"),
        (spdk.join("test/app/fuzz/nvme_fuzz/nvme_fuzz"), "nvme_fuzz"),
        (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/article-rpc.sh"),
            "article-rpc.sh",
        ),
    ] {
        std::fs::copy(&from, staged.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    let copied = crate::common::command("cp")
        .arg("-a")
        .arg(spdk.join("scripts"))
        .arg(staged.join("scripts"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying SPDK's scripts");
    staged
}

/// The `key=value` lines of section `name`.
fn fields(run: &GuestRun, name: &str) -> BTreeMap<String, String> {
    run.section(name)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(f: &'a BTreeMap<String, String>, key: &str, section: &str, run: &GuestRun) -> &'a str {
    f.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {key} in section {section}:\n{}", run.output))
}

/// Asserts that `key` of section `name` reads `want`, showing the section.
fn expect(run: &GuestRun, name: &str, key: &str, want: &str) {
    let f = fields(run, name);
    assert_eq!(
        field(&f, key, name, run),
        want,
        "{name}: {key}:\n{}",
        run.section(name)
    );
}

/// The IOPS in a perf or bdevperf `Total` line ("Total : 7126.33 …").
fn total_iops(total: &str) -> f64 {
    total
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The kernel host's and SPDK's initiators' checks on the target of
/// section `name`.
fn assert_served(run: &GuestRun, name: &str) {
    for (key, want) in [
        ("connect", "0"),
        ("transport", "rdma"),
        ("serial", SERIAL),
        // fio randrw with crc32c verify.
        ("fio", "0"),
        ("fio_err", "err=0"),
        ("ext4", "0"),
        ("disconnect", "0"),
        ("perf", "0"),
        ("perf_errors", "0"),
        ("bdevperf", "0"),
        ("bdevperf_bad", "0"),
    ] {
        expect(run, name, key, want);
    }
    let f = fields(run, name);
    for key in ["perf_total", "bdevperf_total"] {
        let total = field(&f, key, name, run);
        assert!(total_iops(total) > 0.0, "{name}: no I/O in {key}: {total}");
    }
}

#[test]
fn the_article_over_rdma_to_the_linux_host_and_spdks_initiators() {
    // Two vCPUs under TCG take both of this machine's cores.
    let _turn = alone();
    if !vm::plain_suite() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let staged = stage(dir.path());
    let script = format!(
        "HUGEPAGES={HUGEPAGES}\nROUNDS={CONNECT_ROUNDS}\nFUZZ_SECONDS={FUZZ_SECONDS}\n{GUEST}"
    );
    let size = Size {
        cpus: 2,
        memory_mib: 3072,
        kernel: None,
    };
    let run = vm::run_sized(
        &script,
        &[],
        &[staged.as_path()],
        size,
        Duration::from_secs(1500),
        |step| format!("no step {step}"),
    );
    eprintln!("{}", run.output);
    assert_eq!(run.status, 0, "the guest's script:\n{}", run.output);

    // Soft-RoCE's device on eth0.
    expect(&run, "rdma", "link", "ACTIVE");
    for target in ["ours", "c"] {
        // The article's commands over RDMA.
        expect(&run, target, "article", "0");
        assert_served(&run, target);
        expect(&run, &format!("{target}: stop"), "stopped", "0");
    }
    assert_served(&run, "nvmet");

    let rounds = fields(&run, "ours: reconnects");
    let num = |f: &BTreeMap<String, String>, k: &str, s: &str| -> u64 {
        field(f, k, s, &run)
            .parse()
            .unwrap_or_else(|_| panic!("{s}: {k}"))
    };
    let s = "ours: reconnects";
    assert_eq!(
        num(&rounds, "rounds", s),
        CONNECT_ROUNDS as u64,
        "{}",
        run.section(s)
    );
    let (fds0, fds1) = (num(&rounds, "fds_before", s), num(&rounds, "fds_after", s));
    assert!(
        fds1 <= fds0 + 2,
        "descriptors {fds0} -> {fds1} after {CONNECT_ROUNDS} rounds"
    );
    let (rss0, rss1) = (
        num(&rounds, "rss_before_kib", s),
        num(&rounds, "rss_after_kib", s),
    );
    assert!(
        rss1 <= rss0 + 16 * 1024,
        "resident memory {rss0} -> {rss1} KiB after {CONNECT_ROUNDS} rounds"
    );

    let s = "ours: a listener where no RDMA device is";
    let bad = fields(&run, s);
    assert_ne!(
        field(&bad, "bad_listener", s, &run),
        "0",
        "{}",
        run.section(s)
    );
    let message = field(&bad, "bad_listener_message", s, &run);
    assert!(
        message.contains("no RDMA device has address 127.0.0.1"),
        "the refusal does not say what is wrong: {message}"
    );
    expect(&run, s, "still_serving", "0");
    expect(&run, s, "connect_after", "0");

    let s = "ours: killed and restarted from save_config";
    expect(&run, s, "state_after_restart", "live");
    expect(&run, s, "data_after_restart", "0");

    let s = "ours: nvme_fuzz";
    let fuzz = fields(&run, s);
    expect(&run, s, "fuzz", "0");
    expect(&run, s, "alive_after_fuzz", "0");
    assert!(
        num(&fuzz, "fuzz_commands", s) > 0,
        "nvme_fuzz sent no command:\n{}",
        run.section(s)
    );
    // The same bound as the TCP run's (tests/integration/nvme_fuzz.rs).
    let log = num(&fuzz, "fuzz_log_bytes", s);
    assert!(
        log < 2_330_000,
        "the target logged {log} bytes in {FUZZ_SECONDS} s of nvme_fuzz"
    );
}
