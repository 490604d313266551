//! Newer SPDK clients against a 20.07 target: the PyPI package `spdk` 26.x
//! (`spdk-rpc`) sends fields 20.07 does not know, with their default values
//! (`ana_reporting: false`, `secure_channel: false`,
//! `namespace.no_auto_visible: false`, `md_interleave: false`, ...), and
//! 20.07's decoders refuse the whole request as "Invalid parameters".
//!
//! [`filter`] checks every request against the parameter names 20.07's own
//! decoders accept (extracted from its source at build time,
//! `spdk_sys::RPC_PARAMS_JSON`). A field 20.07 does not know is dropped when
//! its value asks for what 20.07 does anyway: `false` (a newer feature left
//! off) or a listed default such as `min_cntlid: 1`; any other value is
//! refused with an error naming the field. For the methods of this project
//! (nvmf, pmem, framework) typed schemas also name a field of the wrong type, a
//! missing required field or an unknown field, where 20.07 would say only
//! "Invalid parameters"; they cover nested objects (`namespace.no_auto_visible`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::rpc::{Filtered, RpcError};

#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    Num,
    Bool,
    Obj(&'static [Field]),
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}
const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

use Ty::{Bool, Num, Obj, Str};

const LISTEN_ADDRESS: &[Field] = &[
    opt("transport", Str),
    opt("trtype", Str),
    opt("adrfam", Str),
    req("traddr", Str),
    opt("trsvcid", Str),
];

const NAMESPACE: &[Field] = &[
    opt("nsid", Num),
    req("bdev_name", Str),
    opt("ptpl_file", Str),
    opt("nguid", Str),
    opt("eui64", Str),
    opt("uuid", Str),
];

/// 20.07's parameters per method (from its JSON decoders), typed, and the
/// newer fields whose non-`false` default means "as 20.07 does".
struct Schema {
    methods: &'static [&'static str],
    fields: &'static [Field],
    newer: fn() -> Vec<(&'static str, Value)>,
}

fn schemas() -> &'static [Schema] {
    const SCHEMAS: &[Schema] = &[
        Schema {
            methods: &["nvmf_create_transport"],
            fields: &[
                req("trtype", Str),
                opt("tgt_name", Str),
                opt("max_queue_depth", Num),
                opt("max_qpairs_per_ctrlr", Num),
                opt("max_io_qpairs_per_ctrlr", Num),
                opt("in_capsule_data_size", Num),
                opt("max_io_size", Num),
                opt("io_unit_size", Num),
                opt("max_aq_depth", Num),
                opt("num_shared_buffers", Num),
                opt("buf_cache_size", Num),
                opt("max_srq_depth", Num),
                opt("no_srq", Bool),
                opt("c2h_success", Bool),
                opt("dif_insert_or_strip", Bool),
                opt("sock_priority", Num),
                opt("acceptor_backlog", Num),
                opt("abort_timeout_sec", Num),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_create_subsystem", "nvmf_subsystem_create"],
            fields: &[
                req("nqn", Str),
                opt("serial_number", Str),
                opt("model_number", Str),
                opt("tgt_name", Str),
                opt("max_namespaces", Num),
                opt("allow_any_host", Bool),
            ],
            newer: || vec![("min_cntlid", json!(1)), ("max_cntlid", json!(0xffef))],
        },
        Schema {
            methods: &[
                "nvmf_subsystem_add_listener",
                "nvmf_subsystem_remove_listener",
            ],
            fields: &[
                req("nqn", Str),
                req("listen_address", Obj(LISTEN_ADDRESS)),
                opt("tgt_name", Str),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_subsystem_add_ns"],
            fields: &[
                req("nqn", Str),
                req("namespace", Obj(NAMESPACE)),
                opt("tgt_name", Str),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_subsystem_remove_ns"],
            fields: &[req("nqn", Str), req("nsid", Num), opt("tgt_name", Str)],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_subsystem_add_host", "nvmf_subsystem_remove_host"],
            fields: &[req("nqn", Str), req("host", Str), opt("tgt_name", Str)],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_subsystem_allow_any_host"],
            fields: &[
                req("nqn", Str),
                req("allow_any_host", Bool),
                opt("tgt_name", Str),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["nvmf_delete_subsystem", "delete_nvmf_subsystem"],
            fields: &[req("nqn", Str), opt("tgt_name", Str)],
            newer: Vec::new,
        },
        Schema {
            methods: &["bdev_malloc_create", "construct_malloc_bdev"],
            fields: &[
                opt("name", Str),
                opt("uuid", Str),
                req("num_blocks", Num),
                req("block_size", Num),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["bdev_pmem_create_pool", "create_pmem_pool"],
            fields: &[
                req("pmem_file", Str),
                req("num_blocks", Num),
                req("block_size", Num),
            ],
            newer: Vec::new,
        },
        Schema {
            methods: &["bdev_pmem_create", "construct_pmem_bdev"],
            fields: &[req("pmem_file", Str), req("name", Str)],
            newer: Vec::new,
        },
        Schema {
            methods: &["framework_get_config"],
            fields: &[req("name", Str)],
            newer: Vec::new,
        },
        Schema {
            methods: &["rpc_get_methods", "get_rpc_methods"],
            fields: &[opt("current", Bool), opt("include_aliases", Bool)],
            newer: Vec::new,
        },
    ];
    SCHEMAS
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_object(
    method: &str,
    prefix: &str,
    object: &mut Map<String, Value>,
    fields: &[Field],
    newer: &[(&str, Value)],
    changed: &mut bool,
) -> Result<(), RpcError> {
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        let path = format!("{prefix}{key}");
        if let Some(field) = fields.iter().find(|f| f.name == key) {
            let value = object.get_mut(&key).expect("key listed above");
            let ok = match field.ty {
                Str => value.is_string(),
                Num => value.is_number(),
                Bool => value.is_boolean(),
                Obj(inner) => match value.as_object_mut() {
                    Some(o) => {
                        check_object(method, &format!("{path}."), o, inner, newer, changed)?;
                        true
                    }
                    None => false,
                },
            };
            if !ok {
                let want = match field.ty {
                    Str => "a string",
                    Num => "a number",
                    Bool => "a boolean",
                    Obj(_) => "an object",
                };
                return Err(RpcError::invalid_params(format!(
                    "{method}: field {path} must be {want}, not {}",
                    type_name(value)
                )));
            }
        } else {
            drop_newer_field(method, &path, object, &key, newer)?;
            *changed = true;
        }
    }
    for field in fields.iter().filter(|f| f.required) {
        if !object.contains_key(field.name) {
            return Err(RpcError::invalid_params(format!(
                "{method}: missing required field {prefix}{}",
                field.name
            )));
        }
    }
    Ok(())
}

/// A field 20.07's decoder lacks: dropped if its value asks for what 20.07
/// does anyway (`false`, or the listed default), refused by name otherwise.
fn drop_newer_field(
    method: &str,
    path: &str,
    object: &mut Map<String, Value>,
    key: &str,
    newer: &[(&str, Value)],
) -> Result<(), RpcError> {
    let value = &object[key];
    let listed = newer.iter().find(|(p, _)| *p == path).map(|(_, v)| v);
    if *value == Value::Bool(false) || listed == Some(value) {
        object.remove(key);
        return Ok(());
    }
    let hint = match listed {
        Some(default) => format!("omit it or send {default}"),
        None => "omit it".to_string(),
    };
    if listed.is_some() || value.is_boolean() {
        Err(RpcError::invalid_params(format!(
            "{method}: field {path}={value} is not supported by this target (SPDK 20.07); {hint}"
        )))
    } else {
        Err(RpcError::invalid_params(format!(
            "{method}: unknown field {path} (SPDK 20.07 does not have it); {hint}"
        )))
    }
}

/// Whether SPDK's own source registers a method (or alias) of this name.
pub fn spdk_has_method(method: &str) -> bool {
    params_2007().contains_key(method)
}

/// The parameter names 20.07's decoder for `method` accepts, if it has one.
pub fn accepted_by_2007(method: &str) -> Option<&'static [String]> {
    params_2007().get(method)?.as_deref()
}

/// Parameter names per method as 20.07's decoders accept them.
fn params_2007() -> &'static HashMap<String, Option<Vec<String>>> {
    static PARAMS: OnceLock<HashMap<String, Option<Vec<String>>>> = OnceLock::new();
    // spdk-sys's build checks the table; an unreadable one must not quietly
    // switch the filter and the name-collision guard off.
    PARAMS.get_or_init(|| {
        serde_json::from_str(crate::sys::RPC_PARAMS_JSON)
            .expect("spdk-sys built an unreadable table of 20.07's RPC parameters")
    })
}

/// Fields later SPDKs renamed, translated to 20.07's: (method, newer name,
/// 20.07 name, factor).
const RENAMED: &[(&str, &str, &str, u64)] = &[
    ("bdev_lvol_create", "size_in_mib", "size", 1 << 20),
    ("bdev_lvol_resize", "size_in_mib", "size", 1 << 20),
];

/// Applies RENAMED; true if anything changed. A value whose translation
/// does not fit 64 bits is refused, naming the field.
fn rename_fields(method: &str, params: &mut Value) -> Result<bool, RpcError> {
    let Some(o) = params.as_object_mut() else {
        return Ok(false);
    };
    let mut renamed = false;
    for (m, newer, old, factor) in RENAMED {
        if *m == method && !o.contains_key(*old) {
            if let Some(v) = o.get(*newer).and_then(Value::as_u64) {
                let translated = v.checked_mul(*factor).ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "{method}: {newer} {v} is out of range (at most {})",
                        u64::MAX / factor
                    ))
                })?;
                o.remove(*newer);
                o.insert(old.to_string(), json!(translated));
                renamed = true;
            }
        }
    }
    Ok(renamed)
}

/// Without a typed schema: only 20.07's parameter names are known.
fn filter_by_names(method: &str, mut params: Value, known: &[String], renamed: bool) -> Filtered {
    let Some(object) = params.as_object_mut() else {
        return Filtered::Unchanged;
    };
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !known.contains(k))
        .cloned()
        .collect();
    for key in &unknown {
        if let Err(e) = drop_newer_field(method, key, object, key, &[]) {
            return Filtered::Refused(e);
        }
    }
    if unknown.is_empty() && !renamed {
        Filtered::Unchanged
    } else {
        Filtered::Rewritten(params)
    }
}

/// The filter for [`crate::rpc::set_filter`]: adapts and checks the params
/// of every method 20.07's decoders describe; leaves the rest to SPDK.
pub fn filter(method: &str, params: Option<&Value>) -> Filtered {
    let schema = schemas().iter().find(|s| s.methods.contains(&method));
    let Some(schema) = schema else {
        return match (params, params_2007().get(method)) {
            (Some(p), Some(Some(known))) => {
                let mut p = p.clone();
                match rename_fields(method, &mut p) {
                    Ok(renamed) => filter_by_names(method, p, known, renamed),
                    Err(e) => Filtered::Refused(e),
                }
            }
            _ => Filtered::Unchanged,
        };
    };
    let mut params = match params {
        None => Value::Object(Map::new()),
        Some(v) => v.clone(),
    };
    let renamed = match rename_fields(method, &mut params) {
        Ok(renamed) => renamed,
        Err(e) => return Filtered::Refused(e),
    };
    let Some(object) = params.as_object_mut() else {
        return Filtered::Refused(RpcError::invalid_params(format!(
            "{method}: params must be an object, not {}",
            type_name(&params)
        )));
    };
    let newer = (schema.newer)();
    let mut changed = renamed;
    match check_object(method, "", object, schema.fields, &newer, &mut changed) {
        Err(e) => Filtered::Refused(e),
        Ok(()) if changed => Filtered::Rewritten(params),
        Ok(()) => Filtered::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(f: Filtered) -> String {
        match f {
            Filtered::Refused(e) => e.message,
            Filtered::Rewritten(v) => panic!("rewritten to {v}"),
            Filtered::Unchanged => panic!("unchanged"),
        }
    }

    #[test]
    fn the_build_time_table_of_2007_parameters_is_read() {
        assert!(params_2007().len() > 100, "{}", params_2007().len());
        assert!(spdk_has_method("nvmf_create_subsystem"));
    }

    #[test]
    fn a_size_in_mib_beyond_64_bits_of_bytes_is_refused_by_name() {
        let huge = json!({"lvs_name": "lvs", "lvol_name": "l", "size_in_mib": u64::MAX / 2});
        let msg = refused(filter("bdev_lvol_create", Some(&huge)));
        assert!(
            msg.contains("size_in_mib") && msg.contains("out of range"),
            "{msg}"
        );
        let fits = json!({"lvs_name": "lvs", "lvol_name": "l", "size_in_mib": 4});
        match filter("bdev_lvol_create", Some(&fits)) {
            Filtered::Rewritten(v) => assert_eq!(v["size"], json!(4u64 << 20)),
            _ => panic!("not translated"),
        }
    }

    #[test]
    fn newer_default_fields_are_dropped() {
        let p = json!({"nqn": "nqn.2016-06.io.spdk:c1", "serial_number": "S", "allow_any_host": true,
                       "ana_reporting": false, "passthrough": false, "enable_nssr": false});
        match filter("nvmf_create_subsystem", Some(&p)) {
            Filtered::Rewritten(v) => assert_eq!(
                v,
                json!({"nqn": "nqn.2016-06.io.spdk:c1", "serial_number": "S", "allow_any_host": true})
            ),
            _ => panic!("expected a rewrite"),
        }
        let ns = json!({"nqn": "n", "namespace": {"bdev_name": "pmdk0", "no_auto_visible": false}});
        match filter("nvmf_subsystem_add_ns", Some(&ns)) {
            Filtered::Rewritten(v) => assert_eq!(v["namespace"], json!({"bdev_name": "pmdk0"})),
            _ => panic!("expected a rewrite"),
        }
    }

    #[test]
    fn a_20_07_request_passes_unchanged() {
        let p = json!({"nqn": "n", "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "4420"}});
        assert!(matches!(
            filter("nvmf_subsystem_add_listener", Some(&p)),
            Filtered::Unchanged
        ));
        assert!(matches!(
            filter("bdev_get_bdevs", None),
            Filtered::Unchanged
        ));
    }

    #[test]
    fn problems_are_named() {
        let m = refused(filter(
            "nvmf_create_subsystem",
            Some(&json!({"nqn": "n", "ana_reporting": true})),
        ));
        assert!(m.contains("ana_reporting=true is not supported"), "{m}");
        let m = refused(filter(
            "nvmf_create_subsystem",
            Some(&json!({"nqn": "n", "colour": "red"})),
        ));
        assert!(m.contains("unknown field colour"), "{m}");
        let m = refused(filter("nvmf_create_subsystem", Some(&json!({"nqn": 5}))));
        assert!(
            m.contains("field nqn must be a string, not a number"),
            "{m}"
        );
        let m = refused(filter(
            "nvmf_create_subsystem",
            Some(&json!({"serial_number": "x"})),
        ));
        assert!(m.contains("missing required field nqn"), "{m}");
        let m = refused(filter(
            "nvmf_subsystem_add_listener",
            Some(&json!({"nqn": "n", "listen_address": {"trtype": "TCP"}})),
        ));
        assert!(
            m.contains("missing required field listen_address.traddr"),
            "{m}"
        );
        let m = refused(filter("nvmf_subsystem_add_ns", Some(&json!([1, 2]))));
        assert!(m.contains("params must be an object"), "{m}");
    }
}
