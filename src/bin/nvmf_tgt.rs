//! `nvmf_tgt`: a drop-in for SPDK 20.07's C NVMe-oF target. Same flags, same
//! JSON-RPC socket; SPDK's `scripts/rpc.py` configures it unchanged.

use clap::Parser;
use spdk_pmem::cli::{Args, ModuleChoice};

fn main() {
    let args = Args::parse();
    if args.version {
        println!("{}", spdk_pmem::build::spdk_version());
        return;
    }
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(Exit { code, message }) => {
            eprintln!("nvmf_tgt: {message}");
            std::process::exit(code);
        }
    }
}

/// How the process ends when it cannot serve: 2 for flags that do not make
/// sense together (the C target's code for bad usage), 1 for anything
/// that failed while setting up or running.
struct Exit {
    code: i32,
    message: String,
}

fn usage(e: impl std::fmt::Display) -> Exit {
    Exit {
        code: 2,
        message: e.to_string(),
    }
}

fn failed(e: impl std::fmt::Display) -> Exit {
    Exit {
        code: 1,
        message: e.to_string(),
    }
}

fn run(args: &Args) -> Result<i32, Exit> {
    if args.max_delay.is_some() {
        eprintln!(
            "Deprecation warning: The maximum allowed latency parameter is no longer supported."
        );
    }
    let options = args.app_options().map_err(usage)?;
    args.tcp_connect_limits().apply().map_err(usage)?;
    // Beyond 20.07's RPC vocabulary: newer clients' default-valued fields and
    // the article's construct_nvmf_subsystem.
    spdk_pmem::rpc::set_filter(Box::new(spdk_pmem::rpc_compat::filter));
    if args.pmem_module == ModuleChoice::Rust {
        spdk_pmem::pmem_bdev::cpu_budget::set_limit(
            (args.pmem_busy_cpu_limit * 10.0).round() as u32
        );
        spdk_pmem::pmem_bdev::placement::set_worker_cpus(args.pmem_io_cpumask.clone());
        spdk_pmem::pmem_bdev::serve_spdk_rpcs(args.pmem_io_threads).map_err(failed)?;
    }
    #[cfg(feature = "rbd")]
    if args.rbd_module == ModuleChoice::Rust {
        spdk_pmem::rbd::bdev::serve_spdk_rpcs().map_err(failed)?;
    }
    spdk_pmem::writeback::rpc::serve_rpcs().map_err(failed)?;
    #[cfg(feature = "test-hooks")]
    spdk_pmem::test_hooks::serve_rpcs().map_err(failed)?;
    spdk_pmem::construct_subsystem::register().map_err(failed)?;
    spdk_pmem::auth::serve().map_err(failed)?;
    // The C nvmf_tgt's start callback does nothing: the nvmf subsystem and the
    // RPC server, both started by spdk_app_start, do the work. Ours starts
    // the reactors' naps (--idle-nap-us) and the metrics endpoint
    // (--metrics) there.
    let nap = std::time::Duration::from_micros(args.idle_nap_us);
    let metrics = args.metrics.clone();
    options
        .run(|| {
            if let Err(e) = spdk_pmem::reactor_sleep::start(nap) {
                eprintln!("nvmf_tgt: starting the reactors' idle naps: {e}");
                let _ = spdk_pmem::app::stop(1);
            }
            if let Some(addr) = &metrics {
                let started = spdk_pmem::thread::AppThread::here()
                    .and_then(|app| spdk_pmem::metrics::start(app, addr));
                if let Err(e) = started {
                    eprintln!("nvmf_tgt: {e}");
                    let _ = spdk_pmem::app::stop(1);
                }
            }
        })
        .map_err(failed)
}
