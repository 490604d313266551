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

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev::Bdev;
use crate::nvmf::{ListenAddress, Subsystem, SubsystemConfig, Target, TransportKind};
use crate::rpc::{self, RpcError, RpcResult, RpcStates};
use crate::thread::AppThread;

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

/// The 2018 request as it comes (serde does the shape: types, missing and
/// unknown fields); [`parse`] then checks what serde cannot (ports,
/// addresses) and builds the [`Request`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    nqn: String,
    #[serde(default)]
    listen_addresses: Vec<ListenParams>,
    #[serde(default)]
    hosts: Vec<String>,
    allow_any_host: Option<bool>,
    serial_number: Option<String>,
    model_number: Option<String>,
    #[serde(default)]
    namespaces: Vec<NamespaceParams>,
    max_namespaces: Option<u32>,
}

/// A 2018 listen address (`transport` is the older spelling of `trtype`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenParams {
    trtype: Option<String>,
    transport: Option<String>,
    traddr: String,
    trsvcid: Service,
    adrfam: Option<String>,
}

/// A port as text (`"4420"`, as SPDK's clients send it) or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Service {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceParams {
    bdev_name: String,
    nsid: Option<u32>,
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

/// What a field must be, in this method's words, where serde's would not say.
fn expected(path: &str) -> Option<String> {
    let element = |list: &str| {
        path.strip_prefix(list)
            .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']'))
    };
    let words = if element("listen_addresses") {
        r#"an object like {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "4420"}"#
    } else if element("namespaces") {
        r#"an object like {"bdev_name": "pmdk0"}"#
    } else if element("hosts") {
        "a host NQN string"
    } else if path.ends_with(".trsvcid") {
        "a port number"
    } else {
        return None;
    };
    Some(words.to_string())
}

fn listen_address(i: usize, l: ListenParams) -> Result<ListenAddress, RpcError> {
    let at = format!("listen_addresses[{i}].");
    let trtype = l
        .trtype
        .or(l.transport)
        .ok_or_else(|| bad(format!("missing required field {at}trtype")))?;
    let transport: TransportKind = trtype
        .parse()
        .map_err(|e: crate::Error| bad(format!("{at}trtype: {e}")))?;
    let service = match l.trsvcid {
        Service::Text(s) => s,
        Service::Number(n) => n.to_string(),
    };
    let port: u16 = service.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        bad(format!(
            "{at}trsvcid {service:?} is not a port number (1-65535)"
        ))
    })?;
    let family = match l.traddr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "IPv4",
        Ok(std::net::IpAddr::V6(_)) => "IPv6",
        Err(_) => {
            return Err(bad(format!(
                "{at}traddr {:?} is not an IP address",
                l.traddr
            )))
        }
    };
    if let Some(adrfam) = l.adrfam {
        if !adrfam.eq_ignore_ascii_case(family) {
            return Err(bad(format!(
                "{at}adrfam {adrfam} does not match traddr {}",
                l.traddr
            )));
        }
    }
    Ok(ListenAddress {
        transport,
        address: l.traddr,
        port,
    })
}

fn parse(params: Option<Value>) -> Result<Request, RpcError> {
    let params = params.ok_or_else(|| bad("params are required (at least nqn)".into()))?;
    if !params.is_object() {
        // serde would also read a struct from an array, by position.
        return Err(bad(format!("params must be an object, not {params}")));
    }
    let p: Params = rpc::typed_params_with(CONSTRUCT_NVMF_SUBSYSTEM, Some(params), &expected)?;
    let mut config = SubsystemConfig::new(&p.nqn);
    if let Some(sn) = &p.serial_number {
        config = config.serial_number(sn);
    }
    if let Some(mn) = &p.model_number {
        config = config.model_number(mn);
    }
    if let Some(any) = p.allow_any_host {
        config = config.allow_any_host(any);
    }
    if let Some(n) = p.max_namespaces {
        config = config.max_namespaces(n);
    }
    for host in &p.hosts {
        config = config.host(host);
    }
    let listeners = p
        .listen_addresses
        .into_iter()
        .enumerate()
        .map(|(i, l)| listen_address(i, l))
        .collect::<Result<Vec<_>, _>>()?;
    let namespaces = p
        .namespaces
        .into_iter()
        .map(|ns| Namespace {
            bdev_name: ns.bdev_name,
            nsid: ns.nsid.filter(|n| *n != 0),
        })
        .collect();
    Ok(Request {
        config,
        nqn: p.nqn,
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
        if Bdev::by_name(target.app_thread(), &ns.bdev_name).is_none() {
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
    let target = Target::default_target(AppThread::here()?)
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
        let m = err(json!({"nqn": "n", "hosts": [7]}));
        assert!(
            m.contains("hosts[0] must be a host NQN string, not a number"),
            "{m}"
        );
        let m = err(json!({"nqn": "n", "listen_addresses": ["127.0.0.1:4420"]}));
        assert!(
            m.contains("listen_addresses[0] must be an object like") && m.contains("not a string"),
            "{m}"
        );
        let m = err(json!({"nqn": "n", "namespaces": ["pmdk0"]}));
        assert!(m.contains("namespaces[0] must be an object like"), "{m}");
        let m = err(json!({"nqn": "n", "max_namespaces": -1}));
        assert!(
            m.contains("field max_namespaces must be a number from 0 to 4294967295, not -1"),
            "{m}"
        );
        let m = err(json!({"nqn": "n", "namespaces": [{"bdev_name": "b", "nsid": 4294967296u64}]}));
        assert!(
            m.contains("field namespaces[0].nsid must be a number"),
            "{m}"
        );
        let m = err(
            json!({"nqn": "n", "listen_addresses": [{"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": true}]}),
        );
        assert!(
            m.contains("field listen_addresses[0].trsvcid must be a port number, not true"),
            "{m}"
        );
        let m =
            err(json!({"nqn": "n", "listen_addresses": [{"traddr": "127.0.0.1", "trsvcid": "1"}]}));
        assert!(
            m.contains("missing required field listen_addresses[0].trtype"),
            "{m}"
        );
        let m = err(json!({"nqn": "n", "namespaces": [{"bdev_name": "b", "colour": 1}]}));
        assert!(m.contains("unknown field namespaces[0].colour"), "{m}");
        assert!(err(json!([1])).contains("params must be an object, not [1]"));
        let req = parse(Some(json!({"nqn": "n", "listen_addresses": [{"transport": "tcp", "traddr": "::1", "trsvcid": 4420}]}))).unwrap();
        assert_eq!(req.listeners[0].port, 4420);
    }
}
