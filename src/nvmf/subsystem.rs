//! NVMe-oF subsystems of a [`Target`]: their configuration, namespaces,
//! hosts, listeners and states.

use std::ffi::c_void;
use std::future::Future;
use std::ptr::NonNull;

use super::{status_done, subsystem_state_done, ListenAddress, Target};
use crate::bdev::Bdev;
use crate::cstr::{from_c, to_c};
use crate::error::{check_rc, Error, Result};
use crate::sys;
use crate::thread::{completion, Completer};

/// What a new subsystem looks like.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    pub(super) nqn: String,
    pub(super) serial_number: Option<String>,
    pub(super) model_number: Option<String>,
    pub(super) allow_any_host: bool,
    pub(super) hosts: Vec<String>,
    pub(super) max_namespaces: u32,
}

impl SubsystemConfig {
    /// A subsystem with this NQN; SPDK's defaults otherwise.
    pub fn new(nqn: &str) -> Self {
        SubsystemConfig {
            nqn: nqn.to_string(),
            serial_number: None,
            model_number: None,
            allow_any_host: false,
            hosts: Vec::new(),
            max_namespaces: 0,
        }
    }
    /// Serial number (ASCII, at most 20 characters).
    pub fn serial_number(mut self, sn: &str) -> Self {
        self.serial_number = Some(sn.to_string());
        self
    }
    /// Model number (ASCII, at most 40 characters).
    pub fn model_number(mut self, mn: &str) -> Self {
        self.model_number = Some(mn.to_string());
        self
    }
    /// Let any host connect.
    pub fn allow_any_host(mut self, yes: bool) -> Self {
        self.allow_any_host = yes;
        self
    }
    /// Let this host NQN connect.
    pub fn host(mut self, hostnqn: &str) -> Self {
        self.hosts.push(hostnqn.to_string());
        self
    }
    /// Namespace limit (0: SPDK's default).
    pub fn max_namespaces(mut self, n: u32) -> Self {
        self.max_namespaces = n;
        self
    }
}

/// An NVMe-oF subsystem (`struct spdk_nvmf_subsystem`), owned by its target.
/// An NVMe subsystem of a [`Target`], by NQN; it borrows the target. Each
/// call looks it up again (NotFound once deleted, over RPC say).
#[derive(Debug, PartialEq, Eq)]
pub struct Subsystem<'t> {
    pub(super) target: &'t Target,
    pub(super) nqn: String,
}

impl Subsystem<'_> {
    /// The subsystem now, or NotFound; for calls into SPDK, which must not
    /// keep the pointer past the current message.
    pub fn as_ptr(&self) -> Result<*mut sys::spdk_nvmf_subsystem> {
        self.target.lookup_subsystem(&self.nqn).map(NonNull::as_ptr)
    }

    /// The target it belongs to.
    pub fn target(&self) -> &Target {
        self.target
    }

    pub(super) fn configure(&self, config: &SubsystemConfig) -> Result<()> {
        let subsystem = self.as_ptr()?;
        if let Some(sn) = &config.serial_number {
            let c = to_c("serial number", sn)?;
            // SAFETY: the subsystem was just looked up and `c` is a C string.
            if unsafe { sys::spdk_nvmf_subsystem_set_sn(subsystem, c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid serial number {sn:?} (printable ASCII, at most 20 characters)"
                )));
            }
        }
        if let Some(mn) = &config.model_number {
            let c = to_c("model number", mn)?;
            // SAFETY: as above.
            if unsafe { sys::spdk_nvmf_subsystem_set_mn(subsystem, c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid model number {mn:?} (printable ASCII, at most 40 characters)"
                )));
            }
        }
        // SAFETY: as above; the subsystem is new, so inactive.
        check_rc("spdk_nvmf_subsystem_set_allow_any_host", unsafe {
            sys::spdk_nvmf_subsystem_set_allow_any_host(subsystem, config.allow_any_host)
        })?;
        for host in &config.hosts {
            self.add_host(host)?;
        }
        Ok(())
    }

    /// The NQN.
    pub fn nqn(&self) -> &str {
        &self.nqn
    }
    /// The serial number.
    pub fn serial_number(&self) -> Result<String> {
        let subsystem = self.as_ptr()?;
        // SAFETY: the subsystem was just looked up.
        Ok(unsafe { from_c(sys::spdk_nvmf_subsystem_get_sn(subsystem)) })
    }
    /// The model number.
    pub fn model_number(&self) -> Result<String> {
        let subsystem = self.as_ptr()?;
        // SAFETY: the subsystem was just looked up.
        Ok(unsafe { from_c(sys::spdk_nvmf_subsystem_get_mn(subsystem)) })
    }

    /// Whether the subsystem is inactive (not started, or stopped).
    pub fn is_inactive(&self) -> Result<bool> {
        let subsystem = self.as_ptr()?;
        // SAFETY: the subsystem was just looked up; the shim reads its state.
        Ok(unsafe { sys::spdk_pmem_nvmf_subsystem_is_inactive(subsystem) })
    }

    /// Lets `hostnqn` connect. Call while inactive or paused.
    pub fn add_host(&self, hostnqn: &str) -> Result<()> {
        let subsystem = self.as_ptr()?;
        let c = to_c("host NQN", hostnqn)?;
        // SAFETY: the subsystem was just looked up and `c` is a C string.
        check_rc(&format!("adding host {hostnqn}"), unsafe {
            sys::spdk_nvmf_subsystem_add_host(subsystem, c.as_ptr())
        })
    }

    /// Makes namespace `nsid` (added with `no_auto_visible`) visible to
    /// `hostnqn`'s controllers, or no longer (vendor patch 0035); connected
    /// ones hear of it. Call while inactive or paused.
    pub fn set_namespace_visible(&self, nsid: u32, hostnqn: &str, visible: bool) -> Result<()> {
        let subsystem = self.as_ptr()?;
        let c = to_c("host NQN", hostnqn)?;
        // SAFETY: the subsystem was just looked up and `c` is a C string.
        let rc = unsafe {
            if visible {
                sys::spdk_nvmf_ns_add_host(subsystem, nsid, c.as_ptr(), 0)
            } else {
                sys::spdk_nvmf_ns_remove_host(subsystem, nsid, c.as_ptr(), 0)
            }
        };
        let what = match -rc {
            0 => return Ok(()),
            libc::ENOENT => format!("{} has no namespace {nsid}", self.nqn),
            libc::EPERM => format!(
                "namespace {nsid} of {} is visible to every host: add it with no_auto_visible \
                 (nvmf_subsystem_add_ns --no-auto-visible) to choose its hosts",
                self.nqn
            ),
            libc::EINVAL => format!("namespace ID {nsid} or host NQN {hostnqn:?} is not valid"),
            _ => return check_rc(&format!("namespace {nsid} and host {hostnqn}"), rc),
        };
        Err(Error::InvalidArgument(what))
    }

    /// Adds bdev `bdev_name` as a namespace (`nsid` or the next free one) and
    /// returns its NSID. Call while inactive or paused.
    pub fn add_namespace(&self, bdev_name: &str, nsid: Option<u32>) -> Result<u32> {
        let bdev = Bdev::by_name(self.target.app, bdev_name).ok_or_else(|| {
            Error::spdk(
                format!("adding namespace: no bdev named {bdev_name:?}"),
                -libc::ENODEV,
            )
        })?;
        let (subsystem, bdev) = (self.as_ptr()?, bdev.as_ptr()?);
        // SAFETY: zeroed opts are filled with defaults by SPDK.
        let mut opts: sys::spdk_nvmf_ns_opts = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<sys::spdk_nvmf_ns_opts>();
        // SAFETY: `opts` is writable for `size` bytes.
        unsafe { sys::spdk_nvmf_ns_opts_get_defaults(&mut opts, size) };
        opts.nsid = nsid.unwrap_or(0);
        // SAFETY: subsystem and bdev were just looked up; no persistent-reservation file.
        let id = unsafe {
            sys::spdk_nvmf_subsystem_add_ns(subsystem, bdev, &opts, size, std::ptr::null())
        };
        if id == 0 {
            return Err(Error::spdk(
                format!(
                    "adding bdev {bdev_name} as a namespace of {} (NSID taken, no free NSID, or the bdev is claimed)",
                    self.nqn
                ),
                -libc::EINVAL,
            ));
        }
        Ok(id)
    }
}

/// Listeners and states.
impl Subsystem<'_> {
    /// Starts listening on `address` for this subsystem. Call while inactive or
    /// paused. If the subsystem refuses the listener, the target stops
    /// listening again; a port in use fails with SPDK's errno.
    pub fn add_listener(&self, address: &ListenAddress) -> impl Future<Output = Result<()>> + '_ {
        let address = address.clone();
        async move {
            let target = self.target;
            let mut trid = address.transport_id()?;
            if !target.has_transport(address.transport)? {
                return Err(Error::InvalidArgument(format!(
                    "no {} transport on target {}: add one first (nvmf_create_transport -t {})",
                    address.transport.name(),
                    target.name(),
                    address.transport.name()
                )));
            }
            let (raw_target, subsystem) = (target.as_ptr()?, self.as_ptr()?);
            // SAFETY: target and trid are valid.
            let rc = unsafe { sys::spdk_nvmf_tgt_listen(raw_target, &mut trid) };
            check_rc(&format!("listening on {address}"), rc)?;
            let (completer, done) = completion::<i32>("spdk_nvmf_subsystem_add_listener");
            // SAFETY: subsystem and trid are valid; status_done reclaims the completer.
            unsafe {
                sys::spdk_nvmf_subsystem_add_listener(
                    subsystem,
                    &mut trid,
                    Some(status_done),
                    completer.into_raw(),
                )
            };
            let rc = done.await?;
            if rc != 0 {
                if let Ok(raw_target) = target.as_ptr() {
                    // SAFETY: undoing our own successful listen on the same trid.
                    unsafe { sys::spdk_nvmf_tgt_stop_listen(raw_target, &mut trid) };
                }
            }
            check_rc(&format!("adding listener {address} to {}", self.nqn), rc)
        }
    }

    /// Stops listening on `address` for this subsystem, and at the target
    /// level (SPDK counts the subsystems sharing a listener). An active
    /// subsystem is paused for the removal and resumed, as SPDK's own
    /// `nvmf_subsystem_remove_listener` does. The target-level listener is
    /// released only when the subsystem let go of it: releasing it after a
    /// refused removal would free what the subsystem still points into.
    pub fn remove_listener(
        &self,
        address: &ListenAddress,
    ) -> impl Future<Output = Result<()>> + '_ {
        let address = address.clone();
        async move {
            let mut trid = address.transport_id()?;
            let remove = |trid: &sys::spdk_nvme_transport_id| -> Result<i32> {
                let subsystem = self.as_ptr()?;
                // SAFETY: the subsystem was just looked up and trid is valid.
                Ok(unsafe { sys::spdk_nvmf_subsystem_remove_listener(subsystem, trid) })
            };
            let mut rc = remove(&trid)?;
            let mut paused = false;
            if rc == -libc::EAGAIN {
                // Active: SPDK changes listeners only while inactive or paused.
                self.pause().await?;
                paused = true;
                rc = remove(&trid)?;
            }
            if rc == 0 {
                let target = self.target.as_ptr()?;
                // SAFETY: undoes the spdk_nvmf_tgt_listen of add_listener, now
                // that the subsystem no longer refers to the listener.
                unsafe { sys::spdk_nvmf_tgt_stop_listen(target, &mut trid) };
            }
            if paused {
                self.resume().await?;
            }
            check_rc(
                &format!("removing listener {address} from {}", self.nqn),
                rc,
            )
        }
    }

    fn change_state(
        &self,
        op: &'static str,
        f: unsafe extern "C" fn(
            *mut sys::spdk_nvmf_subsystem,
            sys::spdk_nvmf_subsystem_state_change_done,
            *mut c_void,
        ) -> i32,
    ) -> impl Future<Output = Result<()>> {
        let started = self.as_ptr().map(|subsystem| {
            let (completer, done) = completion::<i32>(op);
            let arg = completer.into_raw();
            // SAFETY: the subsystem was just looked up; subsystem_state_done
            // reclaims the completer when SPDK accepts the request.
            let rc = unsafe { f(subsystem, Some(subsystem_state_done), arg) };
            if rc != 0 {
                // SAFETY: SPDK refused synchronously and will not call back.
                drop(unsafe { Completer::<i32>::from_raw(arg) });
            }
            (rc, done)
        });
        async move {
            let (rc, done) = started?;
            check_rc(op, rc)?;
            check_rc(op, done.await?)
        }
    }

    /// Inactive → active: hosts can connect.
    pub fn start(&self) -> impl Future<Output = Result<()>> {
        self.change_state("spdk_nvmf_subsystem_start", sys::spdk_nvmf_subsystem_start)
    }
    /// Active → inactive.
    pub fn stop(&self) -> impl Future<Output = Result<()>> {
        self.change_state("spdk_nvmf_subsystem_stop", sys::spdk_nvmf_subsystem_stop)
    }
    /// Active → paused: I/O is held so namespaces, listeners and hosts can change.
    pub fn pause(&self) -> impl Future<Output = Result<()>> {
        self.change_state("spdk_nvmf_subsystem_pause", sys::spdk_nvmf_subsystem_pause)
    }
    /// Paused → active.
    pub fn resume(&self) -> impl Future<Output = Result<()>> {
        self.change_state(
            "spdk_nvmf_subsystem_resume",
            sys::spdk_nvmf_subsystem_resume,
        )
    }

    /// Destroys an inactive subsystem. An active one (or one between
    /// states) is refused: its poll groups still use it; stop it first.
    pub fn destroy(self) -> Result<()> {
        if !self.is_inactive()? {
            return Err(Error::InvalidArgument(format!(
                "subsystem {} is active: stop it before destroying it",
                self.nqn
            )));
        }
        let subsystem = self.as_ptr()?;
        // SAFETY: just looked up and inactive; the handle is consumed.
        unsafe { sys::spdk_nvmf_subsystem_destroy(subsystem) };
        Ok(())
    }
}
