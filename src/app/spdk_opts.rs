//! [`AppOptions`] as SPDK's `spdk_app_opts`: SPDK's defaults
//! (`spdk_app_opts_init`), then what was given, with the C strings it
//! points at kept alive beside it.

use std::ffi::{c_void, CString};

use super::{AppOptions, EnvOptions, NO_HUGE_DEFAULT_MEM_MB};
use crate::error::{Error, Result};
use crate::sys;

pub(super) fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// `spdk_app_opts` made from [`AppOptions`], with the C strings its
/// pointers point into (a `CString`'s buffer stays put when it moves).
pub(super) struct SpdkAppOpts {
    pub(super) opts: sys::spdk_app_opts,
    strings: Vec<CString>,
}

impl SpdkAppOpts {
    /// The conversion: it only fills a struct (SPDK's defaults first, from
    /// `spdk_app_opts_init`), so unit tests check it. The log flags (SPDK
    /// globals) and the PCI lists (malloc'ed for SPDK) are `run`'s.
    pub(super) fn new(o: &AppOptions) -> Result<SpdkAppOpts> {
        // SAFETY: spdk_app_opts_init fills every field of a zeroed struct we own.
        let mut opts: sys::spdk_app_opts = unsafe { std::mem::zeroed() };
        // SAFETY: `opts` is a valid, writable spdk_app_opts.
        unsafe { sys::spdk_app_opts_init(&mut opts) };
        let mut spdk = SpdkAppOpts {
            opts,
            strings: Vec::new(),
        };
        spdk.opts.name = spdk.keep("name", &o.name)?;
        if let Some(p) = &o.config_file {
            spdk.opts.config_file = spdk.keep("config file", &p.to_string_lossy())?;
        }
        if let Some(p) = &o.json_config_file {
            spdk.opts.json_config_file = spdk.keep("JSON config", &p.to_string_lossy())?;
        }
        spdk.opts.json_config_ignore_errors = o.json_config_ignore_errors;
        if let Some(addr) = &o.rpc_addr {
            spdk.opts.rpc_addr = spdk.keep("RPC address", addr)?;
        }
        if let Some(mask) = &o.reactor_mask {
            spdk.opts.reactor_mask = spdk.keep("core mask", mask)?;
        }
        if let Some(mask) = &o.tpoint_group_mask {
            spdk.opts.tpoint_group_mask = spdk.keep("tracepoint mask", mask)?;
        }
        spdk.opts.enable_coredump = o.enable_coredump;
        if o.silence_noticelog {
            spdk.opts.print_level = sys::SPDK_LOG_WARN;
        }
        spdk.opts.delay_subsystem_init = o.wait_for_rpc;
        if let Some(n) = o.num_trace_entries {
            spdk.opts.num_entries = n;
        }
        spdk.set_env(&o.env)?;
        Ok(spdk)
    }

    fn set_env(&mut self, env: &EnvOptions) -> Result<()> {
        if let Some(id) = env.shm_id {
            self.opts.shm_id = id;
        }
        if let Some(n) = env.mem_channel {
            self.opts.mem_channel = n;
        }
        if let Some(core) = env.master_core {
            self.opts.master_core = core;
        }
        match (env.mem_size_mb, env.no_huge) {
            (Some(mb), _) => self.opts.mem_size = mb,
            (None, true) => self.opts.mem_size = NO_HUGE_DEFAULT_MEM_MB,
            (None, false) => {}
        }
        self.opts.no_pci = env.no_pci || env.no_huge;
        self.opts.hugepage_single_segments = env.hugepage_single_segments;
        self.opts.unlink_hugepage = env.unlink_hugepage;
        if let Some(dir) = &env.hugedir {
            self.opts.hugedir = self.keep("hugepage dir", &dir.to_string_lossy())?;
        }
        match (&env.iova_mode, env.no_huge) {
            (Some(mode), _) => self.opts.iova_mode = self.keep("IOVA mode", mode)?,
            (None, true) => self.opts.iova_mode = self.keep("IOVA mode", "va")?,
            (None, false) => {}
        }
        if let Some(addr) = env.base_virtaddr {
            self.opts.base_virtaddr = addr;
        }
        if env.no_huge {
            // 20.07 passes env_context to DPDK as exactly one argument.
            self.opts.env_context = self.keep("env context", "--no-huge")? as *mut c_void;
        }
        Ok(())
    }

    /// Keeps `s` as a C string for as long as the options, and points at it.
    fn keep(&mut self, what: &str, s: &str) -> Result<*const std::os::raw::c_char> {
        let c = c_string(what, s)?;
        let ptr = c.as_ptr();
        self.strings.push(c);
        Ok(ptr)
    }

    /// The PCI block or allow list, malloc'ed for SPDK, which frees it.
    pub(super) fn set_pci_lists(&mut self, env: &EnvOptions) -> Result<()> {
        let (list, addrs) = if env.pci_allowed.is_empty() {
            (&mut self.opts.pci_blacklist, &env.pci_blocked)
        } else {
            (&mut self.opts.pci_whitelist, &env.pci_allowed)
        };
        if !addrs.is_empty() {
            *list = pci_addr_array(addrs)?;
            self.opts.num_pci_addr = addrs.len();
        }
        Ok(())
    }
}

/// Parses PCI addresses into a malloc'ed array, which SPDK frees after use.
fn pci_addr_array(addrs: &[String]) -> Result<*mut sys::spdk_pci_addr> {
    // SAFETY: calloc of a count and element size; checked for NULL below.
    let array = unsafe { libc::calloc(addrs.len(), std::mem::size_of::<sys::spdk_pci_addr>()) }
        as *mut sys::spdk_pci_addr;
    if array.is_null() {
        return Err(Error::spdk(
            "allocating the PCI address list",
            -libc::ENOMEM,
        ));
    }
    for (i, bdf) in addrs.iter().enumerate() {
        let parsed = CString::new(bdf.as_str()).ok().filter(|c| {
            // SAFETY: `array` has `addrs.len()` elements and `i` is in range.
            unsafe { sys::spdk_pci_addr_parse(array.add(i), c.as_ptr()) == 0 }
        });
        if parsed.is_none() {
            // SAFETY: `array` came from calloc and is not shared yet.
            unsafe { libc::free(array as *mut c_void) };
            return Err(Error::InvalidArgument(format!(
                "invalid PCI address {bdf:?} (expected domain:bus:device.function)"
            )));
        }
    }
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppOptions;

    fn c(p: *const std::os::raw::c_char) -> String {
        // SAFETY: NULL or a string the SpdkAppOpts under test keeps.
        unsafe { crate::cstr::from_c(p) }
    }

    #[test]
    fn the_conversion_to_spdk_app_opts_keeps_spdks_defaults_and_sets_what_is_given() {
        let defaults = SpdkAppOpts::new(&AppOptions::new("t")).unwrap();
        assert_eq!(c(defaults.opts.name), "t");
        assert_eq!(c(defaults.opts.rpc_addr), "/var/tmp/spdk.sock");
        assert!(defaults.opts.iova_mode.is_null() && defaults.opts.env_context.is_null());
        assert!(!defaults.opts.no_pci && defaults.opts.enable_coredump);

        let o = AppOptions::new("nvmf")
            .rpc_addr("/tmp/x.sock")
            .reactor_mask("0x3")
            .shm_id(7)
            .silence_noticelog(true)
            .wait_for_rpc(true)
            .enable_coredump(false)
            .no_huge(true);
        let spdk = SpdkAppOpts::new(&o).unwrap();
        assert_eq!(c(spdk.opts.rpc_addr), "/tmp/x.sock");
        assert_eq!(c(spdk.opts.reactor_mask), "0x3");
        assert_eq!(spdk.opts.shm_id, 7);
        assert_eq!(spdk.opts.print_level, sys::SPDK_LOG_WARN);
        assert!(spdk.opts.delay_subsystem_init && !spdk.opts.enable_coredump);
        // --no-huge: DPDK's flag as the one env_context argument, IOVA va,
        // no PCI, and 1 GiB unless a size is given.
        assert_eq!(c(spdk.opts.env_context as *const _), "--no-huge");
        assert_eq!(c(spdk.opts.iova_mode), "va");
        assert!(spdk.opts.no_pci);
        assert_eq!(spdk.opts.mem_size, NO_HUGE_DEFAULT_MEM_MB);
        let sized = SpdkAppOpts::new(&o.clone().mem_size_mb(300).iova_mode("pa")).unwrap();
        assert_eq!(
            (sized.opts.mem_size, c(sized.opts.iova_mode)),
            (300, "pa".into())
        );

        match SpdkAppOpts::new(&AppOptions::new("t").rpc_addr("a\0b")) {
            Err(e) => assert!(e.to_string().contains("NUL"), "{e}"),
            Ok(_) => panic!("a NUL byte in the RPC address was taken"),
        }
    }
}
