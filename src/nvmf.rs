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
use std::fmt;
use std::future::Future;
use std::ptr::NonNull;

use crate::bdev::Bdev;
use crate::cstr::{from_c, to_c};
use crate::error::{check_rc, Error, Result};
use crate::sys;
use crate::thread::{completion, AppThread, Completer, Spdk};

/// A fabric transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// NVMe/TCP.
    Tcp,
    /// NVMe/RDMA (the 2018 article's transport): needs an SPDK built with RDMA
    /// and an RDMA device.
    Rdma,
}

impl TransportKind {
    /// SPDK's name for it (`TCP`, `RDMA`).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "TCP",
            TransportKind::Rdma => "RDMA",
        }
    }
}

impl std::str::FromStr for TransportKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(TransportKind::Tcp),
            "RDMA" => Ok(TransportKind::Rdma),
            _ => Err(Error::InvalidArgument(format!(
                "unknown transport {s:?}: use tcp or rdma"
            ))),
        }
    }
}

/// Where a subsystem listens: transport, address family, address, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// The transport.
    pub transport: TransportKind,
    /// The IP address (v4 or v6).
    pub address: String,
    /// The port (`trsvcid`).
    pub port: u16,
}

impl ListenAddress {
    /// A TCP listener.
    pub fn tcp(address: &str, port: u16) -> Self {
        ListenAddress {
            transport: TransportKind::Tcp,
            address: address.to_string(),
            port,
        }
    }

    fn family(&self) -> Result<&'static str> {
        match self.address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => Ok("IPv4"),
            Ok(std::net::IpAddr::V6(_)) => Ok("IPv6"),
            Err(_) => Err(Error::InvalidArgument(format!(
                "listen address {:?} is not an IP address",
                self.address
            ))),
        }
    }

    /// SPDK's transport ID for this address.
    pub fn transport_id(&self) -> Result<sys::spdk_nvme_transport_id> {
        if self.port == 0 {
            return Err(Error::InvalidArgument(
                "listen port 0 is not allowed".into(),
            ));
        }
        let text = format!(
            "trtype:{} adrfam:{} traddr:{} trsvcid:{}",
            self.transport.name(),
            self.family()?,
            self.address,
            self.port
        );
        let c = CString::new(text.clone()).map_err(|_| Error::InvalidArgument(text.clone()))?;
        // SAFETY: zeroed is the documented starting state of a transport ID.
        let mut trid: sys::spdk_nvme_transport_id = unsafe { std::mem::zeroed() };
        // SAFETY: `trid` is writable and `c` a valid C string.
        let rc = unsafe { sys::spdk_nvme_transport_id_parse(&mut trid, c.as_ptr()) };
        if rc != 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid transport ID {text:?}"
            )));
        }
        Ok(trid)
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{}",
            self.transport.name(),
            self.address,
            self.port
        )
    }
}

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

    /// Whether the target has a transport of this kind.
    pub fn has_transport(&self, kind: TransportKind) -> Result<bool> {
        let target = self.as_ptr()?;
        let name = to_c("transport", kind.name())?;
        // SAFETY: the target was just looked up and `name` is a C string.
        Ok(!unsafe { sys::spdk_nvmf_tgt_get_transport(target, name.as_ptr()) }.is_null())
    }

    /// Adds a transport with SPDK's default options (as `nvmf_create_transport -t`).
    /// Fails with EEXIST if the target has one of that kind already.
    pub fn add_transport(&self, kind: TransportKind) -> impl Future<Output = Result<()>> {
        let started = self.start_add_transport(kind);
        async move {
            started?
                .await
                .and_then(|rc| check_rc("spdk_nvmf_tgt_add_transport", rc))
        }
    }

    fn start_add_transport(&self, kind: TransportKind) -> Result<crate::thread::Completion<i32>> {
        if self.has_transport(kind)? {
            return Err(Error::spdk(
                format!("adding transport {}: the target has one", kind.name()),
                -libc::EEXIST,
            ));
        }
        if kind == TransportKind::Rdma && !sys::RDMA_BUILD {
            return Err(Error::InvalidArgument(
                "this SPDK was built without RDMA (install libibverbs-dev and librdmacm-dev and rebuild)".into(),
            ));
        }
        let name = to_c("transport", kind.name())?;
        // SAFETY: zeroed opts are filled by spdk_nvmf_transport_opts_init.
        let mut opts: sys::spdk_nvmf_transport_opts = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is a C string and `opts` writable.
        if !unsafe { sys::spdk_nvmf_transport_opts_init(name.as_ptr(), &mut opts) } {
            return Err(Error::InvalidArgument(format!(
                "transport {} is not available",
                kind.name()
            )));
        }
        // SAFETY: as above; SPDK copies the options.
        let transport = unsafe { sys::spdk_nvmf_transport_create(name.as_ptr(), &mut opts) };
        if transport.is_null() {
            return Err(Error::spdk(
                format!(
                    "creating the {} transport (is an RDMA device present?)",
                    kind.name()
                ),
                -libc::EINVAL,
            ));
        }
        let target = self.as_ptr()?;
        let (completer, done) = completion::<i32>("spdk_nvmf_tgt_add_transport");
        // SAFETY: the target and transport are valid; status_done reclaims the completer.
        unsafe {
            sys::spdk_nvmf_tgt_add_transport(
                target,
                transport,
                Some(status_done),
                completer.into_raw(),
            )
        };
        Ok(done)
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

/// What a new subsystem looks like.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    nqn: String,
    serial_number: Option<String>,
    model_number: Option<String>,
    allow_any_host: bool,
    hosts: Vec<String>,
    max_namespaces: u32,
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
    target: &'t Target,
    nqn: String,
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

    fn configure(&self, config: &SubsystemConfig) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_parse_either_case() {
        assert_eq!("tcp".parse::<TransportKind>().unwrap(), TransportKind::Tcp);
        assert_eq!(
            "RDMA".parse::<TransportKind>().unwrap(),
            TransportKind::Rdma
        );
        assert!("fc"
            .parse::<TransportKind>()
            .unwrap_err()
            .to_string()
            .contains("tcp or rdma"));
    }

    #[test]
    fn listen_addresses_are_checked_before_spdk() {
        let trid = ListenAddress::tcp("127.0.0.1", 4420)
            .transport_id()
            .unwrap();
        assert_eq!(trid.trtype, sys::SPDK_NVME_TRANSPORT_TCP);
        assert_eq!(trid.adrfam, sys::SPDK_NVMF_ADRFAM_IPV4);
        let v6 = ListenAddress::tcp("::1", 4420).transport_id().unwrap();
        assert_eq!(v6.adrfam, sys::SPDK_NVMF_ADRFAM_IPV6);
        let err = ListenAddress::tcp("not-an-ip", 4420)
            .transport_id()
            .unwrap_err();
        assert!(err.to_string().contains("not an IP address"), "{err}");
        assert!(ListenAddress::tcp("127.0.0.1", 0).transport_id().is_err());
    }
}
