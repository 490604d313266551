//! The 2018 vocabulary: `construct_nvmf_subsystem`, which the article used and
//! SPDK removed in v19.01, served again as a Rust RPC method on the library's
//! nvmf API. (The article's pmem commands, `create_pmem_pool` and
//! `construct_pmem_bdev`, are still aliases in SPDK 20.07.)
//!
//! Its 2018 parameters: `nqn`, `listen_addresses` (an array of `{trtype,
//! traddr, trsvcid, adrfam}`), `hosts`, `allow_any_host`, `serial_number`,
//! `namespaces` (an array of `{bdev_name, nsid}`), `max_namespaces`; and
//! `model_number`, which later SPDKs took too.
//!
//! All or nothing: everything is checked before anything is made, and if a
//! later step still fails the subsystem, its namespaces and listeners are
//! removed again. The one exception is a transport created for the request:
//! SPDK 20.07 cannot remove a transport, so one is only created once every
//! check has passed (a busy port included).

use serde_json::{json, Map, Value};

use crate::bdev::Bdev;
use crate::nvmf::{ListenAddress, Subsystem, SubsystemConfig, Target, TransportKind};
use crate::rpc::{self, RpcError, RpcResult, RpcStates};
use crate::thread::Spdk;

/// The method name.
pub const CONSTRUCT_NVMF_SUBSYSTEM: &str = "construct_nvmf_subsystem";

/// Registers the 2018 methods with the RPC server.
pub fn register() -> crate::Result<()> {
    rpc::register_async_method(
        CONSTRUCT_NVMF_SUBSYSTEM,
        RpcStates::Runtime,
        construct_nvmf_subsystem,
    )
}

struct Namespace {
    bdev_name: String,
    nsid: Option<u32>,
}

struct Request {
    config: SubsystemConfig,
    nqn: String,
    listeners: Vec<ListenAddress>,
    namespaces: Vec<Namespace>,
}

fn bad(msg: String) -> RpcError {
    RpcError::invalid_params(format!("{CONSTRUCT_NVMF_SUBSYSTEM}: {msg}"))
}

fn string_field(
    o: &Map<String, Value>,
    key: &str,
    at: &str,
    required: bool,
) -> Result<Option<String>, RpcError> {
    match o.get(key) {
        None if required => Err(bad(format!("missing required field {at}{key}"))),
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!(
            "field {at}{key} must be a string, not {other}"
        ))),
    }
}

fn array_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], RpcError> {
    match o.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(bad(format!("field {key} must be an array, not {other}"))),
    }
}

fn u32_field(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u32>, RpcError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "field {at}{key} must be a number from 0 to 4294967295, not {v}"
                ))
            }),
    }
}

fn check_keys(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), RpcError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("unknown field {at}{k}"))),
        None => Ok(()),
    }
}

fn parse_listen_address(i: usize, v: &Value) -> Result<ListenAddress, RpcError> {
    let at = format!("listen_addresses[{i}].");
    let o = v
        .as_object()
        .ok_or_else(|| bad(format!("{at} must be an object like {{\"trtype\": \"TCP\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"4420\"}}, not {v}")))?;
    check_keys(
        o,
        &["trtype", "traddr", "trsvcid", "adrfam", "transport"],
        &at,
    )?;
    let trtype = match string_field(o, "trtype", &at, false)? {
        Some(t) => t,
        None => string_field(o, "transport", &at, true)?.unwrap_or_default(),
    };
    let transport: TransportKind = trtype
        .parse()
        .map_err(|e: crate::Error| bad(format!("{at}trtype: {e}")))?;
    let address = string_field(o, "traddr", &at, true)?.unwrap_or_default();
    let service = match o.get("trsvcid") {
        None => return Err(bad(format!("missing required field {at}trsvcid"))),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(bad(format!(
                "field {at}trsvcid must be a port number, not {other}"
            )))
        }
    };
    let port: u16 = service.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        bad(format!(
            "{at}trsvcid {service:?} is not a port number (1-65535)"
        ))
    })?;
    let listen = ListenAddress {
        transport,
        address,
        port,
    };
    let family = match listen.address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "IPv4",
        Ok(std::net::IpAddr::V6(_)) => "IPv6",
        Err(_) => {
            return Err(bad(format!(
                "{at}traddr {:?} is not an IP address",
                listen.address
            )))
        }
    };
    if let Some(adrfam) = string_field(o, "adrfam", &at, false)? {
        if !adrfam.eq_ignore_ascii_case(family) {
            return Err(bad(format!(
                "{at}adrfam {adrfam} does not match traddr {}",
                listen.address
            )));
        }
    }
    Ok(listen)
}

fn parse(params: Option<Value>) -> Result<Request, RpcError> {
    let params = params.ok_or_else(|| bad("params are required (at least nqn)".into()))?;
    let o = params
        .as_object()
        .ok_or_else(|| bad(format!("params must be an object, not {params}")))?;
    check_keys(
        o,
        &[
            "nqn",
            "listen_addresses",
            "hosts",
            "allow_any_host",
            "serial_number",
            "model_number",
            "namespaces",
            "max_namespaces",
        ],
        "",
    )?;
    let nqn = string_field(o, "nqn", "", true)?.unwrap_or_default();
    let mut config = SubsystemConfig::new(&nqn);
    if let Some(sn) = string_field(o, "serial_number", "", false)? {
        config = config.serial_number(&sn);
    }
    if let Some(mn) = string_field(o, "model_number", "", false)? {
        config = config.model_number(&mn);
    }
    match o.get("allow_any_host") {
        None => {}
        Some(Value::Bool(b)) => config = config.allow_any_host(*b),
        Some(other) => {
            return Err(bad(format!(
                "field allow_any_host must be a boolean, not {other}"
            )))
        }
    }
    if let Some(n) = u32_field(o, "max_namespaces", "")? {
        config = config.max_namespaces(n);
    }
    for (i, h) in array_field(o, "hosts")?.iter().enumerate() {
        let host = h
            .as_str()
            .ok_or_else(|| bad(format!("hosts[{i}] must be a host NQN string, not {h}")))?;
        config = config.host(host);
    }
    let listeners = array_field(o, "listen_addresses")?
        .iter()
        .enumerate()
        .map(|(i, v)| parse_listen_address(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut namespaces = Vec::new();
    for (i, v) in array_field(o, "namespaces")?.iter().enumerate() {
        let at = format!("namespaces[{i}].");
        let ns = v.as_object().ok_or_else(|| {
            bad(format!(
                "{at} must be an object like {{\"bdev_name\": \"pmdk0\"}}, not {v}"
            ))
        })?;
        check_keys(ns, &["bdev_name", "nsid"], &at)?;
        namespaces.push(Namespace {
            bdev_name: string_field(ns, "bdev_name", &at, true)?.unwrap_or_default(),
            nsid: u32_field(ns, "nsid", &at)?.filter(|n| *n != 0),
        });
    }
    Ok(Request {
        config,
        nqn,
        listeners,
        namespaces,
    })
}

/// Checks everything that can be checked before creating anything.
fn precheck(target: &Target, req: &Request) -> Result<Vec<TransportKind>, RpcError> {
    if target.find_subsystem(&req.nqn).is_some() {
        return Err(bad(format!("subsystem {} already exists", req.nqn)));
    }
    for (i, ns) in req.namespaces.iter().enumerate() {
        if Bdev::by_name(target.spdk(), &ns.bdev_name).is_none() {
            return Err(bad(format!(
                "namespaces[{i}]: no bdev named {}",
                ns.bdev_name
            )));
        }
    }
    let mut missing = Vec::new();
    for (i, l) in req.listeners.iter().enumerate() {
        if target.has_transport(l.transport)? || missing.contains(&l.transport) {
            continue;
        }
        if l.transport == TransportKind::Rdma && !crate::sys::RDMA_BUILD {
            return Err(bad(format!(
                "listen_addresses[{i}]: this target was built without RDMA"
            )));
        }
        missing.push(l.transport);
    }
    // With no transport of its kind yet, a port that is busy belongs to
    // another program: say so now, before creating a transport for nothing.
    for (i, l) in req.listeners.iter().enumerate() {
        if l.transport == TransportKind::Tcp && missing.contains(&TransportKind::Tcp) {
            if let Err(e) = std::net::TcpListener::bind((l.address.as_str(), l.port)) {
                return Err(bad(format!(
                    "listen_addresses[{i}]: cannot listen on {l}: {e}"
                )));
            }
        }
    }
    Ok(missing)
}

/// Namespaces and listeners of the new, inactive subsystem; `listening`
/// collects the listeners added, for the rollback.
async fn build(
    req: &Request,
    subsystem: &Subsystem<'_>,
    listening: &mut Vec<ListenAddress>,
) -> Result<(), RpcError> {
    for (i, ns) in req.namespaces.iter().enumerate() {
        subsystem
            .add_namespace(&ns.bdev_name, ns.nsid)
            .map_err(|e| bad(format!("namespaces[{i}]: {e}")))?;
    }
    for (i, l) in req.listeners.iter().enumerate() {
        subsystem
            .add_listener(l)
            .await
            .map_err(|e| bad(format!("listen_addresses[{i}]: {e}")))?;
        listening.push(l.clone());
    }
    Ok(())
}

async fn construct_nvmf_subsystem(params: Option<Value>) -> RpcResult {
    let req = parse(params)?;
    let target = Target::default_target(Spdk::here()?)
        .map_err(|e| RpcError::internal(format!("the nvmf subsystem has no target: {e}")))?;
    let missing = precheck(&target, &req)?;
    let subsystem = target
        .create_subsystem(&req.config)
        .map_err(|e| bad(e.to_string()))?;
    for kind in missing {
        if let Err(e) = target.add_transport(kind).await {
            let mut error = bad(format!("creating the {} transport: {e}", kind.name()));
            if let Err(e) = subsystem.destroy() {
                error.message += &format!("; removing the new subsystem again failed: {e}");
            }
            return Err(error);
        }
    }
    let mut listening = Vec::new();
    let mut error = match build(&req, &subsystem, &mut listening).await {
        Err(e) => e,
        Ok(()) => match subsystem.start().await {
            Ok(()) => return Ok(json!(true)),
            Err(e) => {
                let mut error = RpcError::internal(format!("starting {}: {e}", req.nqn));
                // A start that failed part way may have left it between
                // states: destroy it only once a stop says it is inactive.
                if let Err(stop) = subsystem.stop().await {
                    error.message += &format!(
                        "; stopping it again failed too ({stop}), so it is left in place: \
                         nvmf_delete_subsystem {} removes it",
                        req.nqn
                    );
                    return Err(error);
                }
                error
            }
        },
    };
    // Undo in reverse, on the inactive subsystem.
    for l in &listening {
        if let Err(e) = subsystem.remove_listener(l).await {
            error.message += &format!("; removing listener {l} again failed: {e}");
        }
    }
    if let Err(e) = subsystem.destroy() {
        error.message += &format!("; removing the new subsystem again failed: {e}");
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        match parse(Some(v)) {
            Err(e) => e.message,
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn the_articles_request_parses() {
        let req = parse(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:cnode1",
            "listen_addresses": [{"trtype": "RDMA", "traddr": "192.168.1.10", "trsvcid": "4420", "adrfam": "IPv4"}],
            "hosts": [], "allow_any_host": true, "serial_number": "SPDK0001",
            "namespaces": [{"bdev_name": "pmdk0", "nsid": 1}], "max_namespaces": 0
        })))
        .unwrap();
        assert_eq!(req.nqn, "nqn.2016-06.io.spdk:cnode1");
        assert_eq!(req.listeners[0].transport, TransportKind::Rdma);
        assert_eq!(req.listeners[0].port, 4420);
        assert_eq!(req.namespaces[0].nsid, Some(1));
    }

    #[test]
    fn malformed_listen_addresses_are_named() {
        let m = err(
            json!({"nqn": "n", "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1"}]}),
        );
        assert!(
            m.contains("missing required field listen_addresses[0].trsvcid"),
            "{m}"
        );
        let m = err(
            json!({"nqn": "n", "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "http"}]}),
        );
        assert!(m.contains("is not a port number"), "{m}");
        let m = err(
            json!({"nqn": "n", "listen_addresses": [{"trtype": "FC", "traddr": "127.0.0.1", "trsvcid": "1"}]}),
        );
        assert!(m.contains("listen_addresses[0].trtype"), "{m}");
        let m = err(
            json!({"nqn": "n", "listen_addresses": [{"trtype": "TCP", "traddr": "::1", "trsvcid": "1", "adrfam": "IPv4"}]}),
        );
        assert!(m.contains("does not match"), "{m}");
        let m = err(json!({"nqn": "n", "listen_addresses": "127.0.0.1:4420"}));
        assert!(m.contains("listen_addresses must be an array"), "{m}");
    }

    #[test]
    fn other_problems_are_named() {
        assert!(err(json!({"serial_number": "x"})).contains("missing required field nqn"));
        assert!(err(json!({"nqn": 1})).contains("field nqn must be a string"));
        assert!(err(json!({"nqn": "n", "colour": 1})).contains("unknown field colour"));
        assert!(err(json!({"nqn": "n", "namespaces": [{"nsid": 1}]}))
            .contains("namespaces[0].bdev_name"));
        assert!(err(json!({"nqn": "n", "allow_any_host": "yes"}))
            .contains("allow_any_host must be a boolean"));
    }
}
