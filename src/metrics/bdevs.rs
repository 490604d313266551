//! The figures of bdev modules of this crate: the Rust pmem module's pools
//! and workers, SPDK's C pmem module's pools, the Rust RBD module's images
//! and whether Ceph answers them, and the pmem write-back caches.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::fields::{counters, gauges, Field};
use crate::bdev::Bdev;
use crate::thread::AppThread;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PmemLabels {
    bdev: String,
    /// `pmem_rs` (this crate's) or `pmem` (SPDK's C module).
    module: String,
}

/// A pmem bdev's figures; the C module has only its size.
struct Pmem {
    labels: PmemLabels,
    blocks: u64,
    block_size: u64,
    rust: Option<crate::pmem_bdev::PmemFigures>,
}

/// The pmem bdevs of both modules.
fn pmem_bdevs(app: AppThread) -> Vec<Pmem> {
    let rust = crate::pmem_bdev::figures(app).unwrap_or_default();
    let mut all: Vec<Pmem> = rust
        .into_iter()
        .map(|f| Pmem {
            labels: PmemLabels {
                bdev: f.name.clone(),
                module: crate::pmem_bdev::MODULE_NAME.into(),
            },
            blocks: f.blocks,
            block_size: f.block_size as u64,
            rust: Some(f),
        })
        .collect();
    for bdev in Bdev::all(app).unwrap_or_default() {
        let c_pmem = bdev.product_name().is_ok_and(|p| p == "pmemblk disk")
            && !crate::pmem_bdev::is_rust_pmem(&bdev);
        if let (true, Ok(blocks), Ok(block_size)) = (c_pmem, bdev.block_count(), bdev.block_size())
        {
            all.push(Pmem {
                labels: PmemLabels {
                    bdev: bdev.name().to_string(),
                    module: "pmem".into(),
                },
                blocks,
                block_size: u64::from(block_size),
                rust: None,
            });
        }
    }
    all
}

/// Each pmem bdev's pool, and the Rust module's workers.
pub(super) fn pmem_metrics(app: AppThread, registry: &mut Registry) {
    let bdevs = pmem_bdevs(app);
    let pool_blocks = Family::<PmemLabels, Gauge>::default();
    registry.register(
        "pmem_pool_blocks",
        "Blocks of each pmem bdev's libpmemblk pool",
        pool_blocks.clone(),
    );
    let block_size = Family::<PmemLabels, Gauge>::default();
    registry.register_with_unit(
        "pmem_block_size",
        "Block size of each pmem bdev's pool",
        Unit::Bytes,
        block_size.clone(),
    );
    for b in &bdevs {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        pool_blocks.get_or_create(&b.labels).set(clamp(b.blocks));
        block_size.get_or_create(&b.labels).set(clamp(b.block_size));
    }
    use crate::pmem_bdev::PmemFigures;
    let gauge_fields: [Field<PmemFigures, i64>; 2] = [
        (
            "pmem_io_threads",
            "Worker threads doing the pool I/O of each pmem_rs bdev (0: on the reactor)",
            |f| f.io_threads as i64,
        ),
        (
            "pmem_queued_ios",
            "I/O queued for or running on each pmem_rs bdev's workers",
            |f| f.queued_ios as i64,
        ),
    ];
    let counter_fields: [Field<PmemFigures, u64>; 2] = [
        (
            "pmem_budget_waits",
            "I/O of each pmem_rs bdev that waited for the workers' CPU budget",
            |f| f.budget_waits,
        ),
        (
            "pmem_media_errors",
            "Reads of each pmem_rs bdev failed by a block in error (pmemblk_set_error or a media error)",
            |f| f.media_errors,
        ),
    ];
    let rust: Vec<PmemFigures> = bdevs.into_iter().filter_map(|b| b.rust).collect();
    let labels = |f: &PmemFigures| PmemLabels {
        bdev: f.name.clone(),
        module: crate::pmem_bdev::MODULE_NAME.into(),
    };
    gauges(registry, &gauge_fields, &rust, labels);
    counters(registry, &counter_fields, &rust, labels);
}

#[cfg(feature = "rbd")]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RbdLabels {
    bdev: String,
    /// `rbd POOL/NAME (cluster FSID, image id ID)`.
    image: String,
}

/// Each RBD bdev of the Rust module: whether Ceph answers its image.
#[cfg(feature = "rbd")]
pub(super) fn rbd_metrics(app: AppThread, registry: &mut Registry) {
    use crate::rbd::bdev::RbdFigures;
    let Ok(images) = crate::rbd::bdev::figures(app) else {
        return;
    };
    let reachable = Family::<RbdLabels, Gauge>::default();
    registry.register(
        "rbd_reachable",
        "1 unless the image's last completed operation failed (Ceph or the image did not answer it)",
        reachable.clone(),
    );
    let counter_fields: [Field<RbdFigures, u64>; 2] = [
        (
            "rbd_completed_operations",
            "Operations librbd completed on the image (failed ones too)",
            |f| f.completed_ops,
        ),
        (
            "rbd_failed_operations",
            "Operations librbd failed on the image",
            |f| f.failed_ops,
        ),
    ];
    let labels = |f: &RbdFigures| RbdLabels {
        bdev: f.name.clone(),
        image: f.image.clone(),
    };
    for f in &images {
        reachable
            .get_or_create(&labels(f))
            .set(i64::from(f.reachable));
    }
    counters(registry, &counter_fields, &images, labels);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    bdev: String,
    base_bdev: String,
}

/// Each pmem write-back cache's state (`bdev_pmem_cache_create`).
pub(super) fn cache_metrics(app: AppThread, registry: &mut Registry) {
    use crate::writeback::bdev::CacheFigures;
    let Ok(caches) = crate::writeback::bdev::figures(app) else {
        return;
    };
    let gauge_fields: [Field<CacheFigures, i64>; 4] = [
        ("cache_slots", "Blocks the cache's log can hold", |c| {
            c.slots as i64
        }),
        (
            "cache_dirty_blocks",
            "Blocks written to the cache and not yet in the backing bdev",
            |c| c.dirty_blocks as i64,
        ),
        (
            "cache_waiting_writes",
            "Writes waiting for room in a full cache",
            |c| c.waiting_writes as i64,
        ),
        (
            "cache_base_reachable",
            "1 while destaging to the backing bdev (Ceph) works, 0 while it fails",
            |c| i64::from(c.base_reachable),
        ),
    ];
    let counter_fields: [Field<CacheFigures, u64>; 2] = [
        (
            "cache_destaged_writes",
            "Writes destaged to the backing bdev (rate() of it is the destage rate)",
            |c| c.destaged_writes,
        ),
        (
            "cache_destage_failures",
            "Destage attempts the backing bdev failed",
            |c| c.destage_failures,
        ),
    ];
    let labels = |c: &CacheFigures| CacheLabels {
        bdev: c.name.clone(),
        base_bdev: c.base.clone(),
    };
    gauges(registry, &gauge_fields, &caches, labels);
    counters(registry, &counter_fields, &caches, labels);
}
