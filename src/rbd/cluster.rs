//! A connection to a Ceph cluster (librados' `rados_t`), made by a blocking
//! call meant for a thread of its own, never a reactor, within a time limit
//! Ceph itself enforces (`client_mount_timeout`, `rados_mon_op_timeout`).
//! librados handles are thread-safe, so one connection serves every image
//! of a cluster from any thread.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

/// How long an I/O waits for the OSDs, in seconds, unless the config sets
/// `rados_osd_op_timeout`: a host's own I/O timeout (Linux: 30 s) should
/// see an error, not its own abort.
pub const OSD_OP_TIMEOUT: &str = "20";

/// How to reach a cluster: SPDK's `bdev_rbd_create` `user_id` and `config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClusterConfig {
    /// The cephx user without `client.` (`admin` when `None`, as librados).
    pub user: Option<String>,
    /// Ceph options set before connecting (`mon_host`, `key`, ...); when
    /// empty, librados reads `/etc/ceph/ceph.conf` as SPDK's module does.
    pub options: Vec<(String, String)>,
}

impl ClusterConfig {
    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("admin")
    }

    /// Whether the options turn librbd's write-back cache on.
    pub fn rbd_cache(&self) -> bool {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == "rbd_cache" || k == "rbd cache")
            .is_some_and(|(_, v)| matches!(v.as_str(), "true" | "1" | "yes" | "on"))
    }

    fn mon_host(&self) -> &str {
        self.options
            .iter()
            .find(|(k, _)| k == "mon_host" || k == "mon host")
            .map_or("the monitors of /etc/ceph/ceph.conf", |(_, v)| v.as_str())
    }
}

/// A connected cluster; shut down when dropped.
pub struct Cluster {
    raw: NonNull<c_void>,
    config: ClusterConfig,
}

// SAFETY: librados' cluster handle may be used from any thread at once
// (its own locks guard it); Cluster gives no access to it that is not a
// librados call.
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

impl Cluster {
    /// Connects, blocking the calling thread for at most about `timeout`
    /// (Ceph's own limits; librados retries monitors within them). Call it
    /// off the reactors.
    pub fn connect(config: &ClusterConfig, timeout: Duration) -> Result<Cluster> {
        let user = crate::cstr::to_c("Ceph user", config.user())?;
        let mut raw: sys::rados_t = std::ptr::null_mut();
        // SAFETY: fills `raw` with a new handle; `user` is a C string.
        let rc = unsafe { sys::rados_create(&mut raw, user.as_ptr()) };
        let Some(raw) = NonNull::new(raw).filter(|_| rc == 0) else {
            return Err(ceph_error(
                format!("creating a Ceph client for user {}", config.user()),
                rc,
                "",
            ));
        };
        // From here on, dropping `cluster` shuts the handle down.
        let cluster = Cluster {
            raw,
            config: config.clone(),
        };
        let secs = timeout.as_secs().max(1).to_string();
        for (key, value) in [
            ("client_mount_timeout", secs.as_str()),
            ("rados_mon_op_timeout", secs.as_str()),
            // An I/O to a cluster that stopped fails after this instead of
            // waiting for it forever (librados' default).
            ("rados_osd_op_timeout", OSD_OP_TIMEOUT),
            // librbd's default cache acknowledges writes from memory once
            // it has seen a flush: a namespace without a volatile write
            // cache must not. A config that turns it on gets one (bdev).
            ("rbd_cache", "false"),
            // librados would print to the target's stderr otherwise.
            ("log_to_stderr", "false"),
            ("err_to_stderr", "false"),
        ] {
            cluster.set(key, value)?;
        }
        if config.options.is_empty() {
            // SAFETY: a live, unconnected handle; NULL: the default search path.
            let rc = unsafe { sys::rados_conf_read_file(cluster.as_ptr(), std::ptr::null()) };
            if rc < 0 {
                return Err(ceph_error(
                    "reading /etc/ceph/ceph.conf".into(),
                    rc,
                    "give mon_host and key in the config instead",
                ));
            }
        }
        for (key, value) in &config.options {
            cluster.set(key, value)?;
        }
        // SAFETY: a live handle, configured and not yet connected.
        let rc = unsafe { sys::rados_connect(cluster.as_ptr()) };
        if rc < 0 {
            let (user, mon) = (config.user(), config.mon_host());
            let hint = match -rc {
                // librados retries a refused key until the timeout too: a
                // monitor that accepts TCP connections tells them apart.
                libc::ETIMEDOUT if monitor_answers(mon) => format!(
                    "the monitor at {mon} answers, but did not let client.{user} in within \
                     {secs} s: check the user and key"
                ),
                libc::ETIMEDOUT => format!(
                    "no monitor at {mon} answered within {secs} s: check mon_host and that \
                     the cluster runs"
                ),
                libc::EACCES | libc::EPERM => {
                    format!("the cluster refused client.{user}'s key: check the user and key")
                }
                libc::ENOENT => {
                    format!("no key for client.{user}: give key in the config, or a keyring")
                }
                _ => String::new(),
            };
            return Err(ceph_error(
                format!("connecting to Ceph at {mon} as client.{user}"),
                rc,
                &hint,
            ));
        }
        Ok(cluster)
    }

    fn set(&self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (
            crate::cstr::to_c("Ceph option name", key)?,
            crate::cstr::to_c("Ceph option value", value)?,
        );
        // SAFETY: a live, unconnected handle; both are C strings.
        let rc = unsafe { sys::rados_conf_set(self.as_ptr(), k.as_ptr(), v.as_ptr()) };
        if rc < 0 {
            let hint = if -rc == libc::ENOENT {
                "Ceph has no option of that name"
            } else {
                "Ceph refused the value"
            };
            return Err(ceph_error(format!("setting Ceph option {key}"), rc, hint));
        }
        Ok(())
    }

    /// How it was reached.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster's fsid (its UUID, the same for every monitor of it).
    pub fn fsid(&self) -> Result<String> {
        let mut buf = [0u8; 64];
        // SAFETY: a connected handle and a buffer of the length given.
        let rc =
            unsafe { sys::rados_cluster_fsid(self.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc < 0 {
            return Err(ceph_error("reading the cluster's fsid".into(), rc, ""));
        }
        Ok(c_text(&buf))
    }

    /// The raw handle, for librados and librbd calls; valid while `self`
    /// lives.
    pub fn as_ptr(&self) -> sys::rados_t {
        self.raw.as_ptr()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle is live and nothing else uses it any more.
        unsafe { sys::rados_shutdown(self.as_ptr()) };
    }
}

/// Whether a monitor of `mon_host` (`ip:port` entries, optionally `v1:`/
/// `v2:` and brackets, comma or space separated) accepts a TCP connection
/// within a second.
fn monitor_answers(mon_host: &str) -> bool {
    use std::net::{SocketAddr, TcpStream};
    mon_host
        .split([',', ' ', '[', ']'])
        .filter(|a| !a.is_empty())
        .filter_map(|a| {
            let (default_port, a) = match a.split_once(':') {
                Some(("v1", rest)) => (6789, rest),
                Some(("v2", rest)) => (3300, rest),
                _ => (6789, a),
            };
            a.parse::<SocketAddr>()
                .ok()
                .or_else(|| format!("{a}:{default_port}").parse().ok())
        })
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

pub(super) fn ceph_error(op: String, rc: i32, hint: &str) -> Error {
    Error::Ceph {
        op,
        errno: rc.abs().max(1),
        hint: hint.into(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn monitor_addresses_in_ceph_forms_are_probed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for form in [
            format!("127.0.0.1:{port}"),
            format!("v1:127.0.0.1:{port}"),
            format!("[v2:127.0.0.1:1,v1:127.0.0.1:{port}]"),
            format!("127.0.0.1:1, 127.0.0.1:{port}"),
        ] {
            assert!(monitor_answers(&form), "{form}");
        }
        drop(listener);
        assert!(!monitor_answers(&format!("127.0.0.1:{port}")));
        assert!(!monitor_answers("not an address"));
    }
}

/// The text of a NUL-terminated C buffer (all of it if it has no NUL).
pub(crate) fn c_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
