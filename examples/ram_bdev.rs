//! A bdev module written in Rust: a RAM disk, registered with SPDK's bdev
//! layer through `spdk_pmem::bdev::module`, checked in-process through the
//! bdev I/O API (`spdk_pmem::bdev::io`), then served over NVMe/TCP.
//!
//! It also answers a JSON-RPC method of its own, `bdev_ram_rs_create`
//! (`{"name", "num_blocks", "block_size"}`), and its bdevs appear in
//! `bdev_get_bdevs` (with their size under `driver_specific`) and in
//! `save_config`.
//!
//! ```sh
//! cargo run --example ram_bdev -- --port 4422
//! ```

use std::sync::{Arc, RwLock};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};
use spdk_pmem::app::{self, AppOptions};
use spdk_pmem::bdev::dma::DmaBuf;
use spdk_pmem::bdev::io::Descriptor;
use spdk_pmem::bdev::module::{BdevIo, BdevProps, BlockDevice, IoStatus, IoType, Module};
use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
use spdk_pmem::rpc::{self, RpcError, RpcStates};
use spdk_pmem::thread::{self, AppThread};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Subsystem NQN.
    #[arg(long, default_value = "nqn.2016-06.io.spdk:ram")]
    nqn: String,
    /// Listener port on 127.0.0.1.
    #[arg(long, default_value_t = 4422)]
    port: u16,
    /// Blocks of the RAM disk (4096 bytes each).
    #[arg(long, default_value_t = 4096)]
    blocks: u64,
    /// Shared-memory id.
    #[arg(long, default_value_t = 0)]
    shm_id: i32,
    /// RPC socket.
    #[arg(long, default_value = "/var/tmp/spdk-ram-bdev.sock")]
    rpc_socket: String,
}

/// The device: blocks in memory, shared by every SPDK thread's I/O.
struct RamDisk {
    block_size: usize,
    data: RwLock<Vec<u8>>,
}

impl BlockDevice for RamDisk {
    /// Nothing per thread.
    type Channel = ();

    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read | IoType::Write | IoType::WriteZeroes | IoType::Unmap | IoType::Flush
        )
    }

    fn create_channel(&self) -> spdk_pmem::Result<()> {
        Ok(())
    }

    fn submit(&self, _channel: &(), mut io: BdevIo) {
        let start = io.offset_blocks() as usize * self.block_size;
        let len = io.num_blocks() as usize * self.block_size;
        match io.io_type() {
            IoType::Read => {
                let data = self.data.read().unwrap();
                let mut at = start;
                for segment in io.segments_mut() {
                    segment.copy_from_slice(&data[at..at + segment.len()]);
                    at += segment.len();
                }
            }
            IoType::Write => {
                let mut data = self.data.write().unwrap();
                let mut at = start;
                for segment in io.segments() {
                    data[at..at + segment.len()].copy_from_slice(segment);
                    at += segment.len();
                }
            }
            IoType::WriteZeroes | IoType::Unmap => {
                self.data.write().unwrap()[start..start + len].fill(0);
            }
            // Memory has nothing to make durable.
            IoType::Flush => {}
            // Refused by io_type_supported; dropping the I/O would fail it too.
            _ => return io.complete(IoStatus::Failed),
        }
        io.complete(IoStatus::Success);
    }

    fn dump_info_json(&self) -> Option<Value> {
        Some(json!({"ram_rs": {"bytes": self.data.read().unwrap().len()}}))
    }

    fn write_config_json(&self, bdev_name: &str) -> Option<Value> {
        let bytes = self.data.read().unwrap().len();
        Some(json!({
            "method": "bdev_ram_rs_create",
            "params": {
                "name": bdev_name,
                "num_blocks": bytes / self.block_size,
                "block_size": self.block_size,
            }
        }))
    }
}

fn create_ram_bdev(
    app: AppThread,
    name: &str,
    num_blocks: u64,
    block_size: u32,
) -> spdk_pmem::Result<()> {
    let module = Module::get_or_register("ram_rs")?;
    let bytes = num_blocks
        .checked_mul(u64::from(block_size))
        .filter(|b| *b <= 1 << 34)
        .ok_or_else(|| spdk_pmem::Error::InvalidArgument("a RAM disk of at most 16 GiB".into()))?;
    let disk = RamDisk {
        block_size: block_size as usize,
        data: RwLock::new(vec![0; bytes as usize]),
    };
    let props = BdevProps::new(name, "Rust RAM disk", block_size, num_blocks);
    module.register_bdev(app, props, disk)?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    num_blocks: u64,
    block_size: u32,
}

/// Writes a pattern to the first 64 blocks through the bdev I/O API and
/// reads it back.
async fn verify(app: AppThread, name: &str) -> anyhow::Result<u64> {
    let spdk = app.spdk();
    let desc = Descriptor::open(app, name, true)?;
    let ch = desc.channel()?;
    let bs = desc.block_size() as usize;
    let blocks = desc.num_blocks().min(64);
    for lba in 0..blocks {
        let mut buf = DmaBuf::new(spdk, bs, bs)?;
        buf.fill(lba as u8 ^ 0xa5);
        let (_, written) = ch.write(lba, buf).await;
        written.with_context(|| format!("writing block {lba}"))?;
    }
    let (back, read) = ch
        .read(0, DmaBuf::new(spdk, blocks as usize * bs, bs)?)
        .await;
    read.context("reading back")?;
    for (lba, block) in back.chunks(bs).enumerate() {
        anyhow::ensure!(
            block.iter().all(|b| *b == lba as u8 ^ 0xa5),
            "block {lba} read back different"
        );
    }
    ch.write_zeroes(0, blocks).await.context("zeroing")?;
    Ok(blocks)
}

async fn configure(args: &Args) -> anyhow::Result<()> {
    let app = AppThread::here()?;
    create_ram_bdev(app, "ram0", args.blocks, 4096).context("RAM bdev")?;
    let checked = verify(app, "ram0").await.context("in-process check")?;
    println!("verified {checked} blocks of ram0 through the bdev I/O API");

    let target = Target::default_target(app).context("the nvmf subsystem has no target")?;
    target
        .add_transport(TransportKind::Tcp)
        .await
        .context("TCP transport")?;
    let config = SubsystemConfig::new(&args.nqn)
        .serial_number("RAM0001")
        .allow_any_host(true);
    let subsystem = target.create_subsystem(&config).context("subsystem")?;
    let listen = ListenAddress::tcp("127.0.0.1", args.port);
    subsystem.add_listener(&listen).await.context("listener")?;
    subsystem.add_namespace("ram0", None).context("namespace")?;
    subsystem.start().await.context("starting the subsystem")?;
    println!("serving ram0 as {} on {listen}; Ctrl-C stops", args.nqn);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rpc::register_typed_method(
        "bdev_ram_rs_create",
        RpcStates::Runtime,
        |p: CreateParams| -> Result<String, RpcError> {
            create_ram_bdev(AppThread::here()?, &p.name, p.num_blocks, p.block_size)?;
            Ok(p.name)
        },
    )?;
    let options = AppOptions::new("ram_bdev")
        .reactor_mask("0x1")
        .shm_id(args.shm_id)
        .rpc_addr(&args.rpc_socket);
    let shared = Arc::new(args);
    let code = options.run(move || {
        let args = shared.clone();
        let spawned = thread::spawn_local(async move {
            if let Err(e) = configure(&args).await {
                eprintln!("ram_bdev: {e:#}");
                let _ = app::stop(1);
            }
        });
        if let Err(e) = spawned {
            eprintln!("ram_bdev: {e}");
            let _ = app::stop(1);
        }
    })?;
    std::process::exit(code);
}
