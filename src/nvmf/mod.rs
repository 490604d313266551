//! NVMe over Fabrics: the target, its transports, subsystems, listeners,
//! namespaces and allowed hosts, on SPDK's `lib/nvmf`.
//!
//! Everything here runs on the application thread (as SPDK's nvmf RPCs do);
//! operations that SPDK completes by callback return futures to await inside
//! [`crate::thread::spawn_local`]. A failed call leaves nothing half-created:
//! a subsystem whose serial number is refused is destroyed again, a listener
//! the subsystem refuses stops listening.
//!
//! Handles hold names, not pointers: a client may delete a target or a
//! subsystem over RPC at any moment, so each call looks the object up again
//! and fails with [`Error::NotFound`] once it is gone. A [`Subsystem`] borrows
//! its [`Target`], the default target cannot be destroyed, and an active
//! subsystem cannot be destroyed (a typed error instead).
//!
//! ```no_run
//! use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
//! use spdk_pmem::thread::AppThread;
//!
//! async fn serve() -> spdk_pmem::Result<()> {
//!     let target = Target::default_target(AppThread::here()?)?;
//!     target.add_transport(TransportKind::Tcp).await?;
//!     let config = SubsystemConfig::new("nqn.2016-06.io.spdk:cnode1")
//!         .serial_number("SPDK0001")
//!         .allow_any_host(true);
//!     let subsystem = target.create_subsystem(&config)?;
//!     subsystem.add_listener(&ListenAddress::tcp("127.0.0.1", 4420)).await?;
//!     subsystem.add_namespace("pmdk0", None)?;
//!     subsystem.start().await
//! }
//! ```
//!
//! A destroyed subsystem cannot be used, and a subsystem cannot outlive its
//! target:
//!
//! ```compile_fail,E0382
//! # use spdk_pmem::nvmf::{SubsystemConfig, Target};
//! # fn f(target: &Target) -> spdk_pmem::Result<()> {
//! let subsystem = target.create_subsystem(&SubsystemConfig::new("nqn.2016-06.io.spdk:x"))?;
//! subsystem.destroy()?;
//! println!("{}", subsystem.nqn());
//! # Ok(()) }
//! ```
//! ```compile_fail,E0515
//! # use spdk_pmem::nvmf::{Subsystem, SubsystemConfig, Target};
//! # use spdk_pmem::thread::AppThread;
//! fn subsystem(app: AppThread) -> spdk_pmem::Result<Subsystem<'static>> {
//!     let target = Target::default_target(app)?;
//!     target.create_subsystem(&SubsystemConfig::new("nqn.2016-06.io.spdk:x"))
//! }
//! ```
//! ```no_run
//! # use spdk_pmem::nvmf::{Subsystem, SubsystemConfig, Target};
//! fn subsystem(target: &Target) -> spdk_pmem::Result<Subsystem<'_>> {
//!     let subsystem = target.create_subsystem(&SubsystemConfig::new("nqn.2016-06.io.spdk:x"))?;
//!     println!("{}", subsystem.nqn());
//!     Ok(subsystem)
//! }
//! ```

use std::ffi::{c_void, CString};
use std::future::Future;
use std::ptr::NonNull;

use crate::cstr::{from_c, to_c};
use crate::error::{check_rc, Error, Result};
use crate::sys;
use crate::thread::{completion, AppThread, Completer, Spdk};

mod listing;
mod subsystem;
mod transport;

pub use listing::NamespaceInfo;
pub use subsystem::{Subsystem, SubsystemConfig};
pub use transport::{ListenAddress, TransportKind};

/// An NVMe-oF target (`struct spdk_nvmf_tgt`), by name. The nvmf event
/// subsystem makes the default one at start-up; [`Target::create`] makes
/// more. Owned, not `Copy`: its subsystems borrow it.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    name: String,
    /// Made by [`Target::create`], so this handle may destroy it.
    created: bool,
    app: AppThread,
}

extern "C" fn status_done(arg: *mut c_void, status: i32) {
    crate::app::catch_panic(|| {
        // SAFETY: `arg` is a Completer<i32> handed to C by this module, reclaimed once here.
        unsafe { Completer::<i32>::from_raw(arg) }.complete(status)
    });
}

extern "C" fn subsystem_state_done(
    _s: *mut sys::spdk_nvmf_subsystem,
    arg: *mut c_void,
    status: i32,
) {
    status_done(arg, status);
}

fn lookup_target(name: Option<&str>) -> Option<NonNull<sys::spdk_nvmf_tgt>> {
    let c = name.map(CString::new).transpose().ok()?;
    // SAFETY: NULL asks for the only target; otherwise `c` is a C string.
    // Callers are on an SPDK thread (checked through the token).
    NonNull::new(unsafe {
        sys::spdk_nvmf_get_tgt(c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
    })
}

impl Target {
    /// The target the nvmf subsystem created (when it is the only one). It
    /// belongs to that subsystem: [`Target::destroy`] refuses it.
    pub fn default_target(app: AppThread) -> Result<Target> {
        let app = app.check()?;
        let raw = lookup_target(None).ok_or_else(|| {
            Error::NotFound("no single nvmf target (none, or several: name one)".into())
        })?;
        // SAFETY: just looked up on this SPDK thread.
        let name = unsafe { from_c(sys::spdk_nvmf_tgt_get_name(raw.as_ptr())) };
        Ok(Target {
            name,
            created: false,
            app,
        })
    }

    /// A target by name (`nvmf_tgt` is the nvmf subsystem's).
    pub fn by_name(app: AppThread, name: &str) -> Result<Target> {
        let app = app.check()?;
        lookup_target(Some(name))
            .ok_or_else(|| Error::NotFound(format!("no nvmf target named {name:?}")))?;
        Ok(Target {
            name: name.to_string(),
            created: false,
            app,
        })
    }

    /// Creates another target (as `nvmf_create_target`).
    pub fn create(app: AppThread, name: &str, max_subsystems: u32) -> Result<Target> {
        let app = app.check()?;
        if lookup_target(Some(name)).is_some() {
            return Err(Error::spdk(
                format!("creating target {name:?}: it exists"),
                -libc::EEXIST,
            ));
        }
        // SAFETY: zeroed is a valid spdk_nvmf_target_opts (0 = defaults).
        let mut opts: sys::spdk_nvmf_target_opts = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= opts.name.len() || bytes.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "target name {name:?} must be 1 to {} bytes",
                opts.name.len() - 1
            )));
        }
        for (dst, src) in opts.name.iter_mut().zip(bytes) {
            *dst = *src as std::os::raw::c_char;
        }
        opts.max_subsystems = max_subsystems;
        // SAFETY: `opts` is fully initialised; SPDK copies what it keeps.
        if unsafe { sys::spdk_nvmf_tgt_create(&mut opts) }.is_null() {
            return Err(Error::spdk(
                format!("spdk_nvmf_tgt_create({name})"),
                -libc::ENOMEM,
            ));
        }
        Ok(Target {
            name: name.to_string(),
            created: true,
            app,
        })
    }

    /// Destroys a target made by [`Target::create`], with its subsystems.
    /// Any other target (the nvmf subsystem's default one, say) is refused:
    /// SPDK would remove it from its list twice at shutdown.
    pub fn destroy(self) -> impl Future<Output = Result<()>> {
        let started = (|| {
            if !self.created {
                return Err(Error::InvalidArgument(format!(
                    "target {:?} was not made by Target::create: destroy it where it was made \
                     (nvmf_delete_target for RPC-made ones; the default target lives as long as the app)",
                    self.name
                )));
            }
            let raw = self.as_ptr()?;
            let (completer, done) = completion::<i32>("spdk_nvmf_tgt_destroy");
            // SAFETY: the target was just looked up; status_done reclaims the
            // completer once.
            unsafe { sys::spdk_nvmf_tgt_destroy(raw, Some(status_done), completer.into_raw()) };
            Ok(done)
        })();
        async move { check_rc("spdk_nvmf_tgt_destroy", started?.await?) }
    }

    /// The target now, or NotFound; for calls into SPDK, which must not keep
    /// the pointer past the current message.
    pub fn as_ptr(&self) -> Result<*mut sys::spdk_nvmf_tgt> {
        self.app.check()?;
        lookup_target(Some(&self.name))
            .map(NonNull::as_ptr)
            .ok_or_else(|| Error::NotFound(format!("nvmf target {:?} no longer exists", self.name)))
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The application-thread token this handle was made with.
    pub fn app_thread(&self) -> AppThread {
        self.app
    }

    /// The SPDK-thread token of the thread this handle was made on.
    pub fn spdk(&self) -> Spdk {
        self.app.spdk()
    }

    /// The subsystem with this NQN, if any.
    pub fn find_subsystem(&self, nqn: &str) -> Option<Subsystem<'_>> {
        self.lookup_subsystem(nqn).ok()?;
        Some(Subsystem {
            target: self,
            nqn: nqn.to_string(),
        })
    }

    fn lookup_subsystem(&self, nqn: &str) -> Result<NonNull<sys::spdk_nvmf_subsystem>> {
        let target = self.as_ptr()?;
        let gone = || Error::NotFound(format!("subsystem {nqn} no longer exists"));
        let c = CString::new(nqn).map_err(|_| gone())?;
        // SAFETY: the target was just looked up and `c` is a C string.
        NonNull::new(unsafe { sys::spdk_nvmf_tgt_find_subsystem(target, c.as_ptr()) })
            .ok_or_else(gone)
    }

    /// Creates an NVMe subsystem, inactive; add listeners and namespaces, then
    /// [`Subsystem::start`] it. On any error nothing of it remains.
    pub fn create_subsystem(&self, config: &SubsystemConfig) -> Result<Subsystem<'_>> {
        if self.find_subsystem(&config.nqn).is_some() {
            return Err(Error::spdk(
                format!("creating subsystem {}: it exists", config.nqn),
                -libc::EEXIST,
            ));
        }
        let target = self.as_ptr()?;
        let nqn = to_c("NQN", &config.nqn)?;
        // SAFETY: the target was just looked up; SPDK copies the NQN.
        let raw = unsafe {
            sys::spdk_nvmf_subsystem_create(
                target,
                nqn.as_ptr(),
                sys::SPDK_NVMF_SUBTYPE_NVME,
                config.max_namespaces,
            )
        };
        if raw.is_null() {
            return Err(Error::InvalidArgument(format!(
                "invalid NQN {:?} (expected nqn.yyyy-mm.reverse.domain:name, at most 223 bytes), \
                 or the target has no room for another subsystem",
                config.nqn
            )));
        }
        let subsystem = Subsystem {
            target: self,
            nqn: config.nqn.clone(),
        };
        if let Err(e) = subsystem.configure(config) {
            // SAFETY: the subsystem was just created, is inactive and unshared.
            unsafe { sys::spdk_nvmf_subsystem_destroy(raw) };
            return Err(e);
        }
        Ok(subsystem)
    }
}
