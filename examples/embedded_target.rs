//! An NVMe-oF target embedded in a Rust program through the library API alone
//! (no RPC): a libpmemblk pool, the pmem bdev, a subsystem with a TCP
//! listener and the bdev as its namespace; it serves until Ctrl-C.
//!
//! ```sh
//! cargo run --example embedded_target -- --pool /dev/shm/embedded.pool --port 4421
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::bdev;
use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
use spdk_pmem::pmem::Pool;
use spdk_pmem::thread::{self, AppThread};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Pool file; created (8192 blocks of 4096 bytes) if missing, reused otherwise.
    #[arg(long, default_value = "/dev/shm/embedded.pool")]
    pool: PathBuf,
    /// Subsystem NQN.
    #[arg(long, default_value = "nqn.2016-06.io.spdk:embedded")]
    nqn: String,
    /// Listener address.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Listener port.
    #[arg(long, default_value_t = 4420)]
    port: u16,
    /// Shared-memory id.
    #[arg(long, default_value_t = 0)]
    shm_id: i32,
    /// Core mask.
    #[arg(long, default_value = "0x1")]
    cpumask: String,
    /// RPC socket (SPDK's server still starts; this program does not use it).
    #[arg(long, default_value = "/var/tmp/spdk-embedded.sock")]
    rpc_socket: String,
    /// Run without hugepages.
    #[arg(long)]
    no_huge: bool,
}

async fn configure(args: &Args) -> anyhow::Result<()> {
    // The SPDK-thread token: this future runs on the app thread.
    let app = AppThread::here()?;
    let bdev = bdev::create_pmem_bdev(app, &args.pool, "pmdk0").context("pmem bdev")?;
    let target = Target::default_target(app).context("the nvmf subsystem has no target")?;
    target
        .add_transport(TransportKind::Tcp)
        .await
        .context("TCP transport")?;
    let config = SubsystemConfig::new(&args.nqn)
        .serial_number("SPDK0001")
        .model_number("spdk-pmem embedded")
        .allow_any_host(true);
    let subsystem = target.create_subsystem(&config).context("subsystem")?;
    let listen = ListenAddress::tcp(&args.addr, args.port);
    subsystem.add_listener(&listen).await.context("listener")?;
    let nsid = subsystem
        .add_namespace(bdev.name(), None)
        .context("namespace")?;
    subsystem.start().await.context("starting the subsystem")?;
    // The bdev is looked up again: a client may have deleted it meanwhile.
    println!(
        "serving {} namespace {nsid} ({} blocks of {} bytes, {}) on {listen}; Ctrl-C stops",
        subsystem.nqn(),
        bdev.block_count()?,
        bdev.block_size()?,
        args.pool.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.pool.exists() {
        let pool = Pool::create_with_blocks(&args.pool, 4096, 8192, 0o600)
            .with_context(|| format!("creating pool {}", args.pool.display()))?;
        println!(
            "created {} ({} blocks)",
            args.pool.display(),
            pool.block_count()
        );
    }
    let options = AppOptions::new("embedded_target")
        .reactor_mask(&args.cpumask)
        .shm_id(args.shm_id)
        .rpc_addr(&args.rpc_socket)
        .no_huge(args.no_huge);
    let code = options.run(|| {
        let args = args.clone();
        let spawned = thread::spawn_local(async move {
            if let Err(e) = configure(&args).await {
                eprintln!("embedded_target: {e:#}");
                let _ = app::stop(1);
            }
        });
        if let Err(e) = spawned {
            eprintln!("embedded_target: {e}");
            let _ = app::stop(1);
        }
    })?;
    std::process::exit(code);
}
