//! What a [`Target`] serves now, walked from SPDK's lists on the
//! application thread: its subsystems, and each one's namespaces, allowed
//! hosts, listeners and connected controllers. Each call is a snapshot:
//! the lists change only on that thread, and nothing here yields while
//! walking them.

use super::{Subsystem, Target};
use crate::cstr::from_c;
use crate::error::Result;
use crate::sys;

/// A namespace of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its namespace ID.
    pub nsid: u32,
    /// The bdev it serves.
    pub bdev: String,
}

impl Target {
    /// The target's NVMe subsystems (the discovery subsystem left out), in
    /// SPDK's order.
    pub fn subsystems(&self) -> Result<Vec<Subsystem<'_>>> {
        let tgt = self.as_ptr()?;
        let mut all = Vec::new();
        // SAFETY: the target was just looked up on the application thread,
        // where its subsystem list changes; every pointer comes from it.
        unsafe {
            let mut s = sys::spdk_nvmf_subsystem_get_first(tgt);
            while !s.is_null() {
                if sys::spdk_nvmf_subsystem_get_type(s) == sys::SPDK_NVMF_SUBTYPE_NVME {
                    all.push(Subsystem {
                        target: self,
                        nqn: from_c(sys::spdk_nvmf_subsystem_get_nqn(s)),
                    });
                }
                s = sys::spdk_nvmf_subsystem_get_next(s);
            }
        }
        Ok(all)
    }
}

impl Subsystem<'_> {
    /// Its namespaces, by namespace ID.
    pub fn namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        let s = self.as_ptr()?;
        let mut all = Vec::new();
        // SAFETY: as in Target::subsystems; a namespace's bdev lives while
        // the namespace does.
        unsafe {
            let mut ns = sys::spdk_nvmf_subsystem_get_first_ns(s);
            while !ns.is_null() {
                all.push(NamespaceInfo {
                    nsid: sys::spdk_nvmf_ns_get_id(ns),
                    bdev: from_c(sys::spdk_bdev_get_name(sys::spdk_nvmf_ns_get_bdev(ns))),
                });
                ns = sys::spdk_nvmf_subsystem_get_next_ns(s, ns);
            }
        }
        Ok(all)
    }

    /// The NQNs of the hosts allowed to connect (besides any host, if it
    /// allows any).
    pub fn allowed_hosts(&self) -> Result<Vec<String>> {
        let s = self.as_ptr()?;
        let mut all = Vec::new();
        // SAFETY: as in Target::subsystems.
        unsafe {
            let mut h = sys::spdk_nvmf_subsystem_get_first_host(s);
            while !h.is_null() {
                all.push(from_c(sys::spdk_nvmf_host_get_nqn(h)));
                h = sys::spdk_nvmf_subsystem_get_next_host(s, h);
            }
        }
        Ok(all)
    }

    /// How many addresses it listens on.
    pub fn listener_count(&self) -> Result<usize> {
        let s = self.as_ptr()?;
        let mut count = 0;
        // SAFETY: as in Target::subsystems.
        unsafe {
            let mut l = sys::spdk_nvmf_subsystem_get_first_listener(s);
            while !l.is_null() {
                count += 1;
                l = sys::spdk_nvmf_subsystem_get_next_listener(s, l);
            }
        }
        Ok(count)
    }

    /// How many controllers (connected hosts) it has now.
    pub fn connected_controllers(&self) -> Result<u32> {
        let s = self.as_ptr()?;
        // SAFETY: as in Target::subsystems; the shim only counts the list.
        Ok(unsafe { sys::spdk_pmem_nvmf_subsystem_ctrlr_count(s) })
    }
}
