//! NVMe over Fabrics: the target, its transports, subsystems, listeners,
//! namespaces and allowed hosts, on SPDK's `lib/nvmf`.
//!
//! Everything here runs on the application thread (as SPDK's nvmf RPCs do);
//! operations that SPDK completes by callback return futures to await inside
//! [`crate::thread::spawn_local`]. A failed call leaves nothing half-created:
//! a subsystem whose serial number is refused is destroyed again, a listener
//! the subsystem refuses stops listening.
//!
//! ```no_run
//! use spdk_pmem::nvmf::{ListenAddress, SubsystemConfig, Target, TransportKind};
//!
//! async fn serve() -> spdk_pmem::Result<()> {
//!     let target = Target::default_target().expect("the nvmf subsystem made one");
//!     target.add_transport(TransportKind::Tcp).await?;
//!     let config = SubsystemConfig::new("nqn.2016-06.io.spdk:cnode1")
//!         .serial_number("SPDK0001")
//!         .allow_any_host(true);
//!     let subsystem = target.create_subsystem(&config)?;
//!     subsystem.add_listener(target, &ListenAddress::tcp("127.0.0.1", 4420)).await?;
//!     subsystem.add_namespace("pmdk0", None)?;
//!     subsystem.start().await
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
use crate::thread::{completion, Completer};

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

/// An NVMe-oF target (`struct spdk_nvmf_tgt`). The nvmf event subsystem makes
/// one at start-up; [`Target::create`] makes more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target(NonNull<sys::spdk_nvmf_tgt>);

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

impl Target {
    /// The target the nvmf subsystem created (when it is the only one).
    pub fn default_target() -> Option<Target> {
        // SAFETY: NULL asks for the only target; SPDK returns NULL otherwise.
        NonNull::new(unsafe { sys::spdk_nvmf_get_tgt(std::ptr::null()) }).map(Target)
    }

    /// A target by name (`nvmf_tgt` is the nvmf subsystem's).
    pub fn by_name(name: &str) -> Option<Target> {
        let c = CString::new(name).ok()?;
        // SAFETY: `c` is a valid C string.
        NonNull::new(unsafe { sys::spdk_nvmf_get_tgt(c.as_ptr()) }).map(Target)
    }

    /// Creates another target (as `nvmf_create_target`).
    pub fn create(name: &str, max_subsystems: u32) -> Result<Target> {
        if Target::by_name(name).is_some() {
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
        NonNull::new(unsafe { sys::spdk_nvmf_tgt_create(&mut opts) })
            .map(Target)
            .ok_or_else(|| Error::spdk(format!("spdk_nvmf_tgt_create({name})"), -libc::ENOMEM))
    }

    /// Destroys a target made by [`Target::create`], with its subsystems.
    pub fn destroy(self) -> impl Future<Output = Result<()>> {
        let (completer, done) = completion::<i32>("spdk_nvmf_tgt_destroy");
        // SAFETY: the target is valid; status_done reclaims the completer once.
        unsafe {
            sys::spdk_nvmf_tgt_destroy(self.as_ptr(), Some(status_done), completer.into_raw())
        };
        async move { check_rc("spdk_nvmf_tgt_destroy", done.await?) }
    }

    /// The raw pointer, for calls into SPDK.
    pub fn as_ptr(&self) -> *mut sys::spdk_nvmf_tgt {
        self.0.as_ptr()
    }

    /// The target's name.
    pub fn name(&self) -> String {
        // SAFETY: the target is valid.
        unsafe { from_c(sys::spdk_nvmf_tgt_get_name(self.as_ptr())) }
    }

    /// Whether the target has a transport of this kind.
    pub fn has_transport(&self, kind: TransportKind) -> bool {
        let name = to_c("transport", kind.name()).expect("static name");
        // SAFETY: the target is valid and `name` a C string.
        !unsafe { sys::spdk_nvmf_tgt_get_transport(self.as_ptr(), name.as_ptr()) }.is_null()
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
        if self.has_transport(kind) {
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
        let (completer, done) = completion::<i32>("spdk_nvmf_tgt_add_transport");
        // SAFETY: the target and transport are valid; status_done reclaims the completer.
        unsafe {
            sys::spdk_nvmf_tgt_add_transport(
                self.as_ptr(),
                transport,
                Some(status_done),
                completer.into_raw(),
            )
        };
        Ok(done)
    }

    /// The subsystem with this NQN, if any.
    pub fn find_subsystem(&self, nqn: &str) -> Option<Subsystem> {
        let c = CString::new(nqn).ok()?;
        // SAFETY: the target is valid and `c` a C string.
        NonNull::new(unsafe { sys::spdk_nvmf_tgt_find_subsystem(self.as_ptr(), c.as_ptr()) })
            .map(Subsystem)
    }

    /// Creates an NVMe subsystem, inactive; add listeners and namespaces, then
    /// [`Subsystem::start`] it. On any error nothing of it remains.
    pub fn create_subsystem(&self, config: &SubsystemConfig) -> Result<Subsystem> {
        if self.find_subsystem(&config.nqn).is_some() {
            return Err(Error::spdk(
                format!("creating subsystem {}: it exists", config.nqn),
                -libc::EEXIST,
            ));
        }
        let nqn = to_c("NQN", &config.nqn)?;
        // SAFETY: the target is valid; SPDK copies the NQN.
        let raw = unsafe {
            sys::spdk_nvmf_subsystem_create(
                self.as_ptr(),
                nqn.as_ptr(),
                sys::SPDK_NVMF_SUBTYPE_NVME,
                config.max_namespaces,
            )
        };
        let subsystem = NonNull::new(raw).map(Subsystem).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "invalid NQN {:?} (expected nqn.yyyy-mm.reverse.domain:name, at most 223 bytes), \
                 or the target has no room for another subsystem",
                config.nqn
            ))
        })?;
        if let Err(e) = subsystem.configure(config) {
            // SAFETY: the subsystem was just created, is inactive and unshared.
            unsafe { sys::spdk_nvmf_subsystem_destroy(subsystem.as_ptr()) };
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsystem(NonNull<sys::spdk_nvmf_subsystem>);

impl Subsystem {
    /// The raw pointer, for calls into SPDK.
    pub fn as_ptr(&self) -> *mut sys::spdk_nvmf_subsystem {
        self.0.as_ptr()
    }

    fn configure(&self, config: &SubsystemConfig) -> Result<()> {
        if let Some(sn) = &config.serial_number {
            let c = to_c("serial number", sn)?;
            // SAFETY: the subsystem is valid and `c` a C string.
            if unsafe { sys::spdk_nvmf_subsystem_set_sn(self.as_ptr(), c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid serial number {sn:?} (printable ASCII, at most 20 characters)"
                )));
            }
        }
        if let Some(mn) = &config.model_number {
            let c = to_c("model number", mn)?;
            // SAFETY: the subsystem is valid and `c` a C string.
            if unsafe { sys::spdk_nvmf_subsystem_set_mn(self.as_ptr(), c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid model number {mn:?} (printable ASCII, at most 40 characters)"
                )));
            }
        }
        // SAFETY: the subsystem is valid and inactive.
        check_rc("spdk_nvmf_subsystem_set_allow_any_host", unsafe {
            sys::spdk_nvmf_subsystem_set_allow_any_host(self.as_ptr(), config.allow_any_host)
        })?;
        for host in &config.hosts {
            self.add_host(host)?;
        }
        Ok(())
    }

    /// The NQN.
    pub fn nqn(&self) -> String {
        // SAFETY: the subsystem is valid.
        unsafe { from_c(sys::spdk_nvmf_subsystem_get_nqn(self.as_ptr())) }
    }
    /// The serial number.
    pub fn serial_number(&self) -> String {
        // SAFETY: the subsystem is valid.
        unsafe { from_c(sys::spdk_nvmf_subsystem_get_sn(self.as_ptr())) }
    }
    /// The model number.
    pub fn model_number(&self) -> String {
        // SAFETY: the subsystem is valid.
        unsafe { from_c(sys::spdk_nvmf_subsystem_get_mn(self.as_ptr())) }
    }

    /// Lets `hostnqn` connect. Call while inactive or paused.
    pub fn add_host(&self, hostnqn: &str) -> Result<()> {
        let c = to_c("host NQN", hostnqn)?;
        // SAFETY: the subsystem is valid and `c` a C string.
        check_rc(&format!("adding host {hostnqn}"), unsafe {
            sys::spdk_nvmf_subsystem_add_host(self.as_ptr(), c.as_ptr())
        })
    }

    /// Adds bdev `bdev_name` as a namespace (`nsid` or the next free one) and
    /// returns its NSID. Call while inactive or paused.
    pub fn add_namespace(&self, bdev_name: &str, nsid: Option<u32>) -> Result<u32> {
        let bdev = Bdev::by_name(bdev_name).ok_or_else(|| {
            Error::spdk(
                format!("adding namespace: no bdev named {bdev_name:?}"),
                -libc::ENODEV,
            )
        })?;
        // SAFETY: zeroed opts are filled with defaults by SPDK.
        let mut opts: sys::spdk_nvmf_ns_opts = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<sys::spdk_nvmf_ns_opts>();
        // SAFETY: `opts` is writable for `size` bytes.
        unsafe { sys::spdk_nvmf_ns_opts_get_defaults(&mut opts, size) };
        opts.nsid = nsid.unwrap_or(0);
        // SAFETY: subsystem and bdev are valid; no persistent-reservation file.
        let id = unsafe {
            sys::spdk_nvmf_subsystem_add_ns(
                self.as_ptr(),
                bdev.as_ptr(),
                &opts,
                size,
                std::ptr::null(),
            )
        };
        if id == 0 {
            return Err(Error::spdk(
                format!(
                    "adding bdev {bdev_name} as a namespace of {} (NSID taken, no free NSID, or the bdev is claimed)",
                    self.nqn()
                ),
                -libc::EINVAL,
            ));
        }
        Ok(id)
    }

    /// Starts listening on `address` for this subsystem. Call while inactive or
    /// paused. If the subsystem refuses the listener, the target stops
    /// listening again; a port in use fails with SPDK's errno.
    pub fn add_listener(
        &self,
        target: Target,
        address: &ListenAddress,
    ) -> impl Future<Output = Result<()>> {
        let subsystem = *self;
        let address = address.clone();
        let started = (|| {
            let mut trid = address.transport_id()?;
            if !target.has_transport(address.transport) {
                return Err(Error::InvalidArgument(format!(
                    "no {} transport on target {}: add one first (nvmf_create_transport -t {})",
                    address.transport.name(),
                    target.name(),
                    address.transport.name()
                )));
            }
            // SAFETY: target and trid are valid.
            let rc = unsafe { sys::spdk_nvmf_tgt_listen(target.as_ptr(), &mut trid) };
            check_rc(&format!("listening on {address}"), rc)?;
            let (completer, done) = completion::<i32>("spdk_nvmf_subsystem_add_listener");
            // SAFETY: subsystem and trid are valid; status_done reclaims the completer.
            unsafe {
                sys::spdk_nvmf_subsystem_add_listener(
                    subsystem.as_ptr(),
                    &mut trid,
                    Some(status_done),
                    completer.into_raw(),
                )
            };
            Ok((trid, done))
        })();
        async move {
            let (trid, done) = started?;
            let rc = done.await?;
            if rc != 0 {
                let mut trid = trid;
                // SAFETY: undoing our own successful listen on the same trid.
                unsafe { sys::spdk_nvmf_tgt_stop_listen(target.as_ptr(), &mut trid) };
            }
            check_rc(
                &format!("adding listener {address} to {}", subsystem.nqn()),
                rc,
            )
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
        target: Target,
        address: &ListenAddress,
    ) -> impl Future<Output = Result<()>> {
        let subsystem = *self;
        let address = address.clone();
        async move {
            let mut trid = address.transport_id()?;
            let remove = |trid: &sys::spdk_nvme_transport_id| {
                // SAFETY: subsystem and trid are valid.
                unsafe { sys::spdk_nvmf_subsystem_remove_listener(subsystem.as_ptr(), trid) }
            };
            let what = || format!("removing listener {address} from {}", subsystem.nqn());
            let mut rc = remove(&trid);
            let mut paused = false;
            if rc == -libc::EAGAIN {
                // Active: SPDK changes listeners only while inactive or paused.
                subsystem.pause().await?;
                paused = true;
                rc = remove(&trid);
            }
            if rc == 0 {
                // SAFETY: undoes the spdk_nvmf_tgt_listen of add_listener, now
                // that the subsystem no longer refers to the listener.
                unsafe { sys::spdk_nvmf_tgt_stop_listen(target.as_ptr(), &mut trid) };
            }
            if paused {
                subsystem.resume().await?;
            }
            check_rc(&what(), rc)
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
        let (completer, done) = completion::<i32>(op);
        let arg = completer.into_raw();
        // SAFETY: the subsystem is valid; subsystem_state_done reclaims the
        // completer when SPDK accepts the request.
        let rc = unsafe { f(self.as_ptr(), Some(subsystem_state_done), arg) };
        if rc != 0 {
            // SAFETY: SPDK refused synchronously and will not call back.
            drop(unsafe { Completer::<i32>::from_raw(arg) });
        }
        async move {
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

    /// Destroys an inactive subsystem.
    pub fn destroy(self) {
        // SAFETY: the caller gives up the handle; SPDK requires it inactive.
        unsafe { sys::spdk_nvmf_subsystem_destroy(self.as_ptr()) }
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
