//! Requests no handler should see: params to methods that take none, and
//! oversized or unparsable input; each answered once, the target alive.

use super::*;

/// Sends raw bytes on a new connection and returns every JSON value the
/// target answers with before it closes (or goes quiet).
fn raw_exchange(sock: &Path, bytes: &[u8], answers: usize) -> Vec<Value> {
    let mut s = UnixStream::connect(sock).unwrap();
    let _ = s.write_all(bytes);
    read_answers(&mut s, answers).unwrap_or_else(|e| panic!("{e}"))
}

fn small_target() -> (Target, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let t = Target::start(&fuzz_target(), &[]);
    let pool = dir.path().join("pmdk0.pool");
    add_pmem_bdev(&t, &pool, "pmdk0");
    (t, dir)
}

fn assert_alive_and_answering(t: &mut Target) {
    std::thread::sleep(Duration::from_millis(300));
    let status = t.child.as_mut().unwrap().try_wait().unwrap();
    assert!(
        status.is_none(),
        "the target died ({status:?}):\n{}",
        t.log_text()
    );
    rpc_answers(&t.sock, Duration::from_secs(10)).unwrap();
}

/// vendor/patches/0011 and 0012: two 20.07 handlers sent an error response
/// for bad params and then went on with the request (a NULL bdev name into
/// strcmp; a second response on a freed request).
#[test]
fn handlers_that_refuse_params_answer_once_and_stop() {
    let _turn = beside_others();
    let (mut t, _dir) = small_target();
    for (method, params) in [
        ("bdev_pmem_delete", json!({"name": 5})),
        ("env_dpdk_get_mem_stats", json!([1, 2])),
        ("env_dpdk_get_mem_stats", json!({"x": 1})),
        // vendor/patches/0018: the base64 data and metadata lengths were
        // stored through a size_t pointer into uint32_t fields (UBSan stops
        // the target: scripts/test.sh --asan).
        (
            "send_nvme_cmd",
            json!({"name": "none", "cmd_type": "io", "data_direction": "h2c",
                   "cmdbuf": "A".repeat(86), "data": "AAAAAAAA", "metadata": "AAAA"}),
        ),
    ] {
        // The bad call, then a good one on the same connection: exactly one
        // error for the first, then the second's result.
        let mut body = request(1, &json!(method), Some(params.clone()), 9);
        body.extend(request(2, &json!("spdk_get_version"), None, 9));
        let answers = raw_exchange(&t.sock, &body, 2);
        assert_eq!(answers.len(), 2, "{method} {params}: {answers:?}");
        assert!(
            answers[0]["id"] == 1 && answers[0].get("error").is_some(),
            "{method} {params}: {answers:?}"
        );
        assert!(
            answers[1]["id"] == 2 && answers[1].get("result").is_some(),
            "{method} {params}: {answers:?}"
        );
        assert_alive_and_answering(&mut t);
    }
    assert_eq!(
        t.jsonrpc_ok("bdev_get_bdevs", Some(json!({"name": "pmdk0"})))[0]["name"],
        "pmdk0"
    );
    assert!(t.stop().success());
}

/// vendor/patches/0010: 20.07 closed the connection without a word on a
/// request larger than its 32 KiB buffer and on JSON it could not parse.
#[test]
fn oversized_and_unparsable_requests_get_an_error_answer() {
    let _turn = beside_others();
    let (mut t, _dir) = small_target();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{{"name":"{}"}}}}"#,
        "a".repeat(40_000)
    );
    let answers = raw_exchange(&t.sock, big.as_bytes(), 1);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["error"]["code"], -32600, "{answers:?}");
    assert!(
        answers[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{answers:?}"
    );
    for garbage in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"]}"[..],
        b"{\"id\":\xff}",
        b"]]]",
    ] {
        let answers = raw_exchange(&t.sock, garbage, 1);
        assert_eq!(
            answers.len(),
            1,
            "{:?}: {answers:?}",
            String::from_utf8_lossy(garbage)
        );
        assert_eq!(answers[0]["error"]["code"], -32700, "{answers:?}");
    }
    assert_alive_and_answering(&mut t);
    assert!(t.stop().success());
}
