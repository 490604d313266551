//! Who may connect, checked with the real peer: the Linux 6.12 kernel host
//! (Debian 13's kernel in a QEMU guest, nvme-cli's `--dhchap-secret` and
//! `--dhchap-ctrl-secret`) authenticates to our nvmf_tgt with DH-HMAC-CHAP,
//! configured through upstream SPDK's RPCs (spdk-rpc 26: `keyring_file_add_key`,
//! `nvmf_subsystem_add_host --dhchap-key --dhchap-ctrlr-key`,
//! `nvmf_set_config --dhchap-digests --dhchap-dhgroups`,
//! `nvmf_subsystem_set_keys`):
//! - every hash, with null and two ffdhe groups, uni- and bidirectional:
//!   admitted, fio with crc32c verify;
//! - no key, a wrong key, another host with this host's key, a wrong
//!   controller key: refused, one line each in the target's log, no
//!   secret in it; the right key is admitted afterwards;
//! - rotation: `nvmf_subsystem_set_keys` while the host is connected (its
//!   I/O goes on), the host re-authenticates with the new key, the old key
//!   is refused from then on;
//! - namespace masking: two hosts, each lists only its namespaces, and one
//!   given another namespace while connected sees it appear.
//!
//! The first round configures ours over RPC; the others restart it from
//! that round's save_config with other digests and groups, so the Linux
//! host also checks that save_config brings the keys back.
//!
//! Linux's nvmet in the same guest gets the same checks: the control.
//! It needs the portable build (see `rdma_host`) and spdk-rpc 26
//! (`target/spdk-rpc-venv`, scripts/setup.sh), and runs in the plain suite.

use crate::common;

use common::vm::{self, GuestRun, Size};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GUEST: &str = include_str!("guest.sh");
const MATRIX: [&str; 6] = [
    "sha256:null:0",
    "sha256:ffdhe2048:1",
    "sha384:null:1",
    "sha384:ffdhe3072:0",
    "sha512:ffdhe2048:0",
    "sha512:ffdhe3072:1",
];
const REFUSALS: [&str; 4] = [
    "no key",
    "wrong key",
    "another host with host 1's key",
    "a wrong controller key",
];

fn portable_nvmf_tgt() -> PathBuf {
    let build = std::env::var_os("SPDK_PMEM_PORTABLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/portable"));
    ["debug", "release"]
        .iter()
        .map(|profile| build.join(profile).join("nvmf_tgt"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no portable nvmf_tgt under {}: scripts/test.sh builds it",
                build.display()
            )
        })
}

/// Ours, 20.07's scripts and spdk-rpc 26's package, in one directory.
fn stage(dir: &Path) -> PathBuf {
    let staged = dir.join("auth");
    std::fs::create_dir_all(staged.join("py")).unwrap();
    std::fs::copy(portable_nvmf_tgt(), staged.join("ours")).unwrap();
    let venv_lib = spdk_rpc_26()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("lib");
    let package = std::fs::read_dir(&venv_lib)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/setup.sh makes the venv)",
                venv_lib.display()
            )
        })
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/spdk"))
        .find(|p| p.is_dir())
        .expect("spdk-rpc 26's package in its venv");
    for (from, to) in [
        (package, staged.join("py/spdk")),
        (Path::new(SPDK_ROOT).join("scripts"), staged.join("scripts")),
    ] {
        let copied = crate::common::command("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(copied.success(), "copying {}", from.display());
    }
    staged
}

fn fields(run: &GuestRun, name: &str) -> BTreeMap<String, String> {
    run.section(name)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Asserts that each `key` of section `name` reads its `want`.
fn expect(run: &GuestRun, name: &str, wants: &[(&str, &str)]) {
    let f = fields(run, name);
    for (key, want) in wants {
        assert_eq!(
            f.get(*key).map(String::as_str),
            Some(*want),
            "{name}: {key}:\n{}",
            run.section(name)
        );
    }
}

const ADMITTED: [(&str, &str); 4] = [
    ("connect", "0"),
    ("fio", "0"),
    ("fio_err", "err=0"),
    ("disconnect", "0"),
];

fn refused(run: &GuestRun, name: &str) {
    let f = fields(run, name);
    assert_ne!(
        f.get("connect").map(String::as_str),
        Some("0"),
        "{name}: admitted:\n{}",
        run.section(name)
    );
    assert_eq!(
        f.get("controller").map(String::as_str),
        Some(""),
        "{name}: a controller is left:\n{}",
        run.section(name)
    );
}

fn rotation(run: &GuestRun, who: &str) {
    expect(
        run,
        &format!("{who}: rotation"),
        &[("connect", "0"), ("set_keys", "0")],
    );
    expect(
        run,
        &format!("{who}: the connected host, after set_keys"),
        &[("fio", "0"), ("fio_err", "err=0")],
    );
    expect(
        run,
        &format!("{who}: after re-authenticating"),
        &[("state", "live"), ("fio", "0"), ("fio_err", "err=0")],
    );
    refused(run, &format!("{who}: the old key, after the rotation"));
    expect(run, &format!("{who}: the new key"), &ADMITTED);
}

#[test]
fn the_linux_host_authenticates_with_dh_hmac_chap_and_wrong_keys_are_refused() {
    // Two vCPUs under TCG take both of this machine's cores.
    let _turn = alone();
    if !vm::plain_suite() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let staged = stage(dir.path());
    let size = Size {
        cpus: 2,
        memory_mib: 3072,
        kernel: Some("6.12"),
    };
    let run = vm::run_sized(
        GUEST,
        &[],
        &[staged.as_path()],
        size,
        Duration::from_secs(1500),
        |step| format!("no step {step}"),
    );
    eprintln!("{}", run.output);
    assert_eq!(run.status, 0, "the guest's script:\n{}", run.output);

    for m in MATRIX {
        let (hash_group, _) = m.rsplit_once(':').unwrap();
        let ours = format!("ours: {m}");
        expect(&run, &ours, &ADMITTED);
        // What the target negotiated is what nvmf_set_config allowed.
        expect(&run, &ours, &[("negotiated", hash_group)]);
        expect(&run, &format!("nvmet: {m}"), &ADMITTED);
    }
    for who in ["ours", "nvmet"] {
        for r in REFUSALS {
            refused(&run, &format!("{who}: {r}"));
        }
        expect(
            &run,
            &format!("{who}: host 1 after the refusals"),
            &ADMITTED,
        );
        rotation(&run, who);
    }
    expect(
        &run,
        "ours: after re-authenticating",
        &[("reauth_write", "0"), ("reauthenticated", "0")],
    );
    expect(&run, "nvmet: start", &[("started", "0")]);

    // One line per refusal, saying why, and no secret.
    let logged = run.section("ours: refusals logged");
    for why in [
        "closed queue pair of nqn.2016-06.io.spdk:cnode1 without authenticating",
        "the host's response does not match its key",
        "the host refused the controller's response",
    ] {
        assert!(logged.contains(why), "no refusal saying {why:?}:\n{logged}");
    }
    let lines = logged.lines().filter(|l| l.starts_with("log: ")).count();
    assert!(
        (REFUSALS.len()..=2 * REFUSALS.len()).contains(&lines),
        "{lines} lines for {} refusals:\n{logged}",
        REFUSALS.len()
    );
    expect(&run, "ours: refusals logged", &[("leaked", "0")]);
    expect(&run, "ours: stop", &[("alive", "0"), ("exit", "0")]);

    // Two hosts, each sees only its namespaces (nvme list-ns); a host
    // given another namespace while connected sees it appear.
    let s = "ours: namespace masking";
    expect(
        &run,
        s,
        &[
            ("masked_ns", "0"),
            ("connect1", "0"),
            ("connect2", "0"),
            ("host1", "0x1"),
            ("host2", "0x1 0x2"),
            ("added", "0"),
            ("host1_after", "0x1 0x2"),
            ("host1_block_devices", "2"),
        ],
    );
}
