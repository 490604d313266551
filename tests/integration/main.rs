//! Every test that starts a process of its own (a target, SPDK's tools, a
//! Ceph cluster, the Linux host's VM) as modules of one test binary: one
//! link instead of thirty. Run one part with its module's name, e.g.
//! `cargo test --test integration linux_host::`.
//!
//! The harness runs two tests at a time; each test takes its turn first
//! (`common::serial`), so one that measures or loads both cores runs alone.
//! Tests that run the library inside the test process itself (one SPDK
//! application per process) are binaries of their own beside this one.

#[path = "../common/mod.rs"]
mod common;
mod nvme_tcp;

mod aer_accounting;
mod article_rpc;
mod auth_host;
mod bad_input;
mod conflicts;
mod connect_flood;
mod crash_torture;
mod dhchap;
mod drop_in;
mod embedded_example;
mod example_module;
mod fetch_source;
mod idle_nap;
mod linux_host;
mod metrics;
mod no_huge;
mod ns_masking;
mod nvme_fuzz;
mod nvme_tcp_hostile;
mod persistence;
mod pmem_modules;
mod rbd_cluster;
mod rbd_faults;
mod rbd_namespace;
mod rdma_host;
mod rpc_bad_input;
mod rpc_fuzz;
mod rpc_methods;
mod rpc_vocabularies;
mod save_config;
mod spdk_nvmf_scripts;
mod spdk_rpc_26_coverage;
mod spdk_tools;
mod writeback_cache;
mod writeback_faults;

/// Each test of this binary takes [`common::alone`] or
/// [`common::beside_others`] as its first statement: one that took neither
/// would overlap a test that measures, and fail it now and then.
#[test]
fn every_test_takes_a_turn() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in rust_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, first) in tests_and_first_statements(&text) {
            checked += 1;
            if !(first.contains("alone()") || first.contains("beside_others()")) {
                missing.push(format!("{}: {name}: {first}", file.display()));
            }
        }
    }
    // These only read files: no turn needed.
    missing.retain(|m| {
        !m.contains(": every_test_takes_a_turn:")
            && !m.contains(": every_child_starts_through_common_command:")
    });
    assert!(
        checked > 90,
        "found only {checked} tests under {}",
        dir.display()
    );
    assert!(
        missing.is_empty(),
        "tests that take no turn (common::serial):\n{}",
        missing.join("\n")
    );
}

/// Children start through [`common::command`], so that none inherits a
/// descriptor a C library in this process opened without `O_CLOEXEC`.
#[test]
fn every_child_starts_through_common_command() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut direct = Vec::new();
    for dir in ["integration", "common"] {
        for file in rust_files(&root.join(dir)) {
            if file.ends_with("common/process.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains(concat!("Command", "::new(")) {
                    direct.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        direct.is_empty(),
        "children started without common::command:\n{}",
        direct.join("\n")
    );
}

fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Each test function at the top level of `text` (unit tests of helpers,
/// in an indented `mod tests`, start no process and take no turn): its name
/// and the first line of its body that is not a comment.
fn tests_and_first_statements(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (at, _) in lines.iter().enumerate().filter(|(_, l)| **l == "#[test]") {
        let Some(sig) = lines[at..].iter().position(|l| l.contains("fn ")) else {
            continue;
        };
        let sig = at + sig;
        let name = lines[sig]
            .split("fn ")
            .nth(1)
            .and_then(|r| r.split(['(', '<']).next())
            .unwrap_or("?")
            .to_string();
        let Some(open) = lines[sig..].iter().position(|l| l.ends_with('{')) else {
            continue;
        };
        let first = lines[sig + open + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && !l.starts_with("//"))
            .unwrap_or("")
            .to_string();
        found.push((name, first));
    }
    found
}
