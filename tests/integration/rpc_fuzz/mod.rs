//! Hostile JSON-RPC clients against the real target: every method that
//! rpc_get_methods lists (SPDK's, the 2018 aliases and the Rust-served ones)
//! called with invalid parameters, broken envelopes and broken JSON, split
//! across many writes or packed several to a write, from 8 clients at once
//! while a ninth makes valid calls. Every request gets a JSON-RPC answer (or,
//! for bytes that are not JSON, an error or a closed connection), the target
//! never dies or stalls, and `save_config` is the same before and after:
//! nothing was half-created.
//!
//! Each call is invalid by construction: its params are not an object, or
//! they name a field 20.07 does not have (with a value other than `false`,
//! which the target drops as a newer client's feature left off), or one of
//! the method's own fields holds a fractional number, which no SPDK decoder
//! (string, integer, bool, object, array) accepts. A few 20.07 methods never
//! look at their params; their successes are listed, and the configuration
//! check shows they changed nothing.
//!
//! `SPDK_PMEM_RPC_FUZZ_SEED`, `SPDK_PMEM_RPC_FUZZ_ROUNDS` and
//! `SPDK_PMEM_FUZZ_TARGET` (`ours`, `c` or a path) set a longer run
//! (scripts/fuzz.sh).

use crate::common;

use common::rng::Rng;
use common::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod refusals;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Parameter names of each method, as 20.07's decoders declare them.
fn known_params() -> HashMap<String, Option<Vec<String>>> {
    serde_json::from_str(spdk_pmem::sys::RPC_PARAMS_JSON).expect("the build-time parameter table")
}

/// A JSON value of any type, often one a parser or decoder mishandles.
fn any_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 9 } else { 11 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => json!(rng.interesting(64)),
        3 => json!(-(rng.interesting(63) as i64)),
        4 => json!(rng.next_u64() as f64 * 1e290),
        5 => json!(""),
        6 => Value::String("A".repeat(rng.range(1, 70_000) as usize)),
        7 => Value::String(
            [
                "\u{0}",
                "\u{ffff}",
                "%s%n%x",
                "../../../../etc/passwd",
                "nqn.",
                "é\u{1F600}",
            ][rng.below(6) as usize]
                .repeat(rng.range(1, 300) as usize),
        ),
        8 => json!(rng.next_u64() as u32),
        9 => Value::Array(
            (0..rng.below(5))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for i in 0..rng.below(5) {
                m.insert(format!("k{i}"), any_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// The value of a field 20.07 does not have: anything but `false`, which
/// the target drops as a newer client's feature left off (src/rpc_compat.rs).
fn unknown_field_value(rng: &mut Rng) -> Value {
    match any_value(rng, 0) {
        Value::Bool(false) => Value::Bool(true),
        v => v,
    }
}

/// A fractional number: no SPDK decoder accepts it for any field type.
fn never_valid(rng: &mut Rng) -> Value {
    json!(0.5 + rng.below(1000) as f64)
}

/// Params that make `method` fail whatever it is.
fn invalid_params(
    rng: &mut Rng,
    method: &str,
    params: &HashMap<String, Option<Vec<String>>>,
) -> Value {
    let fields = params.get(method).cloned().flatten().unwrap_or_default();
    match rng.below(10) {
        // Not an object.
        0 => json!([1, "two", null]),
        1 => {
            if rng.chance(50) {
                json!("params")
            } else {
                json!(42)
            }
        }
        2 => json!(true),
        // Every field it knows, plus one it does not.
        3 | 4 => {
            let mut m: Map<String, Value> = fields
                .iter()
                .map(|f| (f.clone(), any_value(rng, 0)))
                .collect();
            m.insert("spdk_pmem_fuzz_unknown".into(), unknown_field_value(rng));
            Value::Object(m)
        }
        // Some of its fields, one of them unacceptable.
        _ if !fields.is_empty() => {
            let mut m = Map::new();
            for f in &fields {
                if rng.chance(60) {
                    m.insert(f.clone(), any_value(rng, 0));
                }
            }
            let bad = rng.pick(&fields).clone();
            m.insert(bad, never_valid(rng));
            Value::Object(m)
        }
        // A method without parameters given some.
        _ => json!({ "spdk_pmem_fuzz_unknown": unknown_field_value(rng) }),
    }
}

/// What one client sends on one connection.
enum Case {
    /// Requests (id → body) written as one buffer, in `chunks` pieces.
    Requests {
        bodies: Vec<(u64, Vec<u8>)>,
        chunks: usize,
    },
    /// Bytes that are not (all) JSON-RPC: the connection may answer with
    /// errors or close; it must not hang.
    Garbage(Vec<u8>),
}

fn request(id: u64, method: &Value, params: Option<Value>, envelope: u64) -> Vec<u8> {
    let mut r = json!({"jsonrpc": "2.0", "id": id, "method": method});
    if let Some(p) = params {
        r["params"] = p;
    }
    match envelope {
        0 => r["jsonrpc"] = json!("1.0"),
        1 => {
            r.as_object_mut().unwrap().remove("jsonrpc");
        }
        2 => r["extra_member"] = json!({"x": [1, 2]}),
        _ => {}
    }
    serde_json::to_vec(&r).unwrap()
}

fn case(
    rng: &mut Rng,
    methods: &[String],
    params: &HashMap<String, Option<Vec<String>>>,
    next_id: &AtomicU64,
) -> Case {
    let pick = |rng: &mut Rng| -> String { rng.pick(methods).clone() };
    match rng.below(20) {
        // Broken JSON: truncated, invalid UTF-8, deep nesting, huge.
        0 => {
            let m = pick(rng);
            let p = invalid_params(rng, &m, params);
            let body = request(1, &json!(m), Some(p), 9);
            let cut = rng.range(1, body.len() as u64 - 1) as usize;
            Case::Garbage(body[..cut].to_vec())
        }
        1 => {
            let mut b =
                br#"{"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{"name":""#.to_vec();
            b.extend([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
            b.extend(br#""}}"#);
            Case::Garbage(b)
        }
        2 => {
            let depth = rng.range(65, 20_000) as usize;
            let mut b =
                br#"{"jsonrpc":"2.0","id":1,"method":"spdk_get_version","params":"#.to_vec();
            b.extend(std::iter::repeat_n(b'[', depth));
            b.extend(std::iter::repeat_n(b']', depth));
            b.push(b'}');
            Case::Garbage(b)
        }
        3 => {
            let n = rng.range(1, 4096) as usize;
            Case::Garbage(rng.bytes(n))
        }
        4 => Case::Garbage(
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"n":1{}}}}}"#,
                "0".repeat(rng.range(400, 5000) as usize)
            )
            .into_bytes(),
        ),
        // Envelopes: no method, method not a string, id of every kind.
        5 => {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let method = [
                json!(null),
                json!(7),
                json!(["a"]),
                json!({"m": 1}),
                json!(""),
            ][rng.below(5) as usize]
                .clone();
            Case::Requests {
                bodies: vec![(id, request(id, &method, Some(json!({})), 9))],
                chunks: 1,
            }
        }
        6 => {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let name = format!("no_such_method_{}", "x".repeat(rng.below(3000) as usize));
            Case::Requests {
                bodies: vec![(id, request(id, &json!(name), None, 9))],
                chunks: 1,
            }
        }
        // Real methods, invalid params, some envelopes odd; several per
        // write or one dribbled out a few bytes at a time.
        _ => {
            let n = if rng.chance(30) { rng.range(2, 6) } else { 1 };
            let bodies = (0..n)
                .map(|_| {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let m = pick(rng);
                    let p = invalid_params(rng, &m, params);
                    (id, request(id, &json!(m), Some(p), rng.below(12)))
                })
                .collect();
            let chunks = if rng.chance(20) {
                rng.range(2, 64) as usize
            } else {
                1
            };
            Case::Requests { bodies, chunks }
        }
    }
}

/// Reads JSON values until `want` answers arrived or the peer closed.
fn read_answers(s: &mut UnixStream, want: usize) -> Result<Vec<Value>, String> {
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let mut buf = Vec::new();
    let mut values = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // Take every whole value off the front of the buffer.
        loop {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    values.push(v);
                    buf.drain(..used);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    return Err(format!(
                        "the target sent something that is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    ))
                }
                None => break,
            }
        }
        if values.len() >= want {
            return Ok(values);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(values),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "no answer within {ANSWER_WITHIN:?} ({} of {want} came)",
                    values.len()
                ))
            }
            Err(_) => return Ok(values),
        }
    }
}

/// Runs one case; Err describes what a correct server would not have done.
fn run_case(sock: &Path, c: &Case, lax: &Mutex<BTreeSet<String>>) -> Result<u64, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(ANSWER_WITHIN)).unwrap();
    match c {
        Case::Garbage(bytes) => {
            // The server may close early; a failed write is an answer too.
            let _ = s.write_all(bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let answers = read_answers(&mut s, usize::MAX)?;
            for a in &answers {
                if a.get("result").is_some() {
                    return Err(format!(
                        "bytes that are not a valid request got a result: {a}"
                    ));
                }
            }
            Ok(1)
        }
        Case::Requests { bodies, chunks } => {
            let all: Vec<u8> = bodies.iter().flat_map(|(_, b)| b.clone()).collect();
            let piece = all.len().div_ceil(*chunks).max(1);
            for p in all.chunks(piece) {
                // A server refusing a request too large for it answers and
                // closes while the rest is still being written.
                if s.write_all(p).is_err() {
                    break;
                }
                if *chunks > 1 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            let answers = read_answers(&mut s, bodies.len())?;
            // Requests whose envelope is broken may be answered with id null
            // (and the connection then closed), so count answers, not ids.
            if answers.is_empty() {
                return Err(format!(
                    "no answer to {}",
                    String::from_utf8_lossy(&all[..all.len().min(300)])
                ));
            }
            // Some 20.07 methods never look at their params: a success is
            // noted (the configuration check at the end sees any effect).
            for a in answers.iter().filter(|a| a.get("error").is_none()) {
                let req = bodies
                    .iter()
                    .find(|(id, _)| a["id"] == json!(id))
                    .and_then(|(_, b)| serde_json::from_slice::<Value>(b).ok())
                    .ok_or_else(|| format!("a result for no request of ours: {a}"))?;
                let method = req["method"].as_str().unwrap_or_default().to_string();
                if std::env::var_os("SPDK_PMEM_RPC_FUZZ_VERBOSE").is_some() {
                    eprintln!(
                        "succeeded: {}",
                        &req.to_string()[..req.to_string().len().min(300)]
                    );
                }
                lax.lock().unwrap().insert(method);
            }
            Ok(bodies.len() as u64)
        }
    }
}

/// The whole configuration, as rpc.py's save_config assembles it.
fn config_of(t: &Target) -> Value {
    t.rpc_json(&["save_config"])
}

#[test]
fn invalid_rpc_calls_from_many_clients_are_answered_and_change_nothing() {
    let _turn = beside_others();
    let seed = env_u64(
        "SPDK_PMEM_RPC_FUZZ_SEED",
        Rng::derive(0x59c, std::process::id() as u64) % 1_000_000,
    );
    let rounds = env_u64("SPDK_PMEM_RPC_FUZZ_ROUNDS", 8);
    eprintln!("JSON-RPC fuzzing with seed {seed} (SPDK_PMEM_RPC_FUZZ_SEED={seed} replays it)");
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pmdk0.pool");
    let port = test_port();
    let mut t = Target::start(&fuzz_target(), &[]);
    configure_article(&t, &pool, NQN, port);

    let listed = t.jsonrpc_ok("rpc_get_methods", Some(json!({"include_aliases": true})));
    let methods = method_names(&listed);
    assert!(methods.len() > 100, "{methods:?}");
    let params = known_params();
    let before = config_of(&t);

    // Every listed method gets `rounds` invalid calls of its own, plus the
    // random cases; 8 clients share them.
    let next_id = AtomicU64::new(1000);
    let mut rng = Rng::new(seed);
    let mut cases: Vec<Case> = Vec::new();
    for _ in 0..rounds {
        for m in &methods {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let p = invalid_params(&mut rng, m, &params);
            cases.push(Case::Requests {
                bodies: vec![(id, request(id, &json!(m), Some(p), 9))],
                chunks: 1,
            });
        }
        for _ in 0..methods.len() {
            cases.push(case(&mut rng, &methods, &params, &next_id));
        }
    }
    let total = cases.len();
    let queue = Mutex::new(cases);
    let calls = AtomicU64::new(0);
    let valid_calls = AtomicU64::new(0);
    let lax: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| loop {
                    if failure.lock().unwrap().is_some() {
                        return;
                    }
                    let Some(c) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    match run_case(&t.sock, &c, &lax) {
                        Ok(n) => {
                            calls.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        // A well-behaved client at the same time: its calls must succeed.
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) && failure.lock().unwrap().is_none() {
                for m in ["spdk_get_version", "bdev_get_bdevs", "nvmf_get_subsystems"] {
                    let answer = rpc_call(&t.sock, m);
                    match answer {
                        Ok(v) if v.get("result").is_some() => {
                            valid_calls.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failure.lock().unwrap().get_or_insert(format!(
                                "a valid {m} call failed while others fuzzed: {other:?}"
                            ));
                        }
                    }
                }
            }
        });
        for c in clients {
            c.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    let alive = t.child.as_mut().unwrap().try_wait().unwrap();
    if let Some(e) = failure.into_inner().unwrap() {
        panic!(
            "seed {seed}: {e}\ntarget: {alive:?}\n{}",
            t.log_text()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "JSON-RPC fuzzing: {} methods, {total} cases, {} invalid requests answered, {} valid calls alongside, {:.1} s",
        methods.len(),
        calls.load(Ordering::Relaxed),
        valid_calls.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "methods that ignored invalid params: {:?}",
        lax.lock().unwrap()
    );
    assert!(alive.is_none(), "the target exited: {alive:?}");
    rpc_answers(&t.sock, Duration::from_secs(10)).unwrap();
    assert_eq!(
        config_of(&t),
        before,
        "invalid calls changed the configuration"
    );
    // The fabric still works.
    let id = identify(NQN, port);
    assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
    assert!(t.stop().success(), "{}", t.log_text());
}

/// One JSON-RPC call without params on a fresh connection.
fn rpc_call(sock: &Path, method: &str) -> Result<Value, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        &serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method})).unwrap(),
    )
    .map_err(|e| format!("write: {e}"))?;
    read_answers(&mut s, 1)?
        .pop()
        .ok_or_else(|| "no answer".to_string())
}
