//! A Prometheus endpoint (`nvmf_tgt --metrics ADDR:PORT`, or [`start`]
//! from a library's start closure): each scrape sends a message to the
//! application thread, which gathers the figures there ([`gather`]) and
//! hands the text back to the HTTP thread ([`http`]), so no reactor waits
//! for a client.
//!
//! Metrics (prefix `spdk_pmem_`): build info; per reactor and per SPDK
//! thread busy and idle seconds; JSON-RPC requests by method and responses
//! by method and result; per subsystem namespaces, listeners, allowed
//! hosts and connected hosts; per namespace (labels `subsystem`, `nsid`,
//! `bdev`) reads and writes completed, bytes, seconds, and capacity; per
//! pmem bdev of either module its pool's blocks and block size, and for
//! the Rust module its workers, queued I/O, CPU-budget waits and media
//! errors; per RBD bdev whether Ceph answers and its operations; per pmem
//! write-back cache (labels `bdev`, `base_bdev`) slots, dirty blocks,
//! waiting writes, whether its backing bdev (Ceph) is reachable, writes
//! destaged and destage failures.

mod bdevs;
mod fields;
pub mod gather;
pub mod http;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::thread::{AppThread, Thread};

/// Set once the endpoint runs: one per process.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Starts serving the metrics on `addr` (`IP:PORT`), from the application
/// thread. Fails if the address cannot be bound, or an endpoint runs.
pub fn start(app: AppThread, addr: &str) -> Result<()> {
    app.check()?;
    let thread =
        Thread::current().ok_or_else(|| Error::NotFound("the application thread".into()))?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        Error::InvalidArgument(format!(
            "--metrics {addr}: cannot listen there ({e}); give a free IP:PORT such as 127.0.0.1:9500"
        ))
    })?;
    if SERVING.swap(true, Ordering::SeqCst) {
        return Err(Error::InvalidArgument(
            "a metrics endpoint already runs in this process".into(),
        ));
    }
    let gather = move |limit: Duration| scrape_on(&thread, limit);
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || http::serve(listener, Box::new(gather)))
        .map_err(|e| Error::Environment(format!("starting the metrics thread: {e}")))?;
    Ok(())
}

/// Asks `thread` (the application thread) for the exposition and waits for
/// it, at most `limit`.
fn scrape_on(thread: &Thread, limit: Duration) -> std::result::Result<String, String> {
    // A one-shot reply from the application thread to this (ordinary,
    // non-real-time) thread: std's channel, with its timeout, does.
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    thread
        .send(move || {
            let Ok(app) = AppThread::here() else {
                let _ = reply.send(Err("not on the application thread".to_string()));
                return;
            };
            let reply_err = reply.clone();
            let spawned = crate::thread::spawn_local(async move {
                let text = gather::scrape(app).await.map_err(|e| e.to_string());
                let _ = reply.send(text);
            });
            if let Err(e) = spawned {
                let _ = reply_err.send(Err(e.to_string()));
            }
        })
        .map_err(|e| format!("the target is stopping: {e}"))?;
    answer
        .recv_timeout(limit)
        .map_err(|_| format!("the application thread did not answer within {limit:?}"))?
}
