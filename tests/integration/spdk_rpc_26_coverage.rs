//! Today's SPDK client against every method our target serves: for each
//! spdk-rpc 26.x command whose method 20.07 has, the params it sends with only
//! its required arguments pass our filter into exactly what 20.07's decoder
//! accepts; a value 20.07 cannot honour is refused by name. The read-only
//! methods are also called for real with those params.

use crate::common;
use common::*;
use serde_json::Value;
use spdk_pmem::rpc::Filtered;
use spdk_pmem::rpc_compat;

fn defaults_26(methods: &Value) -> serde_json::Map<String, Value> {
    let python = spdk_rpc_26().with_file_name("python3");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools/spdk26_default_params.py");
    let out = crate::common::command(python)
        .arg(script)
        .arg(methods.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn every_method_spdk_rpc_26_sends_reaches_2007_in_a_form_it_accepts() {
    let _turn = beside_others();
    let mut t = Target::start(&our_nvmf_tgt(), &[]);
    let methods = t.rpc_json(&["rpc_get_methods"]);
    let sent = defaults_26(&methods);
    assert!(
        sent.len() > 80,
        "only {} methods captured from spdk-rpc 26.x",
        sent.len()
    );

    let mut adapted = Vec::new();
    let mut refused = Vec::new();
    for (method, params) in &sent {
        let params = params.as_object().unwrap();
        let outcome = rpc_compat::filter(method, Some(&Value::Object(params.clone())));
        let after = match outcome {
            Filtered::Unchanged => params.clone(),
            Filtered::Rewritten(v) => {
                adapted.push(method.clone());
                v.as_object().unwrap().clone()
            }
            Filtered::Refused(e) => {
                // Only a value 20.07 cannot honour may be refused, by name.
                let known = rpc_compat::accepted_by_2007(method).unwrap_or_default();
                let culprit = params
                    .iter()
                    .find(|(k, v)| !known.contains(k) && **v != Value::Bool(false))
                    .unwrap_or_else(|| {
                        panic!("{method} {params:?} refused without cause: {}", e.message)
                    });
                assert!(
                    e.message.contains(culprit.0.as_str()),
                    "{method}: {} does not name {}",
                    e.message,
                    culprit.0
                );
                refused.push(format!("{method}.{}", culprit.0));
                continue;
            }
        };
        if let Some(known) = rpc_compat::accepted_by_2007(method) {
            for key in after.keys() {
                assert!(
                    known.contains(key),
                    "{method}: {key} would reach 20.07's decoder, which lacks it"
                );
            }
        }
    }
    eprintln!(
        "spdk-rpc 26.x: {} methods, adapted: {adapted:?}, refused: {refused:?}",
        sent.len()
    );
    for must in [
        "nvmf_create_transport",
        "nvmf_create_subsystem",
        "nvmf_subsystem_add_listener",
        "bdev_malloc_create",
        "bdev_aio_create",
    ] {
        assert!(
            adapted.iter().any(|m| m == must),
            "{must} was not adapted: {adapted:?}"
        );
    }

    // The read-only ones, for real: no decoder error from 20.07.
    for (method, params) in &sent {
        let read_only = method.contains("_get_") || method.starts_with("get_");
        let needs_object = params.as_object().unwrap().values().any(|v| v.is_string());
        if !read_only || needs_object {
            continue;
        }
        let params = if params.as_object().unwrap().is_empty() {
            None
        } else {
            Some(params.clone())
        };
        let response = t.jsonrpc(method, params);
        if let Some(e) = response.get("error") {
            let m = e["message"].as_str().unwrap_or_default();
            assert!(
                !m.contains("Invalid parameters")
                    && !m.contains("decode")
                    && !m.contains("Invalid arguments"),
                "{method}: {e}"
            );
        }
    }
    assert!(t.stop().success());
}
