//! A reset of a Rust RBD bdev (review F12), from Rust through SPDK's bdev
//! layer against a real one-node Ceph: it resolves only once the writes
//! submitted before it have completed, so whoever resets may reuse the
//! buffers it lent. It used to complete at once, with librbd still
//! writing from them (SPDK's C module waits a fixed 1 s instead).

pub mod common;
use common::*;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::bdev::dma::DmaBuf;
use spdk_pmem::bdev::io::Descriptor;
use spdk_pmem::rbd::bdev::RbdParams;
use spdk_pmem::rbd::cluster::ClusterConfig;
use spdk_pmem::thread::{self, AppThread};

const BS: usize = 4096;
const WRITES: u64 = 32;

type Write = Pin<Box<dyn Future<Output = spdk_pmem::bdev::io::BufResult>>>;

async fn reset_after_writes(app: AppThread, cluster: ClusterConfig) -> Result<(), String> {
    let params = RbdParams {
        name: "rbd0".into(),
        cluster,
        pool: "rbd".into(),
        image: "reset".into(),
        block_size: BS as u32,
    };
    spdk_pmem::rbd::bdev::create(app, params)
        .await
        .map_err(|e| format!("bdev_rbd_create: {e}"))?;
    let desc = Descriptor::open(app, "rbd0", true).map_err(|e| format!("open: {e}"))?;
    let ch = desc.channel().map_err(|e| format!("channel: {e}"))?;
    let spdk = app.spdk();
    let mut writes: Vec<Write> = Vec::new();
    for lba in 0..WRITES {
        let buf = DmaBuf::new(spdk, BS, BS).map_err(|e| format!("DMA memory: {e}"))?;
        writes.push(Box::pin(ch.write(lba, buf)));
    }
    ch.reset().await.map_err(|e| format!("reset: {e}"))?;
    // Which writes had completed when the reset did.
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = Vec::new();
    for mut w in writes {
        match w.as_mut().poll(&mut cx) {
            Poll::Ready((_, r)) => r.map_err(|e| format!("a write: {e}"))?,
            Poll::Pending => pending.push(w),
        }
    }
    let left = pending.len();
    for w in pending {
        w.await.1.map_err(|e| format!("a write: {e}"))?;
    }
    drop(ch);
    drop(desc);
    if left > 0 {
        return Err(format!(
            "the reset completed with {left} of {WRITES} writes still in flight"
        ));
    }
    Ok(())
}

#[test]
fn a_reset_of_an_rbd_bdev_completes_after_the_writes_before_it() {
    let ceph = common::ceph::Ceph::start();
    ceph.rbd(&["create", "rbd/reset", "--size", "8M"]);
    let cluster = ClusterConfig {
        user: Some("admin".into()),
        options: vec![
            ("mon_host".into(), ceph.mon.clone()),
            ("key".into(), ceph.key.clone()),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let (shm_id, _) = unique_ids();
    let sock = dir.path().join("rpc.sock");
    let outcome: Arc<Mutex<Option<Result<(), String>>>> = Arc::default();
    let result = outcome.clone();
    let code = AppOptions::new("rbd_reset")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap())
        .run(move || {
            let app = AppThread::here().expect("the app thread");
            thread::spawn_local(async move {
                let r = reset_after_writes(app, cluster).await;
                let code = i32::from(r.is_err());
                *result.lock().unwrap() = Some(r);
                app::stop(code).expect("the app is serving");
            })
            .unwrap();
        })
        .expect("valid options");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/rbd_reset_trace.{shm_id}"));
    let outcome = outcome.lock().unwrap().take().expect("the test ran");
    outcome.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 0);
}
