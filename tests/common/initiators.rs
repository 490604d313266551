//! SPDK's initiators against a target: spdk_dd, identify, perf, bdevperf,
//! and what their output must show.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{output_text, spdk_tool};

/// The transport ID string SPDK's initiators take.
pub fn trid(nqn: &str, port: u16) -> String {
    format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{nqn}")
}

/// SPDK's spdk_dd with the initiator config `config` (`nvme_bdev_config`),
/// on core 1, 4 KiB at a time, and `args`; its output and status, unchecked.
pub fn spdk_dd(config: &Path, args: &[&str]) -> Output {
    spdk_dd_command(config, args)
        .output()
        .expect("running spdk_dd")
}

/// The command [`spdk_dd`] runs, for callers that start it in the
/// background.
pub fn spdk_dd_command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = super::command(spdk_tool("build/bin/spdk_dd"));
    cmd.args([
        "--json",
        config.to_str().unwrap(),
        "-m",
        "0x2",
        "--bs",
        "4096",
    ])
    .args(args)
    .stdin(Stdio::null());
    cmd
}

/// Writes the file `input` to the namespace Nvme0n1 of `config` from block
/// `seek` on, with spdk_dd.
pub fn dd_to_namespace(config: &Path, input: &Path, seek: u64) {
    let (input, seek) = (input.to_str().unwrap(), seek.to_string());
    spdk_dd_ok(config, &["--if", input, "--ob", "Nvme0n1", "--seek", &seek]);
}

/// Reads `count` blocks from block `skip` of the namespace Nvme0n1 of
/// `config` into the file `output`, with spdk_dd.
pub fn dd_from_namespace(config: &Path, output: &Path, skip: u64, count: u64) {
    let (output, skip, count) = (
        output.to_str().unwrap(),
        skip.to_string(),
        count.to_string(),
    );
    spdk_dd_ok(
        config,
        &[
            "--ib", "Nvme0n1", "--of", output, "--skip", &skip, "--count", &count,
        ],
    );
}

/// [`spdk_dd`] that must succeed.
pub fn spdk_dd_ok(config: &Path, args: &[&str]) {
    let out = spdk_dd(config, args);
    assert!(
        out.status.success(),
        "spdk_dd {args:?}: {}",
        output_text(&out)
    );
}

/// Runs one of SPDK's programs to completion; panics with its output if it fails.
pub fn run_tool(rel: &str, args: &[&str]) -> String {
    let out = super::command(spdk_tool(rel))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {rel}: {e}"));
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{rel} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// SPDK's identify over the fabric, on core 1.
pub fn identify(nqn: &str, port: u16) -> String {
    run_tool(
        "build/examples/identify",
        &["-r", &trid(nqn, port), "-p", "1"],
    )
}

/// The value after `key:` on identify's first line that has it.
pub fn identify_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("{key} not in identify output:\n{text}"))
}

/// The data size of the namespace's current LBA format, from identify's output.
pub fn identify_block_size(text: &str) -> u64 {
    let format = identify_field(text, "Current LBA Format");
    let number = format.trim_start_matches("LBA Format #").to_string();
    let key = format!("LBA Format #{number}: Data Size");
    identify_field(text, &key)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data size for format {number}:\n{text}"))
}

/// SPDK's perf over the fabric on core 1; returns (IOPS, average latency in us).
pub fn perf(nqn: &str, port: u16, workload: &str, seconds: u32) -> (f64, f64) {
    let t = seconds.to_string();
    let trid = trid(nqn, port);
    let mut args = vec![
        "-r", &trid, "-q", "32", "-o", "4096", "-w", workload, "-t", &t, "-c", "0x2",
    ];
    if workload.ends_with("rw") {
        args.extend(["-M", "50"]);
    }
    let text = run_tool("build/examples/perf", &args);
    check_perf(&text)
}

/// perf's (IOPS, average latency in us), after making sure the run had no
/// I/O error: 20.07's perf counts an I/O that completed with an error status
/// as completed (printing "completed with error") and exits 0.
pub fn check_perf(text: &str) -> (f64, f64) {
    for bad in ["completed with error", "*ERROR*"] {
        assert!(!text.contains(bad), "perf printed {bad:?}:\n{text}");
    }
    let total = text
        .lines()
        .find(|l| l.starts_with("Total"))
        .unwrap_or_else(|| panic!("no Total line in perf output:\n{text}"));
    let cols: Vec<f64> = total
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    assert!(cols.len() >= 3 && cols[0] > 0.0, "perf did no I/O:\n{text}");
    (cols[0], cols[2])
}

/// A JSON config for SPDK apps (spdk_dd, bdevperf) attaching the target's
/// subsystem as bdev `Nvme0n1` over TCP.
pub fn nvme_bdev_config(dir: &Path, nqn: &str, port: u16) -> PathBuf {
    let config = serde_json::json!({
        "subsystems": [{
            "subsystem": "bdev",
            "config": [{
                "method": "bdev_nvme_attach_controller",
                "params": {
                    "name": "Nvme0", "trtype": "tcp", "adrfam": "ipv4",
                    "traddr": "127.0.0.1", "trsvcid": port.to_string(), "subnqn": nqn
                }
            }]
        }]
    });
    let path = dir.join("initiator.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// bdevperf `-w verify` for 1 s on core 1 through SPDK's NVMe bdev attached
/// to the target's `nqn`: writes `io_size`-byte I/Os, reads them back and
/// compares. Returns its exit status and output, for `check_bdevperf`.
pub fn bdevperf_verify(
    dir: &Path,
    nqn: &str,
    port: u16,
    io_size: u32,
) -> (std::process::ExitStatus, String) {
    let config = nvme_bdev_config(dir, nqn, port);
    let out = super::command(spdk_tool("test/bdev/bdevperf/bdevperf"))
        .args(["--json", config.to_str().unwrap()])
        .args(["-q", "8", "-o", &io_size.to_string(), "-w", "verify"])
        .args(["-t", "1", "-m", "0x2"])
        .stdin(Stdio::null())
        .output()
        .expect("running bdevperf");
    (out.status, output_text(&out))
}

/// bdevperf's run must have succeeded: exit 0, no failed or miscompared I/O
/// (20.07 prints "Buffer mismatch" and "... fails"), and a Total line with
/// I/Os in it.
pub fn check_bdevperf(status: std::process::ExitStatus, out: &str) {
    if let Err(e) = bdevperf_succeeded(status, out) {
        panic!("{e}");
    }
}

/// What `check_bdevperf` checks, as a `Result` for callers that count failures.
pub fn bdevperf_succeeded(status: std::process::ExitStatus, out: &str) -> Result<(), String> {
    if !status.success() {
        return Err(format!("bdevperf failed ({status}):\n{out}"));
    }
    if let Some(bad) = ["Buffer mismatch", " fails", "error"]
        .into_iter()
        .find(|bad| out.contains(bad))
    {
        return Err(format!("bdevperf printed {bad:?}:\n{out}"));
    }
    let iops = out
        .lines()
        .filter_map(|l| l.trim_start_matches('\r').trim().strip_prefix("Total"))
        .filter_map(|l| {
            l.trim_start_matches([' ', ':'])
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .next_back();
    if iops.is_some_and(|v| v > 0.0) {
        Ok(())
    } else {
        Err(format!("bdevperf did no I/O:\n{out}"))
    }
}
