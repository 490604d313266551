//! The figures a scrape shows, gathered on the application thread (which
//! owns the nvmf target's subsystems and the bdev list) and encoded in
//! Prometheus's text format with the `prometheus-client` crate.

use std::ffi::CStr;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::fields::{gauges, Field};
use crate::bdev::io::{Descriptor, IoStat};
use crate::error::{Error, Result};
use crate::sys;
use crate::thread::AppThread;

/// Every metric's prefix.
pub const PREFIX: &str = "spdk_pmem";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    spdk_version: String,
    crate_version: String,
    features: String,
    /// The vendor patches' numbers (`0001,...`).
    patches: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    subsystem: String,
    nsid: String,
    bdev: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubsystemLabels {
    subsystem: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReactorLabels {
    core: String,
    mode: String,
}

/// A namespace as the target has it.
struct Namespace {
    subsystem: String,
    nsid: u32,
    bdev: String,
}

/// A subsystem's counts.
struct Subsystem {
    nqn: String,
    namespaces: i64,
    listeners: i64,
    allowed_hosts: i64,
    connected: i64,
}

type Seconds = Counter<f64, AtomicU64>;
/// The exposition of everything, gathered now.
pub async fn scrape(app: AppThread) -> Result<String> {
    let mut registry = Registry::with_prefix(PREFIX);
    build_info(&mut registry);
    reactors(&mut registry);
    threads(&mut registry).await?;
    rpc_requests(app, &mut registry)?;
    let (subsystems, namespaces) = nvmf_state(app)?;
    subsystem_metrics(&mut registry, &subsystems);
    namespace_metrics(app, &mut registry, &namespaces).await;
    super::bdevs::bdev_metrics(app, &mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| Error::InvalidArgument(format!("encoding the metrics: {e}")))?;
    Ok(text)
}

fn build_info(registry: &mut Registry) {
    // A gauge of 1 with the facts as labels (Prometheus's `*_build_info`
    // convention; the OpenMetrics info type is unknown to promtool 2.42).
    let info = Family::<BuildLabels, Gauge>::default();
    registry.register(
        "build_info",
        "The SPDK this target is built on, the vendor patches applied to it, and the cargo features built in",
        info.clone(),
    );
    let labels = BuildLabels {
        spdk_version: crate::build::spdk_version(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        features: crate::build::features().join(","),
        patches: crate::build::patch_numbers().join(","),
    };
    info.get_or_create(&labels).set(1);
}

/// Busy and idle time of each reactor (SPDK's own counts, which
/// `framework_get_reactors` reports too).
fn reactors(registry: &mut Registry) {
    let seconds = Family::<ReactorLabels, Seconds>::default();
    registry.register_with_unit(
        "reactor",
        "Time each reactor spent in polls that did work (busy) and that found none (idle)",
        Unit::Seconds,
        seconds.clone(),
    );
    // SAFETY: spdk_get_ticks_hz only reads the environment's tick rate.
    let hz = unsafe { sys::spdk_get_ticks_hz() }.max(1) as f64;
    // SAFETY: the environment's core list, fixed once the app runs.
    let mut core = unsafe { sys::spdk_env_get_first_core() };
    while core != u32::MAX {
        let (mut busy, mut idle) = (0u64, 0u64);
        // SAFETY: plain reads of the reactor's counters (u64 loads; a torn
        // read cannot happen on the 64-bit targets SPDK supports).
        let known = unsafe {
            sys::spdk_pmem_reactor_busy_tsc(core, &mut busy)
                && sys::spdk_pmem_reactor_idle_tsc(core, &mut idle)
        };
        if known {
            for (mode, ticks) in [("busy", busy), ("idle", idle)] {
                let labels = ReactorLabels {
                    core: core.to_string(),
                    mode: mode.into(),
                };
                seconds.get_or_create(&labels).inc_by(ticks as f64 / hz);
            }
        }
        // SAFETY: as above.
        core = unsafe { sys::spdk_env_get_next_core(core) };
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    thread: String,
    mode: String,
}

/// One SPDK thread's name and counts.
struct ThreadTimes {
    name: String,
    busy_tsc: u64,
    idle_tsc: u64,
}

/// What `spdk_for_each_thread` carries from thread to thread.
struct ForEachThread {
    times: crate::sync::Mutex<Vec<ThreadTimes>>,
    done: crate::thread::Completer<Vec<ThreadTimes>>,
}

/// Busy and idle time of each SPDK thread, read on each thread in turn.
async fn threads(registry: &mut Registry) -> Result<()> {
    let (done, gathered) = crate::thread::completion("spdk_for_each_thread");
    let ctx = Box::into_raw(Box::new(ForEachThread {
        times: crate::sync::Mutex::new(Vec::new()),
        done,
    }));
    // SAFETY: `ctx` lives until `thread_times_done`, which SPDK calls once,
    // on this thread, after `thread_times` ran on every thread.
    unsafe { sys::spdk_for_each_thread(Some(thread_times), ctx.cast(), Some(thread_times_done)) };
    let times = gathered.await?;
    let seconds = Family::<ThreadLabels, Seconds>::default();
    registry.register_with_unit(
        "thread",
        "Time each SPDK thread spent in polls that did work (busy) and that found none (idle)",
        Unit::Seconds,
        seconds.clone(),
    );
    // SAFETY: spdk_get_ticks_hz only reads the environment's tick rate.
    let hz = unsafe { sys::spdk_get_ticks_hz() }.max(1) as f64;
    for t in times {
        for (mode, ticks) in [("busy", t.busy_tsc), ("idle", t.idle_tsc)] {
            let labels = ThreadLabels {
                thread: t.name.clone(),
                mode: mode.into(),
            };
            seconds.get_or_create(&labels).inc_by(ticks as f64 / hz);
        }
    }
    Ok(())
}

extern "C" fn thread_times(ctx: *mut std::ffi::c_void) {
    // SAFETY: the ForEachThread `threads` made, alive until the
    // completion callback; shared only through its mutex.
    let ctx = unsafe { &*(ctx as *const ForEachThread) };
    // SAFETY: a plain struct of two counters, valid all zero.
    let mut stats: sys::spdk_thread_stats = unsafe { std::mem::zeroed() };
    // SAFETY: called on an SPDK thread (SPDK runs this message on each).
    let (rc, name) = unsafe {
        (
            sys::spdk_thread_get_stats(&mut stats),
            c_text(sys::spdk_thread_get_name(sys::spdk_get_thread())),
        )
    };
    if rc == 0 {
        crate::sync::lock(&ctx.times).push(ThreadTimes {
            name,
            busy_tsc: stats.busy_tsc,
            idle_tsc: stats.idle_tsc,
        });
    }
}

extern "C" fn thread_times_done(ctx: *mut std::ffi::c_void) {
    // SAFETY: the Box `threads` leaked; SPDK calls this once, last.
    let ctx = unsafe { Box::from_raw(ctx as *mut ForEachThread) };
    let ForEachThread { times, done } = *ctx;
    done.complete(times.into_inner().unwrap_or_else(|e| e.into_inner()));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Requests the RPC server received, by method, and its responses by
/// method and result.
fn rpc_requests(app: AppThread, registry: &mut Registry) -> Result<()> {
    let family = Family::<MethodLabels, Counter>::default();
    registry.register(
        "rpc_requests",
        "JSON-RPC requests received, by method ((unknown): methods the target does not have)",
        family.clone(),
    );
    for (method, count) in crate::rpc::requests_by_method(app)? {
        family.get_or_create(&MethodLabels { method }).inc_by(count);
    }
    let calls = Family::<CallLabels, Counter>::default();
    registry.register(
        "rpc_responses",
        "JSON-RPC responses sent, by method and result (ok or error); (invalid request): to requests that were not JSON-RPC",
        calls.clone(),
    );
    for (method, outcome, count) in crate::rpc::calls_by_method_and_result() {
        let labels = CallLabels {
            method,
            result: outcome.as_str().into(),
        };
        calls.get_or_create(&labels).inc_by(count);
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    result: String,
}

/// The default nvmf target's subsystems (not the discovery one) and their
/// namespaces.
fn nvmf_state(app: AppThread) -> Result<(Vec<Subsystem>, Vec<Namespace>)> {
    let Ok(target) = crate::nvmf::Target::default_target(app) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut subsystems, mut namespaces) = (Vec::new(), Vec::new());
    for s in target.subsystems()? {
        let listed = s.namespaces()?;
        subsystems.push(Subsystem {
            nqn: s.nqn().to_string(),
            namespaces: listed.len() as i64,
            listeners: s.listener_count()? as i64,
            allowed_hosts: s.allowed_hosts()?.len() as i64,
            connected: i64::from(s.connected_controllers()?),
        });
        namespaces.extend(listed.into_iter().map(|ns| Namespace {
            subsystem: s.nqn().to_string(),
            nsid: ns.nsid,
            bdev: ns.bdev,
        }));
    }
    Ok((subsystems, namespaces))
}

fn subsystem_metrics(registry: &mut Registry, subsystems: &[Subsystem]) {
    let fields: [Field<Subsystem, i64>; 4] = [
        (
            "subsystem_namespaces",
            "Namespaces of each subsystem",
            |s| s.namespaces,
        ),
        (
            "subsystem_listeners",
            "Listen addresses of each subsystem",
            |s| s.listeners,
        ),
        (
            "subsystem_allowed_hosts",
            "Host NQNs each subsystem lists as allowed (any host may connect where it allows any)",
            |s| s.allowed_hosts,
        ),
        (
            "subsystem_connected_hosts",
            "Controllers of each subsystem: hosts connected now",
            |s| s.connected,
        ),
    ];
    let labels = |s: &Subsystem| SubsystemLabels {
        subsystem: s.nqn.clone(),
    };
    gauges(registry, &fields, subsystems, labels);
}

/// Each namespace's I/O (the bdev layer's counts of its bdev) and size.
async fn namespace_metrics(app: AppThread, registry: &mut Registry, namespaces: &[Namespace]) {
    let counters: [Field<IoStat, u64>; 4] = [
        ("namespace_reads_completed", "Reads completed", |s| s.reads),
        ("namespace_writes_completed", "Writes completed", |s| {
            s.writes
        }),
        ("namespace_read", "Bytes read", |s| s.read_bytes),
        ("namespace_written", "Bytes written", |s| s.written_bytes),
    ];
    let families: Vec<Family<NamespaceLabels, Counter>> =
        counters.iter().map(|_| Family::default()).collect();
    for ((name, help, _), family) in counters.iter().zip(&families) {
        if name.ends_with("completed") {
            registry.register(*name, *help, family.clone());
        } else {
            registry.register_with_unit(*name, *help, Unit::Bytes, family.clone());
        }
    }
    let times = [
        Family::<NamespaceLabels, Seconds>::default(),
        Family::<NamespaceLabels, Seconds>::default(),
    ];
    for (family, (name, help)) in times.iter().zip([
        ("namespace_read", "Time reads took, summed"),
        ("namespace_write", "Time writes took, summed"),
    ]) {
        registry.register_with_unit(name, help, Unit::Seconds, family.clone());
    }
    let capacity = Family::<NamespaceLabels, Gauge>::default();
    registry.register_with_unit(
        "namespace_capacity",
        "Size of each namespace",
        Unit::Bytes,
        capacity.clone(),
    );
    for ns in namespaces {
        // Open to keep the bdev while its channels are counted.
        let Ok(desc) = Descriptor::open(app, &ns.bdev, false) else {
            continue;
        };
        let Ok(stat) = desc.io_stat().await else {
            continue;
        };
        let labels = NamespaceLabels {
            subsystem: ns.subsystem.clone(),
            nsid: ns.nsid.to_string(),
            bdev: ns.bdev.clone(),
        };
        for ((_, _, value), family) in counters.iter().zip(&families) {
            family.get_or_create(&labels).inc_by(value(&stat));
        }
        times[0].get_or_create(&labels).inc_by(stat.read_seconds);
        times[1].get_or_create(&labels).inc_by(stat.write_seconds);
        let bytes = desc.num_blocks() * u64::from(desc.block_size());
        capacity
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// A C string SPDK owns, copied.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
