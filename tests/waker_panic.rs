//! A waker that panics when a bdev I/O completes: the completion callback
//! runs inside SPDK's C code, where an unwinding panic would abort the
//! process; instead, as with any panic on an SPDK thread, the app stops and
//! `run` resumes the panic in the caller. The I/O is still delivered: the
//! waker wakes its task before it panics, and the task finds it complete.

pub mod common;
use common::*;

use std::future::Future;
use std::panic;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use spdk_pmem::app::AppOptions;
use spdk_pmem::bdev::dma::DmaBuf;
use spdk_pmem::bdev::io::Descriptor;
use spdk_pmem::pmem::Pool;
use spdk_pmem::pmem_bdev::{self, IoThreads};
use spdk_pmem::thread::{self, AppThread};

const BS: usize = 4096;

/// Forwards its first wake to the task's own waker, then panics.
struct PanickingWaker(Waker);

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        self.0.wake_by_ref();
        panic!("the executor's waker panicked");
    }
}

/// Polls `inner` with a [`PanickingWaker`] around the task's waker.
struct WithPanickingWaker<F>(Pin<Box<F>>);

impl<F: Future> Future for WithPanickingWaker<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(PanickingWaker(cx.waker().clone())));
        self.0.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[test]
fn a_panicking_waker_stops_the_app_instead_of_aborting_it() {
    let dir = shm_dir();
    let pool = dir.path().join("waker.pool");
    let written = common::rng::Rng::new(7).bytes(BS);
    Pool::create_with_blocks(&pool, BS, 1024, 0o600)
        .unwrap()
        .write(3, &written)
        .unwrap();
    let (shm_id, _) = unique_ids();
    let sock = dir.path().join("rpc.sock");
    let read_back: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let result = read_back.clone();
    let opts = AppOptions::new("waker_panic")
        .reactor_mask("0x1")
        .shm_id(shm_id)
        .rpc_addr(sock.to_str().unwrap());
    let run = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        opts.run(move || {
            thread::spawn_local(async move {
                let app = AppThread::here().expect("the start closure's thread");
                // Workers: the read completes later, from the channel's
                // completion poller, where the waker is called.
                pmem_bdev::create(app, &pool, "waker0", IoThreads::Workers(1)).expect("bdev");
                let desc = Descriptor::open(app, "waker0", false).expect("open");
                let ch = desc.channel().expect("channel");
                let buf = DmaBuf::new(app.spdk(), BS, BS).expect("DMA memory");
                let (buf, r) = WithPanickingWaker(Box::pin(ch.read(3, buf))).await;
                r.expect("the read");
                *result.lock().unwrap() = Some(buf.to_vec());
            })
            .unwrap();
        })
    }));
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/spdk{shm_id}"));
    let _ = std::fs::remove_file(format!("/dev/shm/waker_panic_trace.{shm_id}"));
    let payload = run.expect_err("the waker's panic reaches run's caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the executor's waker panicked")
    );
    assert_eq!(
        read_back.lock().unwrap().as_deref(),
        Some(&written[..]),
        "the task saw the read complete"
    );
}
