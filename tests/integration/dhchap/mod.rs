//! DH-HMAC-CHAP on loopback, with a host of the tests' own (`host.rs`) that
//! sends exactly what it is told: a host with a key must authenticate every
//! queue pair before anything else runs, the right key is admitted (both
//! directions, with and without a DH group), junk, truncated, replayed and
//! reordered messages and a flood of failing attempts never admit and never
//! stop the target, `nvmf_subsystem_set_keys` rotates keys without
//! touching connected queue pairs, and `save_config` restores it all by key
//! name without writing a secret.

mod fuzz;
mod host;

use crate::common;
use crate::nvme_tcp::{host as tcp, wire};
use common::*;
use host::{Host, Outcome, AUTH_REQUIRED};
use serde_json::json;
use spdk_pmem::auth::secret::{HashFn, Secret};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.spdk:auth";
const H1: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a1";
const H2: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a2";
const ALL_HASHES: [u8; 3] = [1, 2, 3];

fn write_key(dir: &Path, name: &str, secret: &Secret) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", secret.to_text())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.to_str().unwrap().to_string()
}

struct Keys {
    k1: Secret,
    c1: Secret,
    k2: Secret,
    k1b: Secret,
}

fn keys() -> Keys {
    Keys {
        k1: Secret::from_key(&[0x11; 32], Some(HashFn::Sha256)).unwrap(),
        c1: Secret::from_key(&[0xc1; 48], None).unwrap(),
        k2: Secret::from_key(&[0x22; 64], Some(HashFn::Sha512)).unwrap(),
        k1b: Secret::from_key(&[0x1b; 32], Some(HashFn::Sha384)).unwrap(),
    }
}

/// Our target with subsystem NQN on `port` (a pmem namespace), host 1 with
/// key k1 and controller key c1, host 2 with k2.
fn target(dir: &Path, port: u16, k: &Keys) -> Target {
    let t = Target::start(&our_nvmf_tgt(), &[]);
    for (name, s) in [("k1", &k.k1), ("c1", &k.c1), ("k2", &k.k2), ("k1b", &k.k1b)] {
        let path = write_key(dir, name, s);
        t.jsonrpc_ok(
            "keyring_file_add_key",
            Some(json!({"name": name, "path": path})),
        );
    }
    add_pmem_bdev(&t, &dir.join("pool"), "pmem0");
    t.rpc_ok(&["nvmf_create_transport", "-t", "TCP"]);
    t.rpc_ok(&["nvmf_create_subsystem", NQN, "-s", "SPDK0001"]);
    t.rpc_ok(&["nvmf_subsystem_add_ns", NQN, "pmem0"]);
    t.jsonrpc_ok(
        "nvmf_subsystem_add_host",
        Some(json!({"nqn": NQN, "host": H1, "dhchap_key": "k1", "dhchap_ctrlr_key": "c1"})),
    );
    t.jsonrpc_ok(
        "nvmf_subsystem_add_host",
        Some(json!({"nqn": NQN, "host": H2, "dhchap_key": "k2"})),
    );
    add_tcp_listener(&t, NQN, port);
    t
}

fn host<'a>(hostnqn: &'a str, key: &Secret, ctrlr_key: Option<&Secret>) -> Host<'a> {
    Host {
        hostnqn,
        subnqn: NQN,
        key: key.clone(),
        ctrlr_key: ctrlr_key.cloned(),
    }
}

/// A Connect of queue `qid` that must ask for authentication.
fn connect(port: u16, hostnqn: &str, qid: u16, cntlid: u16) -> (std::net::TcpStream, u16) {
    let (s, status, dw0_low) = tcp::connect_as(port, NQN, hostnqn, qid, cntlid);
    assert_eq!(status, 0, "Connect of queue {qid}");
    (s, dw0_low)
}

/// Whether the Connect's response asked for authentication: dword 0's
/// AUTHREQ.ATR (bit 17); `connect_as` gives the low half, so ask again.
fn atr(port: u16, hostnqn: &str) -> bool {
    let mut s = tcp::negotiated(port);
    let (sqe, data) = wire::connect(1, 0, 31, 0, 0xFFFF, NQN, hostnqn);
    let (status, dw0) = tcp::command(&mut s, sqe, data);
    assert_eq!(status, 0, "Connect");
    dw0 & (1 << 17) != 0
}

fn property_get(s: &mut std::net::TcpStream) -> u16 {
    tcp::command(s, wire::property_get(3, wire::CSTS_OFFSET), vec![]).0
}

/// Whether the target closed `s` within `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn a_host_with_a_key_authenticates_every_queue_before_anything_runs() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let port = test_port();
    let k = keys();
    let t = target(dir.path(), port, &k);

    // Before authenticating, nothing but the authentication commands runs.
    assert!(
        atr(port, H1),
        "the Connect did not ask host 1 to authenticate"
    );
    let (mut admin, cntlid) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(property_get(&mut admin), AUTH_REQUIRED);
    // Bidirectional, the strongest of what the host offers: SHA-512, ffdhe2048.
    let h1 = host(H1, &k.k1, Some(&k.c1));
    assert_eq!(
        h1.authenticate(&mut admin, 1, &ALL_HASHES, &[0, 1]),
        Outcome::Admitted
    );
    assert_eq!(property_get(&mut admin), 0);
    let (status, _) = tcp::command(
        &mut admin,
        wire::property_set(4, wire::CC_OFFSET, wire::CC_ENABLE),
        vec![],
    );
    assert_eq!(status, 0, "Property Set CC.EN");
    assert!(
        t.log_text()
            .contains(&format!("authenticated to {NQN} (sha512, ffdhe2048)")),
        "{}",
        t.log_text()
    );

    // The I/O queue authenticates too (unidirectional, no DH group).
    let (mut io, _) = connect(port, H1, 1, cntlid);
    let (status, _) = tcp::read_blocks(&mut io, 5, 0, 1, 4096);
    assert_eq!(
        status, AUTH_REQUIRED,
        "a read before the I/O queue authenticated"
    );
    let uni = host(H1, &k.k1, None);
    assert_eq!(uni.authenticate(&mut io, 2, &[1], &[0]), Outcome::Admitted);
    let (status, data) = tcp::read_blocks(&mut io, 6, 0, 1, 4096);
    assert_eq!((status, data.len()), (0, 4096));

    // A host without a key is not asked.
    t.rpc_ok(&[
        "nvmf_subsystem_add_host",
        NQN,
        "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a3",
    ]);
    assert!(!atr(
        port,
        "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a3"
    ));

    // Re-authentication on admitted queues: admitted again, I/O meanwhile.
    assert_eq!(uni.authenticate(&mut io, 3, &[2], &[1]), Outcome::Admitted);
    assert_eq!(tcp::read_blocks(&mut io, 7, 0, 1, 4096).0, 0);
    assert_eq!(
        h1.authenticate(&mut admin, 4, &[3], &[2]),
        Outcome::Admitted
    );
    assert_eq!(property_get(&mut admin), 0);
    assert!(
        t.log_text()
            .contains(&format!("re-authenticated to {NQN} (sha512, ffdhe3072)")),
        "{}",
        t.log_text()
    );
}

#[test]
fn wrong_keys_junk_and_a_flood_of_failures_never_admit_and_the_right_key_still_does() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let port = test_port();
    let k = keys();
    let t = target(dir.path(), port, &k);

    // A wrong key, another host's key, a wrong controller key.
    for (who, key, ctrlr, want) in [
        (H1, &k.k2, None, Outcome::Failure1(1)),
        (H2, &k.k1, None, Outcome::Failure1(1)),
        (H1, &k.k1, Some(&k.k2), Outcome::BadController),
    ] {
        let (mut s, _) = connect(port, who, 0, 0xFFFF);
        assert_eq!(
            host(who, key, ctrlr).authenticate(&mut s, 9, &[1], &[0]),
            want
        );
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "{who}: a refused queue stayed"
        );
    }
    let log = t.log_text();
    assert!(
        log.contains(&format!("host {H1} (127.0.0.1:")) && log.contains("does not match its key"),
        "{log}"
    );
    assert!(
        log.contains("the host refused the controller's response"),
        "{log}"
    );
    for s in [&k.k1, &k.c1, &k.k2] {
        let b64 = s.to_text().split(':').nth(2).unwrap().to_string();
        assert!(!log.contains(&b64), "a secret in the log");
    }

    // Junk, truncated, out-of-order and replayed messages: AUTH_Failure1.
    let h1 = host(H1, &k.k1, None);
    let replayed = {
        let (mut s, _) = connect(port, H1, 0, 0xFFFF);
        assert_eq!(host::send(&mut s, host::negotiate(5, &[1], &[0])), 0);
        let (_, challenge) = host::recv(&mut s, 4096);
        h1.reply(&challenge).0
    };
    let junk: Vec<Vec<u8>> = vec![
        vec![0xff; 3],
        host::negotiate(1, &[1], &[0])[..30].to_vec(),
        vec![1, 2, 0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![1, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
    ];
    for m in junk {
        let (mut s, _) = connect(port, H1, 0, 0xFFFF);
        assert_eq!(host::send(&mut s, m.clone()), 0, "{m:02x?}");
        let (status, answer) = host::recv(&mut s, 4096);
        assert_eq!((status, answer[1]), (0, 0xf1), "{m:02x?}: {answer:02x?}");
        assert!(closed_within(&mut s, Duration::from_secs(5)));
    }
    {
        // A reply from an earlier transaction (another challenge).
        let (mut s, _) = connect(port, H1, 0, 0xFFFF);
        assert_eq!(host::send(&mut s, host::negotiate(5, &[1], &[0])), 0);
        let _ = host::recv(&mut s, 4096);
        assert_eq!(host::send(&mut s, replayed), 0);
        let (_, answer) = host::recv(&mut s, 4096);
        assert_eq!(
            (answer[1], answer[7]),
            (0xf1, 1),
            "a replayed reply: {answer:02x?}"
        );
        // Wrong SECP or SPSP: the command itself is refused (Invalid Field).
        let (mut s, _) = connect(port, H1, 0, 0xFFFF);
        let m = host::negotiate(1, &[1], &[0]);
        let (status, _) = tcp::command(&mut s, host::send_sqe(12, m.len() as u32, 0xea, 1), m);
        assert_eq!(status & 0xff, 0x02, "SECP 0xEA");
        assert_eq!(property_get(&mut s), AUTH_REQUIRED);
    }

    // A bounded flood of failing attempts from one address.
    let started = Instant::now();
    let log_before = t.log_text().len();
    let wrong = host(H1, &k.k2, None);
    let mut attempts = 0;
    while attempts < 150 && started.elapsed() < Duration::from_secs(60) {
        let (mut s, _) = connect(port, H1, 0, 0xFFFF);
        assert_eq!(
            wrong.authenticate(&mut s, attempts, &[1], &[0]),
            Outcome::Failure1(1)
        );
        attempts += 1;
    }
    let logged = t.log_text().len() - log_before;
    eprintln!(
        "{attempts} failing attempts in {:?}; {logged} bytes logged",
        started.elapsed()
    );
    assert!(
        logged < 20_000,
        "{logged} bytes of log for {attempts} failures"
    );
    // The right key is admitted right after.
    let (mut s, _) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(
        h1.authenticate(&mut s, 77, &ALL_HASHES, &[0, 1, 2]),
        Outcome::Admitted
    );
    assert_eq!(property_get(&mut s), 0);
}

#[test]
fn keys_rotate_without_touching_connected_queues_and_save_config_keeps_them_by_name() {
    let _turn = beside_others();
    let dir = tempfile::tempdir().unwrap();
    let port = test_port();
    let k = keys();
    let mut t = target(dir.path(), port, &k);
    let (mut s, _) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(
        host(H1, &k.k1, None).authenticate(&mut s, 1, &[1], &[0]),
        Outcome::Admitted
    );

    t.jsonrpc_ok(
        "nvmf_subsystem_set_keys",
        Some(json!({"nqn": NQN, "host": H1, "dhchap_key": "k1b", "dhchap_ctrlr_key": "c1"})),
    );
    // The admitted queue goes on; the old key no longer authenticates.
    assert_eq!(property_get(&mut s), 0);
    let (mut old, _) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(
        host(H1, &k.k1, None).authenticate(&mut old, 2, &[1], &[0]),
        Outcome::Failure1(1)
    );
    let (mut new, _) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(
        host(H1, &k.k1b, None).authenticate(&mut new, 3, &[1], &[0]),
        Outcome::Admitted
    );
    let e = t.jsonrpc_err(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000ff", "dhchap_key": "k1"}),
    );
    assert!(e.contains("is not one of"), "{e}");

    // A key a host uses stays: save_config names it.
    let e = t.jsonrpc_err("keyring_file_remove_key", json!({"name": "k1b"}));
    assert!(e.contains("is used by 1 host(s)"), "{e}");

    // save_config names the keys, and the keys' files, never a secret.
    let config: serde_json::Value = serde_json::from_str(&t.rpc_ok(&["save_config"])).unwrap();
    let text = config.to_string();
    for s in [&k.k1, &k.c1, &k.k2, &k.k1b] {
        let b64 = s.to_text().split(':').nth(2).unwrap().to_string();
        assert!(!text.contains(&b64), "a secret in save_config");
    }
    let subsystems: Vec<&str> = config["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subsystem"].as_str().unwrap())
        .collect();
    let at = |name: &str| subsystems.iter().position(|s| *s == name).unwrap();
    assert!(at("keyring") < at("nvmf"), "{subsystems:?}");
    assert!(
        text.contains(r#""dhchap_key":"k1b""#) && text.contains(r#""dhchap_ctrlr_key":"c1""#),
        "{text}"
    );
    drop((s, old, new));
    t.stop();

    // Restarted from it: host 1 still needs k1b, host 2 k2.
    let json_path = dir.path().join("config.json");
    std::fs::write(&json_path, text).unwrap();
    let t2 = Target::start(&our_nvmf_tgt(), &["--json", json_path.to_str().unwrap()]);
    let (mut s, _) = connect(port, H1, 0, 0xFFFF);
    assert_eq!(property_get(&mut s), AUTH_REQUIRED);
    assert_eq!(
        host(H1, &k.k1b, None).authenticate(&mut s, 4, &[1], &[0]),
        Outcome::Admitted
    );
    let (mut s2, _) = connect(port, H2, 0, 0xFFFF);
    assert_eq!(
        host(H2, &k.k2, None).authenticate(&mut s2, 5, &[3], &[0, 1]),
        Outcome::Admitted
    );

    // Removing the host drops its keys: added again without, it is not asked.
    drop((s, s2));
    t2.rpc_ok(&["nvmf_subsystem_remove_host", NQN, H1]);
    t2.rpc_ok(&["nvmf_subsystem_add_host", NQN, H1]);
    assert!(!atr(port, H1));
}
