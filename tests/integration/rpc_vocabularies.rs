//! One configuration (the article's, plus an allowed host) through each of the
//! three vocabularies: SPDK 20.07's rpc.py, today's SPDK client (PyPI `spdk`
//! 26.x, spdk-rpc) and the 2018 method names over raw JSON-RPC. Each gives the
//! same nvmf_get_subsystems, and SPDK's identify sees the namespace each time.
//!
//! The test also writes the compatibility table of docs/rpc-compatibility.md
//! from what it saw: `SPDK_PMEM_UPDATE_DOCS=1 cargo test --test
//! rpc_vocabularies` rewrites it; otherwise the page must match.

use crate::common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Output;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

/// Rows of the table: (method as SPDK 20.07 names it, cell per client).
type Table = BTreeMap<&'static str, [String; 3]>;
const RPC_PY: usize = 0;
const SPDK_RPC_26: usize = 1;
const NAMES_2018: usize = 2;

fn outcome(out: &Output) -> Result<String, String> {
    let text = output_text(out);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text)
    }
}

fn record(
    table: &mut Table,
    column: usize,
    method: &'static str,
    cell: &str,
    result: Result<String, String>,
) -> String {
    match result {
        Ok(text) => {
            table.entry(method).or_default()[column] = cell.to_string();
            text
        }
        Err(e) => {
            table.entry(method).or_default()[column] = "fails".to_string();
            panic!("{method} failed for column {column}: {e}");
        }
    }
}

/// The configuration as command lines: rpc.py 20.07 and spdk-rpc 26.x take
/// the same ones, pmem commands first.
fn cli_steps(pool: &str, port: &str) -> Vec<(&'static str, Vec<String>)> {
    let steps: [(&'static str, &[&str]); 12] = [
        (
            "bdev_pmem_create_pool",
            &["bdev_pmem_create_pool", pool, "32", "4096"],
        ),
        (
            "bdev_pmem_create",
            &["bdev_pmem_create", "-n", "pmdk0", pool],
        ),
        (
            "nvmf_create_transport",
            &["nvmf_create_transport", "-t", "TCP"],
        ),
        (
            "nvmf_create_subsystem",
            &["nvmf_create_subsystem", NQN, "-a", "-s", "SPDK0001"],
        ),
        (
            "nvmf_subsystem_add_listener",
            &[
                "nvmf_subsystem_add_listener",
                NQN,
                "-t",
                "TCP",
                "-a",
                "127.0.0.1",
                "-s",
                port,
            ],
        ),
        (
            "nvmf_subsystem_add_ns",
            &["nvmf_subsystem_add_ns", NQN, "pmdk0"],
        ),
        (
            "nvmf_subsystem_add_host",
            &["nvmf_subsystem_add_host", NQN, HOST],
        ),
        ("nvmf_get_subsystems", &["nvmf_get_subsystems"]),
        ("bdev_get_bdevs", &["bdev_get_bdevs"]),
        ("save_config", &["save_config"]),
        ("rpc_get_methods", &["rpc_get_methods"]),
        ("spdk_get_version", &["spdk_get_version"]),
    ];
    steps
        .iter()
        .map(|(m, args)| (*m, args.iter().map(|a| a.to_string()).collect()))
        .collect()
}

fn finish(t: &mut Target, port: u16) -> (Value, String) {
    let id = identify(NQN, port);
    let subsystems = normalised_subsystems(t.rpc_json(&["nvmf_get_subsystems"]));
    assert!(t.stop().success(), "{}", t.log_text());
    (subsystems, id)
}

fn via_rpc_py(table: &mut Table) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let pool = pool.to_str().unwrap();
    let port = test_port();
    let ports = port.to_string();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    let steps = cli_steps(pool, &ports);
    for (method, args) in &steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = outcome(&t.rpc(&args));
        record(table, RPC_PY, method, "yes", result);
    }
    finish(&mut t, port)
}

fn via_spdk_rpc_26(table: &mut Table) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let pool = pool.to_str().unwrap();
    let port = test_port();
    let ports = port.to_string();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);

    // spdk-rpc 26.x has no pmem commands (SPDK dropped the pmem bdev after
    // 20.07); its own JSON-RPC client sends them.
    let python = spdk_rpc_26().with_file_name("python3");
    let call = |method: &str, params: Value| {
        let script = format!(
            "from spdk.rpc.client import JSONRPCClient; import json, sys; \
             print(json.dumps(JSONRPCClient(sys.argv[1]).call({method:?}, json.loads(sys.argv[2]))))"
        );
        crate::common::command(&python)
            .args(["-c", &script, t.sock.to_str().unwrap(), &params.to_string()])
            .output()
            .unwrap()
    };
    let result = outcome(&call(
        "bdev_pmem_create_pool",
        json!({"pmem_file": pool, "num_blocks": 8192, "block_size": 4096}),
    ));
    record(
        table,
        SPDK_RPC_26,
        "bdev_pmem_create_pool",
        "client.call (no command)",
        result,
    );
    let result = outcome(&call(
        "bdev_pmem_create",
        json!({"pmem_file": pool, "name": "pmdk0"}),
    ));
    record(
        table,
        SPDK_RPC_26,
        "bdev_pmem_create",
        "client.call (no command)",
        result,
    );

    // The same commands as rpc.py's, less the pmem ones done above.
    let steps = cli_steps(pool, &ports).split_off(2);
    for (method, args) in &steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The cell says whether 26.x sent default-valued fields 20.07 lacks,
        // which the target dropped (its debug log shows every request sent).
        let out = t.rpc26(&[&["--verbose", "DEBUG"], &args[..]].concat());
        let sent = String::from_utf8_lossy(&out.stderr).into_owned();
        let extra = [
            "ana_reporting",
            "secure_channel",
            "no_auto_visible",
            "zcopy",
            "with_batches",
            "passthrough",
        ]
        .iter()
        .any(|f| sent.contains(&format!("\"{f}\"")));
        let cell = if extra {
            "yes (newer defaults dropped)"
        } else {
            "yes"
        };
        let result = outcome(&out);
        record(table, SPDK_RPC_26, method, cell, result);
    }
    finish(&mut t, port)
}

fn via_2018_names(table: &mut Table) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let pool = pool.to_str().unwrap();
    let port = test_port();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    fn call(
        t: &Target,
        table: &mut Table,
        method: &'static str,
        as_2018: &'static str,
        params: Option<Value>,
    ) {
        let response = t.jsonrpc(as_2018, params);
        let result = match response.get("error") {
            None => Ok(response["result"].to_string()),
            Some(e) => Err(e.to_string()),
        };
        record(table, NAMES_2018, method, as_2018, result);
    }
    call(
        &t,
        table,
        "bdev_pmem_create_pool",
        "create_pmem_pool",
        Some(json!({"pmem_file": pool, "num_blocks": 8192, "block_size": 4096})),
    );
    call(
        &t,
        table,
        "bdev_pmem_create",
        "construct_pmem_bdev",
        Some(json!({"pmem_file": pool, "name": "pmdk0"})),
    );
    // One 2018 call covers transport, subsystem, listener, namespace and host.
    call(
        &t,
        table,
        "nvmf_create_subsystem",
        "construct_nvmf_subsystem",
        Some(json!({
            "nqn": NQN,
            "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "adrfam": "IPv4"}],
            "hosts": [HOST],
            "allow_any_host": true,
            "serial_number": "SPDK0001",
            "namespaces": [{"bdev_name": "pmdk0", "nsid": 1}],
            "max_namespaces": 0
        })),
    );
    for covered in [
        "nvmf_create_transport",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_add_host",
    ] {
        table.entry(covered).or_default()[NAMES_2018] = "in construct_nvmf_subsystem".to_string();
    }
    call(
        &t,
        table,
        "nvmf_get_subsystems",
        "get_nvmf_subsystems",
        None,
    );
    call(&t, table, "bdev_get_bdevs", "get_bdevs", None);
    // 2018's rpc.py built save_config from these two calls, as today's does.
    let subsystems = t.jsonrpc_ok("get_subsystems", None);
    let mut result = Ok(String::new());
    for s in subsystems.as_array().unwrap() {
        let response = t.jsonrpc(
            "get_subsystem_config",
            Some(json!({"name": s["subsystem"]})),
        );
        if let Some(e) = response.get("error") {
            result = Err(e.to_string());
        }
    }
    record(
        table,
        NAMES_2018,
        "save_config",
        "get_subsystems + get_subsystem_config",
        result,
    );
    call(&t, table, "rpc_get_methods", "get_rpc_methods", None);
    call(&t, table, "spdk_get_version", "get_spdk_version", None);
    finish(&mut t, port)
}

fn render(table: &Table) -> String {
    let mut out = String::from(
        "| method (SPDK 20.07 name) | rpc.py 20.07 | spdk-rpc 26.x (PyPI `spdk`) | 2018 names (raw JSON-RPC) |\n|---|---|---|---|\n",
    );
    for (method, cells) in table {
        let cell = |s: &String| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.clone()
            }
        };
        out.push_str(&format!(
            "| `{method}` | {} | {} | {} |\n",
            cell(&cells[0]),
            cell(&cells[1]),
            cell(&cells[2])
        ));
    }
    out
}

#[test]
fn three_vocabularies_configure_the_same_target() {
    let _turn = beside_others();
    let mut table = Table::new();
    let (a, id_a) = via_rpc_py(&mut table);
    let (b, id_b) = via_spdk_rpc_26(&mut table);
    let (c, id_c) = via_2018_names(&mut table);
    assert_eq!(a, b, "rpc.py 20.07 and spdk-rpc 26.x differ");
    assert_eq!(a, c, "rpc.py 20.07 and the 2018 names differ");
    let ours = a
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == NQN)
        .unwrap()
        .clone();
    assert_eq!(ours["serial_number"], "SPDK0001");
    assert_eq!(ours["hosts"][0]["nqn"], HOST);
    assert_eq!(ours["namespaces"][0]["bdev_name"], "pmdk0");
    for id in [id_a, id_b, id_c] {
        assert_eq!(identify_field(&id, "Serial Number"), "SPDK0001");
        assert!(id.contains("Namespace ID:1"), "{id}");
    }

    let generated = render(&table);
    let page_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rpc-compatibility.md");
    let page = std::fs::read_to_string(&page_path).unwrap();
    let (begin, end) = ("<!-- compat-table:begin -->\n", "<!-- compat-table:end -->");
    let start = page
        .find(begin)
        .expect("docs/rpc-compatibility.md has the compat-table markers")
        + begin.len();
    let stop = page
        .find(end)
        .expect("docs/rpc-compatibility.md has the compat-table end marker");
    if std::env::var_os("SPDK_PMEM_UPDATE_DOCS").is_some() {
        let updated = format!("{}{}{}", &page[..start], generated, &page[stop..]);
        std::fs::write(&page_path, updated).unwrap();
    } else {
        assert_eq!(
            &page[start..stop],
            generated,
            "the compatibility table of docs/rpc-compatibility.md is stale: run SPDK_PMEM_UPDATE_DOCS=1 cargo test --test integration rpc_vocabularies::"
        );
    }
}
