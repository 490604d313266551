//! The crash torture's writer: SPDK's own NVMe-oF initiator (lib/nvme, the
//! driver perf, identify and bdevperf use, over its TCP transport) driven
//! from Rust through `spdk-sys`. It writes stamped 4 KiB units (see
//! tests/common/stamp.rs) to namespace 1 with a queue of commands in flight,
//! one per unit at a time, until the connection breaks (the target died or
//! stopped) or the time limit passes, and prints one line per event on stdout:
//!
//! ```text
//! connected SECTOR_SIZE        once the I/O queue is up (flushed at once)
//! issue UNIT GEN               before the write is submitted
//! ack UNIT GEN                 the write completed successfully
//! error UNIT GEN SCT SC        the write completed with an error status
//! flushed SCT SC               with --writes: the NVMe Flush sent once they
//!                              were all acknowledged completed
//! end REASON
//! ```
//!
//! Exit status: 0 when the connection broke or (`--writes`) the flush
//! completed, 2 when set-up failed, 3 when the time limit passed with the
//! target still serving.
//!
//! ```sh
//! cargo run --example stamped_writer -- --port 4420 --subnqn nqn.2016-06.io.spdk:cnode1
//! ```

#[allow(dead_code)]
#[path = "../tests/common/crc32c.rs"]
mod crc32c;
#[allow(dead_code)]
#[path = "../tests/common/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "../tests/common/stamp.rs"]
mod stamp;

use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::io::Write;
use std::ptr::{self, NonNull};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use spdk_sys as sys;
use stamp::{stamp, UNIT};

#[derive(Parser, Debug)]
struct Args {
    /// Target address.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Target port.
    #[arg(long)]
    port: u16,
    /// Subsystem NQN; namespace 1 is written.
    #[arg(long)]
    subnqn: String,
    /// Host NQN to connect as.
    #[arg(
        long,
        default_value = "nqn.2014-08.org.nvmexpress:uuid:70e7a6b0-0000-4000-8000-000000000008"
    )]
    hostnqn: String,
    /// Shared-memory id of this process's SPDK environment.
    #[arg(long, default_value_t = -1)]
    shm_id: i32,
    /// Core mask of this process's SPDK environment.
    #[arg(long, default_value = "0x1")]
    core_mask: String,
    /// Units written: 0 .. UNITS (each 4 KiB).
    #[arg(long, default_value_t = 256)]
    units: u64,
    /// Writes in flight.
    #[arg(long, default_value_t = 16)]
    queue_depth: usize,
    /// Seed of the choice of units.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generation of the first write; each write gets the next one.
    #[arg(long, default_value_t = 1)]
    first_gen: u64,
    /// Give up (exit 3) after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop issuing after this many writes, and once all are acknowledged
    /// send an NVMe Flush (SPDK's bdev_nvme completes a bdev flush without
    /// sending one), print its status and end.
    #[arg(long)]
    writes: Option<u64>,
}

/// One command slot: its DMA buffer, the write it carries, and, once the
/// driver called back, the completion's status field. Only ever reached
/// through shared references (the driver holds a pointer to it), hence Cells.
struct Slot {
    buf: NonNull<u8>,
    write: Cell<Option<(u64, u64)>>,
    status: Cell<Option<u16>>,
}

/// The flush's completion callback: records its status.
extern "C" fn flush_done(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: `arg` is the Cell passed at submission, alive until the flush
    // completed; `cpl` is valid for the duration of the callback.
    unsafe {
        let status = &*(arg as *const Cell<Option<u16>>);
        status.set(Some((*cpl).__bindgen_anon_1.status_raw));
    }
}

/// The driver's completion callback: records the status in the slot.
extern "C" fn write_done(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: `arg` is the `Slot` passed at submission, which lives in a Vec
    // that is neither moved nor freed until the process exits; `cpl` is valid
    // for the duration of the callback. Nothing here can panic.
    unsafe {
        let slot = &*(arg as *const Slot);
        slot.status.set(Some((*cpl).__bindgen_anon_1.status_raw));
    }
}

fn main() {
    let args = Args::parse();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            println!("end set-up failed: {e:#}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// SPDK's environment from ordinary memory (no hugepages, no PCI): the TCP
/// transport needs no physically contiguous memory.
fn init_env(args: &Args) -> anyhow::Result<()> {
    let name = CString::new("stamped_writer")?;
    let mask = CString::new(args.core_mask.as_str())?;
    let iova = CString::new("va")?;
    let no_huge = CString::new("--no-huge")?;
    // SAFETY: a zeroed spdk_env_opts is filled by spdk_env_opts_init.
    let mut opts: sys::spdk_env_opts = unsafe { std::mem::zeroed() };
    // SAFETY: `opts` is a valid, writable spdk_env_opts.
    unsafe { sys::spdk_env_opts_init(&mut opts) };
    opts.name = name.as_ptr();
    opts.core_mask = mask.as_ptr();
    opts.shm_id = args.shm_id;
    opts.mem_size = 256;
    opts.no_pci = true;
    opts.iova_mode = iova.as_ptr();
    // 20.07 passes env_context to DPDK as exactly one argument.
    opts.env_context = no_huge.as_ptr() as *mut c_void;
    // SAFETY: every string `opts` points to outlives the call, which copies
    // what it keeps.
    let rc = unsafe { sys::spdk_env_init(&opts) };
    if rc != 0 {
        bail!("spdk_env_init failed ({rc})");
    }
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<i32> {
    if args.units == 0 || args.queue_depth == 0 || args.queue_depth as u64 > args.units {
        bail!("need 0 < --queue-depth <= --units");
    }
    init_env(args)?;

    let trid_text = CString::new(format!(
        "trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} subnqn:{}",
        args.addr, args.port, args.subnqn
    ))?;
    // SAFETY: zeroed is the documented starting state of a transport id.
    let mut trid: sys::spdk_nvme_transport_id = unsafe { std::mem::zeroed() };
    // SAFETY: `trid` is writable and `trid_text` a valid C string.
    if unsafe { sys::spdk_nvme_transport_id_parse(&mut trid, trid_text.as_ptr()) } != 0 {
        bail!("bad transport id {trid_text:?}");
    }
    // SAFETY: zeroed opts, then filled with the driver's defaults.
    let mut opts: sys::spdk_nvme_ctrlr_opts = unsafe { std::mem::zeroed() };
    let opts_size = std::mem::size_of::<sys::spdk_nvme_ctrlr_opts>();
    // SAFETY: `opts` is writable and `opts_size` its size.
    unsafe { sys::spdk_nvme_ctrlr_get_default_ctrlr_opts(&mut opts, opts_size) };
    let hostnqn = args.hostnqn.as_bytes();
    if hostnqn.len() >= opts.hostnqn.len() {
        bail!("host NQN longer than {} bytes", opts.hostnqn.len() - 1);
    }
    for (dst, &src) in opts.hostnqn.iter_mut().zip(hostnqn) {
        *dst = src as std::ffi::c_char;
    }
    opts.hostnqn[hostnqn.len()] = 0;

    // SAFETY: `trid` and `opts` are initialised; the driver copies them.
    let ctrlr = unsafe { sys::spdk_nvme_connect(&trid, &opts, opts_size) };
    if ctrlr.is_null() {
        bail!("spdk_nvme_connect to {}:{} failed", args.addr, args.port);
    }
    // SAFETY: `ctrlr` is a connected controller.
    let ns = unsafe { sys::spdk_nvme_ctrlr_get_ns(ctrlr, 1) };
    // SAFETY: `ns` is checked for NULL before the second call uses it.
    if ns.is_null() || !unsafe { sys::spdk_nvme_ns_is_active(ns) } {
        bail!("namespace 1 of {} is not active", args.subnqn);
    }
    // SAFETY: `ns` is an active namespace of `ctrlr`.
    let sector = unsafe { sys::spdk_nvme_ns_get_sector_size(ns) } as usize;
    // SAFETY: as above.
    let sectors = unsafe { sys::spdk_nvme_ns_get_num_sectors(ns) };
    if sector == 0 || UNIT % sector != 0 {
        bail!("sector size {sector} does not divide the {UNIT}-byte unit");
    }
    let per_unit = (UNIT / sector) as u64;
    if args.units * per_unit > sectors {
        bail!(
            "{} units need {} sectors, namespace 1 has {sectors}",
            args.units,
            args.units * per_unit
        );
    }
    // SAFETY: `ctrlr` is connected; NULL options ask for the defaults.
    let qpair = unsafe { sys::spdk_nvme_ctrlr_alloc_io_qpair(ctrlr, ptr::null(), 0) };
    if qpair.is_null() {
        bail!("allocating an I/O queue pair failed");
    }
    let slots: Vec<Slot> = (0..args.queue_depth)
        .map(|_| {
            // SAFETY: plain allocation of DMA-able memory, checked for NULL.
            let p = unsafe {
                sys::spdk_zmalloc(
                    UNIT,
                    UNIT,
                    ptr::null_mut(),
                    sys::SPDK_ENV_SOCKET_ID_ANY,
                    sys::SPDK_MALLOC_DMA,
                )
            };
            NonNull::new(p as *mut u8)
                .map(|buf| Slot {
                    buf,
                    write: Cell::new(None),
                    status: Cell::new(None),
                })
                .context("spdk_zmalloc of a unit buffer failed")
        })
        .collect::<anyhow::Result<_>>()?;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "connected {sector}")?;
    out.flush()?;

    let mut rng = rng::Rng::new(args.seed);
    let mut next_gen = args.first_gen;
    let started = Instant::now();
    let mut issued = 0u64;
    loop {
        if args.writes.is_some_and(|n| issued >= n) {
            if slots.iter().all(|s| s.write.get().is_none()) {
                return flush(ctrlr, ns, qpair, &mut out, started, args.seconds);
            }
        } else {
            let failed = issue(
                args,
                ns,
                qpair,
                &slots,
                &mut rng,
                &mut next_gen,
                per_unit,
                &mut out,
            )?;
            if let Some(rc) = failed {
                writeln!(out, "end submission failed ({rc})")?;
                return Ok(0);
            }
            issued = next_gen - args.first_gen;
        }
        // SAFETY: `qpair` is live and used by this thread only.
        let rc = unsafe { sys::spdk_nvme_qpair_process_completions(qpair, 0) };
        for slot in &slots {
            let (Some((unit, gen)), Some(raw)) = (slot.write.get(), slot.status.get()) else {
                continue;
            };
            let (sc, sct) = ((raw >> 1) & 0xff, (raw >> 9) & 0x7);
            if sc == 0 && sct == 0 {
                writeln!(out, "ack {unit} {gen}")?;
            } else {
                writeln!(out, "error {unit} {gen} {sct} {sc}")?;
            }
            slot.write.set(None);
        }
        if rc < 0 {
            writeln!(out, "end connection lost ({rc})")?;
            return Ok(0);
        }
        if started.elapsed() > Duration::from_secs(args.seconds) {
            writeln!(out, "end time limit: the target still serves")?;
            return Ok(3);
        }
    }
}

/// Sends an NVMe Flush of namespace 1 and waits for it; prints its status.
fn flush(
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    ns: *mut sys::spdk_nvme_ns,
    qpair: *mut sys::spdk_nvme_qpair,
    out: &mut impl Write,
    started: Instant,
    seconds: u64,
) -> anyhow::Result<i32> {
    let status: Cell<Option<u16>> = Cell::new(None);
    // SAFETY: `ns` and `qpair` are live; `status` outlives the command (we
    // wait for its completion, or the process exits).
    let rc = unsafe {
        sys::spdk_nvme_ns_cmd_flush(
            ns,
            qpair,
            Some(flush_done),
            &status as *const Cell<Option<u16>> as *mut c_void,
        )
    };
    if rc != 0 {
        writeln!(out, "end flush submission failed ({rc})")?;
        return Ok(0);
    }
    let mut keep_alive = Instant::now();
    while status.get().is_none() {
        // A flush may take long (a write-back cache destages): the admin
        // queue's keep-alive must go on meanwhile.
        if keep_alive.elapsed() > Duration::from_millis(500) {
            keep_alive = Instant::now();
            // SAFETY: `ctrlr` is connected and used by this thread only.
            if unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(ctrlr) } < 0 {
                writeln!(out, "end admin queue lost during the flush")?;
                return Ok(0);
            }
        }
        // SAFETY: as in run's loop.
        if unsafe { sys::spdk_nvme_qpair_process_completions(qpair, 0) } < 0 {
            writeln!(out, "end connection lost during the flush")?;
            return Ok(0);
        }
        if started.elapsed() > Duration::from_secs(seconds) {
            writeln!(out, "end time limit: the flush did not complete")?;
            return Ok(3);
        }
    }
    let raw = status.get().unwrap_or_default();
    writeln!(out, "flushed {} {}", (raw >> 9) & 0x7, (raw >> 1) & 0xff)?;
    writeln!(out, "end flushed")?;
    Ok(0)
}

/// Fills every free slot with the next write of a unit no slot holds;
/// returns the driver's error when a submission failed (the connection is
/// gone).
#[allow(clippy::too_many_arguments)]
fn issue(
    args: &Args,
    ns: *mut sys::spdk_nvme_ns,
    qpair: *mut sys::spdk_nvme_qpair,
    slots: &[Slot],
    rng: &mut rng::Rng,
    next_gen: &mut u64,
    per_unit: u64,
    out: &mut impl Write,
) -> anyhow::Result<Option<i32>> {
    for slot in slots {
        if slot.write.get().is_some() {
            continue;
        }
        if args.writes.is_some_and(|n| *next_gen - args.first_gen >= n) {
            return Ok(None);
        }
        let unit = loop {
            let u = rng.below(args.units);
            if !slots
                .iter()
                .any(|s| s.write.get().map(|(w, _)| w) == Some(u))
            {
                break u;
            }
        };
        let gen = *next_gen;
        *next_gen += 1;
        // SAFETY: `buf` holds UNIT bytes and no command uses it now.
        unsafe { std::slice::from_raw_parts_mut(slot.buf.as_ptr(), UNIT) }
            .copy_from_slice(&stamp(unit, gen));
        slot.write.set(Some((unit, gen)));
        slot.status.set(None);
        writeln!(out, "issue {unit} {gen}")?;
        // SAFETY: `ns` and `qpair` are live; the buffer and the slot stay
        // in place until the callback ran or the process exits.
        let rc = unsafe {
            sys::spdk_nvme_ns_cmd_write(
                ns,
                qpair,
                slot.buf.as_ptr() as *mut c_void,
                unit * per_unit,
                per_unit as u32,
                Some(write_done),
                slot as *const Slot as *mut c_void,
                0,
            )
        };
        if rc != 0 {
            return Ok(Some(rc));
        }
    }
    Ok(None)
}
