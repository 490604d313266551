//! Upstream SPDK's authentication vocabulary on 20.07's methods:
//! `nvmf_subsystem_add_host`'s `dhchap_key` and `dhchap_ctrlr_key` and
//! `nvmf_set_config`'s `dhchap_digests` and `dhchap_dhgroups` are taken
//! from the request ([`take_fields`], in the dispatch filter) before 20.07's
//! decoder sees the rest, and `nvmf_subsystem_set_keys` (rotation) is a
//! method of its own. Keys are named, as in the keyring; an unknown name,
//! a controller key without a host key, or a hash or group this target does
//! not know is refused with a message that says so.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::dhchap::Policy;
use super::hosts::{self, HostKeys};
use super::secret::{DhGroup, HashFn};
use crate::nvmf::Target;
use crate::rpc::{self, RpcError, RpcStates};
use crate::thread::AppThread;

/// What taking the fields leaves: the params for 20.07, and what to do once
/// the rest of the request was accepted.
pub type Taken = (Value, Box<dyn FnOnce()>);

fn key_by_name(
    method: &str,
    field: &str,
    name: &str,
) -> Result<std::sync::Arc<crate::keyring::Key>, RpcError> {
    crate::keyring::get(name).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "{method}: {field}: no key named '{name}' in the keyring (keyring_file_add_key adds one)"
        ))
    })
}

fn string_field(
    method: &str,
    params: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, RpcError> {
    match params.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RpcError::invalid_params(format!(
            "{method}: field {field} must be a string, not {}",
            rpc::type_name(&other)
        ))),
    }
}

/// The keys named by `key` and `ctrlr_key`.
fn host_keys(
    method: &str,
    key: Option<String>,
    ctrlr_key: Option<String>,
) -> Result<Option<HostKeys>, RpcError> {
    match (key, ctrlr_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(RpcError::invalid_params(format!(
            "{method}: a controller key (dhchap_ctrlr_key) needs a host key (dhchap_key) as well"
        ))),
        (Some(k), c) => Ok(Some(HostKeys {
            key: key_by_name(method, "dhchap_key", &k)?,
            ctrlr_key: c
                .map(|c| key_by_name(method, "dhchap_ctrlr_key", &c))
                .transpose()?,
        })),
    }
}

fn names<T: Copy>(
    method: &str,
    field: &str,
    value: Value,
    parse: impl Fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<Vec<T>, RpcError> {
    let bad = |what: String| {
        RpcError::invalid_params(format!(
            "{method}: {field} {what} (one or more of {})",
            all.join(", ")
        ))
    };
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "must be an array, not {}",
            rpc::type_name(&value)
        )));
    };
    if items.is_empty() {
        return Err(bad("must name at least one".into()));
    }
    items
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(&parse)
                .ok_or_else(|| bad(format!("has {v}, which this target does not know")))
        })
        .collect()
}

/// Takes the authentication fields out of a request for one of 20.07's
/// methods: `None` when it has none.
pub fn take_fields(method: &str, params: Option<&Value>) -> Result<Option<Taken>, RpcError> {
    let Some(Value::Object(p)) = params else {
        return Ok(None);
    };
    match method {
        "nvmf_subsystem_add_host" => {
            if !["dhchap_key", "dhchap_ctrlr_key", "psk"]
                .iter()
                .any(|f| p.contains_key(*f))
            {
                return Ok(None);
            }
            let mut p = p.clone();
            if string_field(method, &mut p, "psk")?.is_some() {
                return Err(RpcError::invalid_params(format!(
                    "{method}: psk: TLS pre-shared keys need a secure channel, which this target does not offer yet"
                )));
            }
            let key = string_field(method, &mut p, "dhchap_key")?;
            let ctrlr_key = string_field(method, &mut p, "dhchap_ctrlr_key")?;
            let keys = host_keys(method, key, ctrlr_key)?;
            let (Some(sub), Some(host)) = (
                p.get("nqn").and_then(Value::as_str).map(str::to_string),
                p.get("host").and_then(Value::as_str).map(str::to_string),
            ) else {
                // 20.07's decoder says what is missing.
                return Ok(Some((Value::Object(p), Box::new(|| ()))));
            };
            // Only for a subsystem that exists: else 20.07 refuses the call
            // and the keys would wait, unseen, for a host of that name.
            let tgt_name = p
                .get("tgt_name")
                .and_then(Value::as_str)
                .map(str::to_string);
            let exists = subsystem_exists(tgt_name.as_deref(), &sub);
            let commit = Box::new(move || {
                if keys.is_some() && exists {
                    hosts::set(&sub, &host, keys);
                }
            });
            Ok(Some((Value::Object(p), commit)))
        }
        "nvmf_set_config" => {
            if !p.contains_key("dhchap_digests") && !p.contains_key("dhchap_dhgroups") {
                return Ok(None);
            }
            // SAFETY: reads the RPC server's state, on its thread.
            if unsafe { crate::sys::spdk_rpc_get_state() } == crate::sys::SPDK_RPC_RUNTIME {
                return Err(RpcError::invalid_params(format!(
                    "{method}: runs before the subsystems start only (nvmf_tgt --wait-for-rpc, \
                     then framework_start_init), as upstream's"
                )));
            }
            let mut p = p.clone();
            let mut policy = hosts::policy();
            if let Some(v) = p.remove("dhchap_digests") {
                let all: Vec<&str> = HashFn::STRONGEST_FIRST
                    .iter()
                    .rev()
                    .map(|h| h.name())
                    .collect();
                policy.digests = names(method, "dhchap_digests", v, HashFn::from_name, &all)?;
            }
            if let Some(v) = p.remove("dhchap_dhgroups") {
                let all: Vec<&str> = DhGroup::STRONGEST_FIRST
                    .iter()
                    .rev()
                    .map(|g| g.name())
                    .collect();
                policy.dhgroups = names(method, "dhchap_dhgroups", v, DhGroup::from_name, &all)?;
            }
            Ok(Some((
                Value::Object(p),
                Box::new(move || hosts::set_policy(policy)),
            )))
        }
        _ => Ok(None),
    }
}

/// Whether subsystem `nqn` of target `tgt_name` (the only one if none)
/// exists; false off the application thread.
fn subsystem_exists(tgt_name: Option<&str>, nqn: &str) -> bool {
    let Ok(app) = AppThread::here() else {
        return false;
    };
    let target = match tgt_name {
        Some(name) => Target::by_name(app, name),
        None => Target::default_target(app),
    };
    target.is_ok_and(|t| t.find_subsystem(nqn).is_some())
}

/// `dhchap_digests` as upstream writes it: by name, in identifier order.
pub fn digest_names(p: &Policy) -> Value {
    let mut v: Vec<HashFn> = p.digests.clone();
    v.sort_by_key(|h| h.id());
    v.dedup();
    Value::from(v.iter().map(|h| h.name()).collect::<Vec<_>>())
}

/// `dhchap_dhgroups` as upstream writes it.
pub fn dhgroup_names(p: &Policy) -> Value {
    let mut v: Vec<DhGroup> = p.dhgroups.clone();
    v.sort_by_key(|g| g.id());
    v.dedup();
    Value::from(v.iter().map(|g| g.name()).collect::<Vec<_>>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeys {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

const SET_KEYS: &str = "nvmf_subsystem_set_keys";

fn set_keys(p: SetKeys) -> Result<bool, RpcError> {
    let keys = host_keys(SET_KEYS, p.dhchap_key, p.dhchap_ctrlr_key)?;
    let app = AppThread::here().map_err(|e| RpcError::internal(e.to_string()))?;
    let target = match &p.tgt_name {
        Some(name) => Target::by_name(app, name),
        None => Target::default_target(app),
    }
    .map_err(|e| RpcError::invalid_params(format!("{SET_KEYS}: {e}")))?;
    let subsystem = target
        .find_subsystem(&p.nqn)
        .ok_or_else(|| RpcError::invalid_params(format!("{SET_KEYS}: no subsystem {}", p.nqn)))?;
    let allowed = subsystem
        .allowed_hosts()
        .map_err(|e| RpcError::internal(e.to_string()))?;
    if !allowed.contains(&p.host) {
        return Err(RpcError::invalid_params(format!(
            "{SET_KEYS}: host {} is not one of {}'s hosts (nvmf_subsystem_add_host adds it)",
            p.host, p.nqn
        )));
    }
    // Connected queue pairs keep working; the new keys apply from their
    // next authentication (a new connection, or the host's own
    // re-authentication).
    hosts::set(&p.nqn, &p.host, keys);
    Ok(true)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceHost {
    nqn: String,
    nsid: u32,
    host: String,
    tgt_name: Option<String>,
}

/// `nvmf_ns_add_host` / `nvmf_ns_remove_host`: the subsystem is paused
/// around the change, as for 20.07's other host and namespace changes.
async fn namespace_host(
    method: &'static str,
    p: NamespaceHost,
    visible: bool,
) -> Result<bool, RpcError> {
    let failed = |e: crate::Error| RpcError::invalid_params(format!("{method}: {e}"));
    let app = AppThread::here().map_err(|e| RpcError::internal(e.to_string()))?;
    let target = match &p.tgt_name {
        Some(name) => Target::by_name(app, name),
        None => Target::default_target(app),
    }
    .map_err(failed)?;
    let subsystem = target
        .find_subsystem(&p.nqn)
        .ok_or_else(|| RpcError::invalid_params(format!("{method}: no subsystem {}", p.nqn)))?;
    let paused = !subsystem.is_inactive().map_err(failed)?;
    if paused {
        subsystem.pause().await.map_err(failed)?;
    }
    let changed = subsystem.set_namespace_visible(p.nsid, &p.host, visible);
    if paused {
        subsystem.resume().await.map_err(failed)?;
    }
    changed.map(|()| true).map_err(failed)
}

/// Registers `nvmf_subsystem_set_keys`, `nvmf_ns_add_host` and
/// `nvmf_ns_remove_host`.
pub fn serve_rpcs() -> crate::Result<()> {
    rpc::register_typed_method(SET_KEYS, RpcStates::Runtime, set_keys)?;
    rpc::register_typed_async_method("nvmf_ns_add_host", RpcStates::Runtime, |p| {
        namespace_host("nvmf_ns_add_host", p, true)
    })?;
    rpc::register_typed_async_method("nvmf_ns_remove_host", RpcStates::Runtime, |p| {
        namespace_host("nvmf_ns_remove_host", p, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_hashes_groups_and_keys_are_refused_naming_what_is_wrong() {
        let e = take_fields("nvmf_set_config", Some(&json!({"dhchap_digests": ["md5"]})))
            .err()
            .unwrap();
        assert!(
            e.message.contains("dhchap_digests has \"md5\"")
                && e.message.contains("sha256, sha384, sha512"),
            "{}",
            e.message
        );
        let e = take_fields("nvmf_set_config", Some(&json!({"dhchap_dhgroups": []})))
            .err()
            .unwrap();
        assert!(e.message.contains("at least one"), "{}", e.message);
        let e = take_fields(
            "nvmf_subsystem_add_host",
            Some(&json!({"nqn": "n", "host": "h", "dhchap_key": "nope"})),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("no key named 'nope'"), "{}", e.message);
        let e = take_fields(
            "nvmf_subsystem_add_host",
            Some(&json!({"nqn": "n", "host": "h", "dhchap_ctrlr_key": "c"})),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("needs a host key"), "{}", e.message);
    }

    #[test]
    fn requests_without_authentication_fields_pass_untouched() {
        assert!(take_fields(
            "nvmf_subsystem_add_host",
            Some(&json!({"nqn": "n", "host": "h"}))
        )
        .unwrap()
        .is_none());
        assert!(take_fields("bdev_get_bdevs", None).unwrap().is_none());
        let (rest, _) = take_fields(
            "nvmf_set_config",
            Some(&json!({"acceptor_poll_rate": 10000, "dhchap_digests": ["sha384"]})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(rest, json!({"acceptor_poll_rate": 10000}));
    }
}
