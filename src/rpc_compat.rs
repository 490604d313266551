//! Newer SPDK clients against a 20.07 target: the PyPI package `spdk` 26.x
//! (`spdk-rpc`) sends fields 20.07 does not know, with their default values
//! (`ana_reporting: false`, `secure_channel: false`,
//! `namespace.md_interleave: false`, ...), and
//! 20.07's decoders refuse the whole request as "Invalid parameters".
//!
//! [`filter`] checks every request against the parameter names 20.07's own
//! decoders accept (extracted from its source at build time,
//! `spdk_sys::RPC_PARAMS_JSON`). A field 20.07 does not know is dropped when
//! its value asks for what 20.07 does anyway: `false` (a newer feature left
//! off) or a listed default such as `min_cntlid: 1`; any other value is
//! refused with an error naming the field. For the methods of this project
//! (nvmf, pmem, framework) typed views of 20.07's parameters (serde structs)
//! also name a field of the wrong type, a missing required field or an
//! unknown field, where 20.07 would say only "Invalid parameters"; they cover
//! nested objects (`namespace.md_interleave`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::rpc::{self, Filtered, RpcError};

/// Declares typed views: public structs of 20.07's parameters with serde's
/// `deny_unknown_fields`, each field documented by its JSON name.
macro_rules! views {
    ($($(#[doc = $doc:literal])* $name:ident { $($field:ident: $ty:ty),* $(,)? })*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(#[doc = concat!("`", stringify!($field), "`")] pub $field: $ty,)*
        }
    )*};
}

/// Typed views of 20.07's parameters (its JSON decoders) for the methods of
/// this project: serde names a wrong type, a missing or an unknown field.
/// The filter only checks with them; the request goes to 20.07's decoder as
/// it came, less the newer fields dropped. Numbers stay `Number`: 20.07
/// checks their ranges. Public, for programs that read 20.07 requests.
pub mod views {
    use serde::Deserialize;
    use serde_json::Number;

    type Text = Option<String>;
    type Num = Option<Number>;
    type Flag = Option<bool>;

    views! {
        /// The params of `nvmf_create_transport`.
        CreateTransport {
            trtype: String, tgt_name: Text, max_queue_depth: Num, max_qpairs_per_ctrlr: Num,
            max_io_qpairs_per_ctrlr: Num, in_capsule_data_size: Num, max_io_size: Num,
            io_unit_size: Num, max_aq_depth: Num, num_shared_buffers: Num, buf_cache_size: Num,
            max_srq_depth: Num, no_srq: Flag, c2h_success: Flag, dif_insert_or_strip: Flag,
            sock_priority: Num, acceptor_backlog: Num, abort_timeout_sec: Num,
        }
        /// The params of `nvmf_create_subsystem` (old name `nvmf_subsystem_create`).
        CreateSubsystem {
            nqn: String, serial_number: Text, model_number: Text, tgt_name: Text,
            max_namespaces: Num, allow_any_host: Flag,
        }
        /// A listen address (`transport` is the old spelling of `trtype`).
        ListenAddress { transport: Text, trtype: Text, adrfam: Text, traddr: String, trsvcid: Text }
        /// The params of `nvmf_subsystem_add_listener` and `_remove_listener`.
        Listener { nqn: String, listen_address: ListenAddress, tgt_name: Text }
        /// A namespace of `nvmf_subsystem_add_ns`.
        Namespace { nsid: Num, bdev_name: String, ptpl_file: Text, nguid: Text, eui64: Text, uuid: Text, no_auto_visible: Flag }
        /// The params of `nvmf_subsystem_add_ns`.
        AddNamespace { nqn: String, namespace: Namespace, tgt_name: Text, no_auto_visible: Flag }
        /// The params of `nvmf_subsystem_remove_ns`.
        RemoveNamespace { nqn: String, nsid: Number, tgt_name: Text }
        /// The params of `nvmf_subsystem_add_host` and `_remove_host`.
        Host { nqn: String, host: String, tgt_name: Text }
        /// The params of `nvmf_subsystem_allow_any_host`.
        AllowAnyHost { nqn: String, allow_any_host: bool, tgt_name: Text }
        /// The params of `nvmf_delete_subsystem` (old name `delete_nvmf_subsystem`).
        DeleteSubsystem { nqn: String, tgt_name: Text }
        /// The params of `bdev_malloc_create` (old name `construct_malloc_bdev`).
        MallocCreate { name: Text, uuid: Text, num_blocks: Number, block_size: Number }
        /// The params of `bdev_pmem_create_pool` (old name `create_pmem_pool`).
        PmemCreatePool { pmem_file: String, num_blocks: Number, block_size: Number }
        /// The params of `bdev_pmem_create` (old name `construct_pmem_bdev`).
        PmemCreate { pmem_file: String, name: String }
        /// The params of `framework_get_config`.
        FrameworkGetConfig { name: String }
        /// The params of `rpc_get_methods` (old name `get_rpc_methods`).
        RpcGetMethods { current: Flag, include_aliases: Flag }
    }
}

type Checked = Result<(), serde_path_to_error::Error<rpc::ParamError>>;

/// Whether `params` fit the typed view `V`.
fn fits<V: DeserializeOwned>(params: &Value) -> Checked {
    rpc::params::deserialize::<V>(params).map(drop)
}

/// The methods a typed view checks, and the newer fields whose non-`false`
/// default means "as 20.07 does".
struct View {
    methods: &'static [&'static str],
    check: fn(&Value) -> Checked,
    newer: &'static [(&'static str, u64)],
}

const VIEWS: &[View] = &[
    View {
        methods: &["nvmf_create_transport"],
        check: fits::<views::CreateTransport>,
        newer: &[],
    },
    View {
        methods: &["nvmf_create_subsystem", "nvmf_subsystem_create"],
        check: fits::<views::CreateSubsystem>,
        newer: &[("min_cntlid", 1), ("max_cntlid", 0xffef)],
    },
    View {
        methods: &[
            "nvmf_subsystem_add_listener",
            "nvmf_subsystem_remove_listener",
        ],
        check: fits::<views::Listener>,
        newer: &[],
    },
    View {
        methods: &["nvmf_subsystem_add_ns"],
        check: fits::<views::AddNamespace>,
        newer: &[],
    },
    View {
        methods: &["nvmf_subsystem_remove_ns"],
        check: fits::<views::RemoveNamespace>,
        newer: &[],
    },
    View {
        methods: &["nvmf_subsystem_add_host", "nvmf_subsystem_remove_host"],
        check: fits::<views::Host>,
        newer: &[],
    },
    View {
        methods: &["nvmf_subsystem_allow_any_host"],
        check: fits::<views::AllowAnyHost>,
        newer: &[],
    },
    View {
        methods: &["nvmf_delete_subsystem", "delete_nvmf_subsystem"],
        check: fits::<views::DeleteSubsystem>,
        newer: &[],
    },
    View {
        methods: &["bdev_malloc_create", "construct_malloc_bdev"],
        check: fits::<views::MallocCreate>,
        newer: &[],
    },
    View {
        methods: &["bdev_pmem_create_pool", "create_pmem_pool"],
        check: fits::<views::PmemCreatePool>,
        newer: &[],
    },
    View {
        methods: &["bdev_pmem_create", "construct_pmem_bdev"],
        check: fits::<views::PmemCreate>,
        newer: &[],
    },
    View {
        methods: &["framework_get_config"],
        check: fits::<views::FrameworkGetConfig>,
        newer: &[],
    },
    View {
        methods: &["rpc_get_methods", "get_rpc_methods"],
        check: fits::<views::RpcGetMethods>,
        newer: &[],
    },
];

/// Checks `params` against a typed view: each field the view does not know
/// goes through [`drop_newer_field`] (dropped, or refused by name), then the
/// rest must fit. Returns whether anything was dropped.
fn check_view(method: &str, params: &mut Value, view: &View) -> Result<bool, RpcError> {
    let newer: Vec<(&str, Value)> = view.newer.iter().map(|(k, v)| (*k, json!(v))).collect();
    let mut dropped = false;
    loop {
        let e = match (view.check)(params) {
            Ok(()) => return Ok(dropped),
            Err(e) => e,
        };
        let rpc::ParamError::Unknown { field: key } = e.inner().clone() else {
            return Err(rpc::params_error(method, params, &e, &|_| None));
        };
        let path = e.path().to_string();
        let parent = path
            .strip_suffix(key.as_str())
            .map(|p| p.trim_end_matches('.'))
            .unwrap_or_default();
        let object = parent
            .split('.')
            .filter(|part| !part.is_empty())
            .try_fold(&mut *params, |at, part| at.get_mut(part))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| rpc::params_error(method, &Value::Null, &e, &|_| None))?;
        drop_newer_field(method, &path, object, &key, &newer)?;
        dropped = true;
    }
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

/// Without a typed view: only 20.07's parameter names are known.
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
    // Upstream's authentication fields first: 20.07 has none of them.
    match crate::auth::rpcs::take_fields(method, params) {
        Err(e) => Filtered::Refused(e),
        Ok(None) => filter_2007(method, params),
        Ok(Some((rest, commit))) => match filter_2007(method, Some(&rest)) {
            Filtered::Refused(e) => Filtered::Refused(e),
            Filtered::Unchanged => {
                commit();
                Filtered::Rewritten(rest)
            }
            rewritten => {
                commit();
                rewritten
            }
        },
    }
}

/// [`filter`] for 20.07's own fields.
fn filter_2007(method: &str, params: Option<&Value>) -> Filtered {
    let view = VIEWS.iter().find(|v| v.methods.contains(&method));
    let Some(view) = view else {
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
    if !params.is_object() {
        // serde would also read a struct from an array, by position.
        return Filtered::Refused(RpcError::invalid_params(format!(
            "{method}: params must be an object, not {}",
            rpc::type_name(&params)
        )));
    }
    let renamed = match rename_fields(method, &mut params) {
        Ok(renamed) => renamed,
        Err(e) => return Filtered::Refused(e),
    };
    match check_view(method, &mut params, view) {
        Err(e) => Filtered::Refused(e),
        Ok(dropped) if dropped || renamed => Filtered::Rewritten(params),
        Ok(_) => Filtered::Unchanged,
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
        let ns = json!({"nqn": "n", "namespace": {"bdev_name": "pmdk0", "ptpl_file": "/p", "md_interleave": false}});
        match filter("nvmf_subsystem_add_ns", Some(&ns)) {
            Filtered::Rewritten(v) => assert_eq!(
                v["namespace"],
                json!({"bdev_name": "pmdk0", "ptpl_file": "/p"})
            ),
            _ => panic!("expected a rewrite"),
        }
        // Vendor patch 0035 taught 20.07 this one: it goes through.
        let ns = json!({"nqn": "n", "namespace": {"bdev_name": "pmdk0", "no_auto_visible": true}});
        assert!(matches!(
            filter("nvmf_subsystem_add_ns", Some(&ns)),
            Filtered::Unchanged
        ));
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
