//! The running nvmf_tgt answers on its RPC socket with the pmem and nvmf
//! methods present: proof that SPDK's libraries are linked whole-archive
//! (a plain static link silently drops the constructor-registered methods).

use crate::common;
use common::*;

#[test]
fn rpc_get_methods_lists_pmem_and_nvmf_methods() {
    let _turn = beside_others();
    let mut target = Target::start(&our_nvmf_tgt(), &[]);
    let methods = target.rpc_json(&["rpc_get_methods"]);
    let names: Vec<&str> = methods
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    for want in [
        "bdev_pmem_create_pool",
        "bdev_pmem_create",
        "bdev_pmem_delete",
        "nvmf_create_transport",
        "nvmf_create_subsystem",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_add_ns",
        "framework_get_subsystems",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let version = target.rpc_json(&["spdk_get_version"]);
    assert_eq!(version["version"], "SPDK v20.07");
    assert!(target.stop().success(), "{}", target.log_text());
}
