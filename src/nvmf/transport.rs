//! Fabric transports and the addresses subsystems listen on.

use std::ffi::CString;
use std::fmt;
use std::future::Future;

use super::{status_done, Target};
use crate::cstr::to_c;
use crate::error::{check_rc, Error, Result};
use crate::sys;
use crate::thread::completion;

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

/// Transports.
impl Target {
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
