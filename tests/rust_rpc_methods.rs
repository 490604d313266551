//! JSON-RPC methods defined in Rust through the library, served by SPDK's own
//! RPC server: sync and async replies, JSON-RPC errors, a panic turned into
//! an internal-error reply with the server still serving, the state mask
//! honoured, the methods listed by rpc_get_methods, and typed params whose
//! errors name the field's path.

pub mod common;
use common::*;

use serde_json::{json, Value};
use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::rpc::{self, RpcError, RpcStates};
use spdk_pmem::thread::{self, Thread};

#[test]
fn rust_methods_answer_through_spdks_rpc_server() {
    rpc::register_method("test_echo", RpcStates::Runtime, |params| match params {
        Some(p) => Ok(json!({ "echo": p })),
        None => Err(RpcError::invalid_params("test_echo needs params")),
    })
    .unwrap();
    rpc::register_method("test_panic", RpcStates::Runtime, |_| panic!("handler bug")).unwrap();
    rpc::register_method("test_startup_only", RpcStates::Startup, |_| Ok(json!(1))).unwrap();
    rpc::register_async_method("test_async_bdev_count", RpcStates::Runtime, |_| async {
        // Hop through the SPDK thread's message queue before answering.
        let (completer, done) = thread::completion::<u32>("test hop");
        Thread::current()
            .unwrap()
            .send(move || completer.complete(7))
            .map_err(RpcError::from)?;
        Ok(json!(done.await.map_err(RpcError::from)?))
    })
    .unwrap();
    rpc::register_typed_method("test_typed", RpcStates::Runtime, |p: TypedParams| {
        Ok(TypedReply {
            name: p.name,
            bdevs: p.items.into_iter().map(|i| i.bdev_name).collect(),
            count: p.count,
        })
    })
    .unwrap();
    rpc::register_typed_async_method(
        "test_typed_async",
        RpcStates::Runtime,
        |p: Option<Counter>| async move { Ok(p.map_or(0, |c| c.n) + 1) },
    )
    .unwrap();
    assert!(rpc::register_method("test_echo", RpcStates::Runtime, |_| Ok(Value::Null)).is_err());
    // SPDK's own methods and deprecated aliases are not taken over.
    for taken in ["bdev_get_bdevs", "get_bdevs"] {
        let err = rpc::register_method(taken, RpcStates::Runtime, |_| Ok(Value::Null)).unwrap_err();
        assert!(
            err.to_string().contains("SPDK has a method"),
            "{taken}: {err}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let (shm_id, _) = unique_ids();
    let results: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let collected = results.clone();
    let client_sock = sock.clone();
    let code = AppOptions::new("rust_rpc_methods")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            let app_thread = Thread::current().unwrap();
            std::thread::spawn(move || {
                let c = Target::attach(&client_sock);
                let calls = [
                    ("test_echo", Some(json!({"a": [1, 2]}))),
                    ("test_echo", None),
                    ("test_panic", Some(json!({}))),
                    ("test_echo", Some(json!(["after the panic"]))),
                    ("test_startup_only", None),
                    ("test_async_bdev_count", None),
                    ("rpc_get_methods", None),
                    (
                        "test_typed",
                        Some(json!({"name": "n", "items": [{"bdev_name": "pmdk0"}]})),
                    ),
                    (
                        "test_typed",
                        Some(json!({"name": "n", "items": [{"bdev_name": 5}]})),
                    ),
                    ("test_typed", Some(json!({"items": []}))),
                    (
                        "test_typed",
                        Some(json!({"name": "n", "items": [], "x": 1})),
                    ),
                    (
                        "test_typed",
                        Some(json!({"name": "n", "items": [], "count": -1})),
                    ),
                    ("test_typed", None),
                    ("test_typed_async", None),
                    ("test_typed_async", Some(json!({"n": 41}))),
                ];
                let mut out = Vec::new();
                for (method, params) in calls {
                    out.push(c.jsonrpc(method, params));
                }
                *collected.lock().unwrap() = out;
                app_thread
                    .send(|| app::stop(0).expect("the app is serving"))
                    .unwrap();
            });
        })
        .expect("valid options");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    assert_eq!(code, 0);
    let r = results.lock().unwrap().clone();
    assert_eq!(r.len(), 15, "{r:?}");
    assert_eq!(r[0]["result"], json!({"echo": {"a": [1, 2]}}));
    assert_eq!(r[1]["error"]["code"], -32602);
    assert_eq!(r[1]["error"]["message"], "test_echo needs params");
    assert_eq!(r[2]["error"]["code"], -32603);
    assert!(
        r[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("handler bug"),
        "{}",
        r[2]
    );
    assert_eq!(
        r[3]["result"],
        json!({"echo": ["after the panic"]}),
        "{}",
        r[3]
    );
    assert!(
        r[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("current state"),
        "{}",
        r[4]
    );
    assert_eq!(r[5]["result"], json!(7));
    let methods = r[6]["result"].as_array().unwrap();
    assert!(
        methods.contains(&json!("test_echo")) && methods.contains(&json!("test_async_bdev_count"))
    );

    // Typed params: a result, then -32602 naming the path and what was wrong.
    assert_eq!(
        r[7]["result"],
        json!({"name": "n", "bdevs": ["pmdk0"], "count": 0}),
        "{}",
        r[7]
    );
    let refused = |i: usize, words: &[&str]| {
        assert_eq!(r[i]["error"]["code"], -32602, "{}", r[i]);
        let message = r[i]["error"]["message"].as_str().unwrap();
        for w in words {
            assert!(message.contains(w), "{w:?} not in {message:?}");
        }
    };
    refused(
        8,
        &["test_typed: field items[0].bdev_name must be a string, not a number"],
    );
    refused(9, &["test_typed: missing required field name"]);
    refused(10, &["test_typed: unknown field x"]);
    refused(
        11,
        &["test_typed: field count must be a number from 0 to 4294967295, not -1"],
    );
    refused(12, &["test_typed: missing required field name"]);
    assert_eq!(r[13]["result"], json!(1), "{}", r[13]);
    assert_eq!(r[14]["result"], json!(42), "{}", r[14]);
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedParams {
    name: String,
    items: Vec<TypedItem>,
    #[serde(default)]
    count: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedItem {
    bdev_name: String,
}

#[derive(serde::Serialize)]
struct TypedReply {
    name: String,
    bdevs: Vec<String>,
    count: u32,
}

#[derive(serde::Deserialize)]
struct Counter {
    n: u32,
}
