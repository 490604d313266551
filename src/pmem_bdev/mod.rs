//! The pmem bdev in Rust: a libpmemblk pool served as a bdev through
//! [`crate::bdev::module`], in place of SPDK 20.07's C pmem module.
//!
//! What it does differently from the C module:
//! - Work that can block runs off the reactor. On a pool in an ordinary
//!   file, libpmem persists each block with `msync`, a disk flush: the C
//!   module does that on the reactor, stalling every other bdev and
//!   connection on that core. Here the writes (and write-zeroes, unmaps) to
//!   such pools run on worker threads (as many as libpmemblk has BTT lanes,
//!   two per CPU), and each completion is queued for the submitting SPDK
//!   thread. Reads, a copy out of the mapped pool, stay inline while the
//!   workers are idle, and so does all I/O to a pool on memory (tmpfs,
//!   ramfs), where persisting costs nothing: both measured faster that way
//!   (docs/pmem-modules.md). While workers write, reads go to them
//!   too: libpmemblk would make a read on the reactor wait for a lane a
//!   worker holds. A read of a page the kernel has evicted still faults it
//!   in on the reactor.
//! - The workers yield to busy reactors: while an SPDK thread that serves
//!   these bdevs is busy with other I/O, they share a CPU budget
//!   ([`cpu_budget`]), so a disk-backed bdev cannot take the CPU a busy
//!   namespace on memory needs.
//! - FLUSH is supported (every acknowledged write is already persistent, so
//!   it completes at once); SPDK 20.07's module refused it.
//! - A block libpmemblk cannot read (`pmemblk_set_error`, or a media error)
//!   is reported to hosts as an NVMe Unrecovered Read Error, not a generic
//!   failure.
//!
//! Pools are the same libpmemblk pools either module opens; the bdev's
//! `save_config` entry is the same `bdev_pmem_create` call.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use crate::bdev::module::{
    self, BdevIo, BdevProps, BlockDevice, DeferredIo, IoStatus, IoType, Module,
};
use crate::bdev::Bdev;
use crate::error::{Error, Result};
use crate::pmem::{Pool, MIN_BLOCK_SIZE};
use crate::sync::{Arc, InFlight, InFlightGuard, WorkQueue};
use crate::thread::AppThread;
use counts::Counts;

mod counts;
mod rpcs;
pub use rpcs::serve_spdk_rpcs;
pub mod cpu_budget;
pub mod placement;

/// The bdev module's name (SPDK's C one is `pmem`).
pub const MODULE_NAME: &str = "pmem_rs";
/// The product name `bdev_get_bdevs` shows: the C module's, so tools that
/// look for pmem bdevs find these too.
pub const PRODUCT_NAME: &str = "pmemblk disk";

/// Where a bdev's pool I/O runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoThreads {
    /// Inline for a pool on memory (tmpfs, ramfs), on workers otherwise.
    #[default]
    Auto,
    /// On the reactor, like SPDK's C module.
    Inline,
    /// On this many worker threads.
    Workers(usize),
}

impl IoThreads {
    /// Reads `auto`, `inline`/`0`, or a number of worker threads.
    pub fn parse(s: &str) -> Result<IoThreads> {
        match s {
            "auto" => Ok(IoThreads::Auto),
            "inline" | "0" => Ok(IoThreads::Inline),
            n => match n.parse::<usize>() {
                Ok(n) if n <= 1024 => Ok(IoThreads::Workers(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "pmem I/O threads {s:?}: give auto, inline (or 0), or a number of worker \
                     threads up to 1024"
                ))),
            },
        }
    }

    fn resolve(self, pool: &Path) -> usize {
        match self {
            IoThreads::Inline => 0,
            IoThreads::Workers(n) => n,
            IoThreads::Auto if on_memory(pool) => 0,
            IoThreads::Auto => btt_lanes(),
        }
    }
}

/// libpmemblk gives its BTT two lanes per online CPU (blk.c, from
/// sysconf, not the caller's affinity); more threads than lanes only wait
/// for one.
fn btt_lanes() -> usize {
    // SAFETY: sysconf only reads.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    2 * (cpus.max(1) as usize)
}

/// Whether the file lives in memory, where libpmem's msync costs nothing.
fn on_memory(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(c) = crate::cstr::to_c("pool path", &path.to_string_lossy()) else {
        return false;
    };
    // SAFETY: statfs fills `st`; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}

/// The module (registered on first use): what deletes, finds and lists
/// its bdevs.
pub fn module() -> Result<&'static Module> {
    Module::get_or_register(MODULE_NAME)
}

/// Exposes the libpmemblk pool at `pool_path` as the bdev `name`, on the
/// application thread. The pool is checked (`pmemblk_check`) and opened; a pool
/// another process or bdev has open is refused by libpmemblk's lock.
pub fn create(app: AppThread, pool_path: &Path, name: &str, io_threads: IoThreads) -> Result<Bdev> {
    let app = app.check()?;
    let module = module()?;
    crate::bdev::name_free(app, name)?;
    if !Pool::check(pool_path, None)? {
        return Err(Error::Pmem {
            op: "pmemblk_check",
            path: pool_path.to_path_buf(),
            errno: libc::EIO,
            message: "the pool is inconsistent (pmempool check says where)".into(),
        });
    }
    let pool = Pool::open(pool_path, None)?;
    if pool.block_size() < MIN_BLOCK_SIZE || pool.block_count() == 0 {
        return Err(Error::InvalidArgument(format!(
            "pool {}: block size {} below {MIN_BLOCK_SIZE} bytes, or no blocks",
            pool_path.display(),
            pool.block_size()
        )));
    }
    let props = BdevProps::new(
        name,
        PRODUCT_NAME,
        pool.block_size() as u32,
        pool.block_count(),
    );
    let threads = io_threads.resolve(pool_path);
    let pool = Arc::new(pool);
    let counts = Arc::new(Counts::default());
    let workers = (threads > 0)
        .then(|| Workers::start(name, &pool, threads, &counts))
        .transpose()?;
    let disk = PmemDisk {
        pool,
        path: pool_path.to_path_buf(),
        workers,
        windows: Arc::new(cpu_budget::BusyWindows::default()),
        counts,
    };
    module.register_bdev(app, props, disk)
}

/// A pmem bdev of this module; its pool closes when it is deleted
/// ([`Module::delete`]), and the pool file stays.
struct PmemDisk {
    pool: Arc<Pool>,
    path: PathBuf,
    workers: Option<Workers>,
    /// How busy the threads doing its I/O were.
    windows: Arc<cpu_budget::BusyWindows>,
    counts: Arc<Counts>,
}

impl BlockDevice for PmemDisk {
    /// Each thread that does I/O is watched for the workers' CPU budget.
    type Channel = cpu_budget::ThreadWatch;

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read
                | IoType::Write
                | IoType::WriteZeroes
                | IoType::Unmap
                | IoType::Flush
                | IoType::Reset
        )
    }

    fn create_channel(&self) -> Result<cpu_budget::ThreadWatch> {
        cpu_budget::ThreadWatch::start(self.windows.clone())
    }

    fn submit(&self, _channel: &cpu_budget::ThreadWatch, mut io: BdevIo) {
        match (io.io_type(), &self.workers) {
            // Every acknowledged write is already persistent.
            (IoType::Flush, _) => io.complete(IoStatus::Success),
            (IoType::Reset, None) => io.complete(IoStatus::Success),
            (IoType::Reset, Some(w)) => {
                if let Ok(io) = io.defer() {
                    w.reset(io)
                }
            }
            // Only what persists blocks: a read is a copy out of the mapped
            // pool (page cache for a file), faster inline than a thread hop
            // (measured, docs/pmem-modules.md)...
            (IoType::Write | IoType::WriteZeroes | IoType::Unmap, Some(w)) => w.submit(io),
            // ...unless workers are writing: libpmemblk gives each call the
            // next of its lanes in turn and waits for that lane's lock, so
            // a read on the reactor would wait for a worker's msyncs.
            (IoType::Read, Some(w)) if w.in_flight.any() => w.submit(io),
            (io_type, _) => {
                let (offset, count) = (io.offset_blocks(), io.num_blocks());
                let status = execute(&self.pool, io_type, offset, count, io.segments_mut());
                count_media_error(&self.counts, status);
                io.complete(status);
            }
        }
    }

    fn dump_info_json(&self) -> Option<Value> {
        let (watched, busy) = self.windows.counts();
        Some(json!({
            "pmem": {
                "pmem_file": self.path,
                "module": MODULE_NAME,
                "io_threads": self.workers.as_ref().map_or(0, |w| w.threads.len()),
                "busy_cpu_limit_percent": cpu_budget::limit() as f64 / 10.0,
                "budget_waits": self.counts.budget_waits.load(crate::sync::Ordering::Relaxed),
                "media_errors": self.counts.media_errors.load(crate::sync::Ordering::Relaxed),
                "queued_ios": self.workers.as_ref().map_or(0, |w| w.in_flight.count()),
                "watched_windows": watched,
                "busy_windows": busy,
            }
        }))
    }

    fn write_config_json(&self, bdev_name: &str) -> Option<Value> {
        Some(json!({
            "method": "bdev_pmem_create",
            "params": {"name": bdev_name, "pmem_file": self.path},
        }))
    }

    fn figures(&self) -> Option<module::Figures> {
        Some(counts::figures(
            self.pool.block_count(),
            self.pool.block_size(),
            self.workers.as_ref().map_or(0, |w| w.threads.len()),
            self.workers.as_ref().map_or(0, |w| w.in_flight.count()),
            &self.counts,
        ))
    }

    fn destruct(&mut self) {
        if let Some(w) = self.workers.take() {
            w.stop();
        }
    }
}

/// A read that found a block in error is counted.
fn count_media_error(counts: &Counts, status: IoStatus) {
    if status == IoStatus::MEDIA_ERROR {
        counts
            .media_errors
            .fetch_add(1, crate::sync::Ordering::Relaxed);
    }
}

/// Does one I/O against the pool, block by block, as libpmemblk works.
fn execute<'a>(
    pool: &Pool,
    io_type: IoType,
    offset: u64,
    count: u64,
    segments: impl Iterator<Item = &'a mut [u8]>,
) -> IoStatus {
    let bs = pool.block_size();
    let fail = |what: &str, e: Error| {
        crate::log::error(&format!("pmem bdev {}: {what}: {e}", pool.path().display()));
        if e.errno() == Some(libc::EIO) && what == "read" {
            IoStatus::MEDIA_ERROR
        } else {
            IoStatus::Failed
        }
    };
    match io_type {
        IoType::Read | IoType::Write => {
            let mut block = offset;
            for segment in segments {
                if segment.len() % bs != 0 {
                    return IoStatus::Failed;
                }
                for chunk in segment.chunks_exact_mut(bs) {
                    let done = if io_type == IoType::Read {
                        pool.read(block, chunk).map_err(|e| fail("read", e))
                    } else {
                        pool.write(block, chunk).map_err(|e| fail("write", e))
                    };
                    if let Err(status) = done {
                        return status;
                    }
                    block += 1;
                }
            }
            if block - offset == count {
                IoStatus::Success
            } else {
                IoStatus::Failed
            }
        }
        IoType::WriteZeroes | IoType::Unmap => {
            for block in offset..offset.saturating_add(count) {
                if let Err(e) = pool.set_zero(block) {
                    return fail("write zeroes", e);
                }
            }
            IoStatus::Success
        }
        IoType::Flush | IoType::Reset => IoStatus::Success,
        _ => IoStatus::Failed,
    }
}

/// Threads that do a bdev's pool I/O off the reactor.
struct Workers {
    queue: Arc<WorkQueue<Job>>,
    threads: Vec<JoinHandle<()>>,
    in_flight: Arc<InFlight>,
}

/// An I/O for the workers, counted in their bdev's [`InFlight`] until it
/// drops: completed, failed by a panic, or refused by a closed queue.
/// While none is counted, no worker holds one of libpmemblk's lanes: a
/// worker takes a lane only inside a job and gives it back before the job
/// drops.
struct Job {
    io: DeferredIo,
    _counted: InFlightGuard,
}

static WORKER_SERIAL: AtomicUsize = AtomicUsize::new(0);

impl Workers {
    fn start(name: &str, pool: &Arc<Pool>, count: usize, counts: &Arc<Counts>) -> Result<Workers> {
        let queue = Arc::new(WorkQueue::default());
        let in_flight = Arc::new(InFlight::default());
        let mut threads = Vec::with_capacity(count);
        let serial = WORKER_SERIAL.fetch_add(1, Ordering::Relaxed);
        let cpus = placement::worker_cpus();
        for i in 0..count {
            let (jobs, pool, counts) = (queue.clone(), pool.clone(), counts.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("pmem{serial}.{i}"))
                .spawn(move || {
                    placement::schedule_worker(&cpus);
                    work(&jobs, &pool, &counts)
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The threads already started end with the closed queue.
                    queue.close();
                    return Err(Error::InvalidArgument(format!(
                        "bdev {name}: starting pmem I/O thread {i} of {count}: {e}"
                    )));
                }
            }
        }
        Ok(Workers {
            queue,
            threads,
            in_flight,
        })
    }

    /// Queues `io` for the workers; fails it (on this thread) when the
    /// channel cannot take deferred completions.
    fn submit(&self, io: BdevIo) {
        let Ok(io) = io.defer() else {
            return;
        };
        let job = Job {
            io,
            _counted: InFlight::start(&self.in_flight),
        };
        // Refused only once the workers are stopping: dropping the job
        // fails the I/O and uncounts it.
        drop(self.queue.push(job));
    }

    /// Completes a reset once the I/O queued and running before it is done,
    /// from a short-lived thread, so no worker waits.
    fn reset(&self, io: DeferredIo) {
        let in_flight = self.in_flight.clone();
        let waited = std::thread::Builder::new()
            .name("pmem-reset".into())
            .spawn(move || {
                in_flight.wait_none();
                io.complete(IoStatus::Success);
            });
        if let Err(e) = waited {
            crate::log::error(&format!("pmem bdev: reset: {e}"));
        }
    }

    /// Ends the threads; called at destruct, when no I/O is outstanding.
    fn stop(mut self) {
        self.queue.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    /// Workers dropped without [`Workers::stop`] (a bdev whose registration
    /// failed) still end: their queue closes, which wakes and ends them.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// A worker: jobs until the queue closes. Whatever panics while a job runs
/// (the pool I/O, the CPU budget's accounting, a log line), the job drops
/// while unwinding, which fails its I/O and uncounts it, and the worker
/// goes on with the next.
fn work(queue: &WorkQueue<Job>, pool: &Pool, counts: &Counts) {
    while let Some(job) = queue.pop() {
        crate::panics::contain(
            || "a pmem worker's job".to_string(),
            || run(job, pool, counts),
        );
    }
}

fn run(job: Job, pool: &Pool, counts: &Counts) {
    let Job { mut io, _counted } = job;
    let (io_type, offset, count) = (io.io_type(), io.offset_blocks(), io.num_blocks());
    let turn = cpu_budget::Turn::wait();
    if turn.waited {
        counts
            .budget_waits
            .fetch_add(1, crate::sync::Ordering::Relaxed);
    }
    let status = execute(pool, io_type, offset, count, io.segments_mut());
    count_media_error(counts, status);
    turn.end();
    io.complete(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process whose name starts with `pmem` (workers).
    fn worker_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).is_ok_and(|n| n.starts_with("pmem"))
            })
            .count()
    }

    #[test]
    fn workers_dropped_without_stop_end() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::create_with_blocks(dir.path().join("p"), 512, 64, 0o600).unwrap();
        let before = worker_threads();
        let workers = Workers::start("t", &Arc::new(pool), 3, &Arc::default()).unwrap();
        assert_eq!(worker_threads(), before + 3);
        drop(workers);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while worker_threads() > before && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            worker_threads(),
            before,
            "workers left waiting on their queue"
        );
    }

    #[test]
    fn io_threads_parse_and_refuse() {
        assert_eq!(IoThreads::parse("auto").unwrap(), IoThreads::Auto);
        assert_eq!(IoThreads::parse("inline").unwrap(), IoThreads::Inline);
        assert_eq!(IoThreads::parse("0").unwrap(), IoThreads::Inline);
        assert_eq!(IoThreads::parse("8").unwrap(), IoThreads::Workers(8));
        let e = IoThreads::parse("many").unwrap_err().to_string();
        assert!(e.contains("auto, inline"), "{e}");
    }

    #[test]
    fn memory_file_systems_are_served_inline_and_disks_by_workers() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        assert_eq!(IoThreads::Auto.resolve(shm.path()), 0);
        assert!(on_memory(shm.path()));
        let disk = tempfile::tempdir_in("/var/tmp").unwrap();
        if !on_memory(disk.path()) {
            assert_eq!(IoThreads::Auto.resolve(disk.path()), btt_lanes());
        }
        assert_eq!(IoThreads::Workers(3).resolve(shm.path()), 3);
    }

    #[test]
    fn execute_reads_writes_zeroes_and_reports_a_bad_block_as_a_media_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::create_with_blocks(dir.path().join("p"), 512, 64, 0o600).unwrap();
        let mut data: Vec<u8> = (0..1536).map(|i| (i % 251) as u8).collect();
        let (a, b) = data.split_at_mut(512);
        let status = execute(&pool, IoType::Write, 4, 3, [a, b].into_iter());
        assert_eq!(status, IoStatus::Success);
        let mut back = vec![0u8; 1536];
        let status = execute(&pool, IoType::Read, 4, 3, std::iter::once(&mut back[..]));
        assert_eq!(status, IoStatus::Success);
        assert_eq!(back, data);
        let status = execute(&pool, IoType::WriteZeroes, 5, 1, std::iter::empty());
        assert_eq!(status, IoStatus::Success);
        execute(&pool, IoType::Read, 4, 3, std::iter::once(&mut back[..]));
        assert!(back[512..1024].iter().all(|b| *b == 0));
        assert_eq!(back[..512], data[..512]);
        // A buffer shorter than the blocks asked for is a failure, not a
        // partial success.
        let status = execute(&pool, IoType::Read, 4, 3, std::iter::once(&mut back[..512]));
        assert_eq!(status, IoStatus::Failed);
        pool.set_error(6).unwrap();
        let status = execute(&pool, IoType::Read, 6, 1, std::iter::once(&mut back[..512]));
        assert_eq!(status, IoStatus::MEDIA_ERROR);
    }
}
