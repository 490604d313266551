//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An SPDK call returned `-errno`.
    Spdk {
        /// What was being done, e.g. `"spdk_nvmf_subsystem_add_listener"`.
        op: String,
        /// The positive errno SPDK reported.
        errno: i32,
    },
    /// A libpmemblk call failed.
    Pmem {
        /// What was being done.
        op: &'static str,
        /// The pool file.
        path: PathBuf,
        /// errno at the time of the failure.
        errno: i32,
        /// `pmemblk_errormsg()` at the time of the failure.
        message: String,
    },
    /// A Ceph client library call (librados, librbd) returned `-errno`.
    Ceph {
        /// What was being done, naming the cluster, pool or image.
        op: String,
        /// The positive errno Ceph reported.
        errno: i32,
        /// What it most likely means and what to check.
        hint: String,
    },
    /// An argument was refused before reaching C.
    InvalidArgument(String),
    /// The host lacks something SPDK needs (hugepages, say); the text says what to run.
    Environment(String),
    /// The SPDK object a handle names is gone (deleted over RPC, say).
    NotFound(String),
    /// The bdev behind a descriptor was hot-removed (unregistered): its I/O
    /// fails, and the descriptor closes.
    BdevRemoved {
        /// The bdev's name.
        bdev: String,
    },
    /// A bdev I/O completed with an error; the NVMe status says which.
    BdevIo {
        /// The I/O: `read`, `write`, `write_zeroes`, `unmap`, `flush`, `reset`.
        op: &'static str,
        /// The bdev's name.
        bdev: String,
        /// NVMe Status Code Type (2: media and data integrity errors).
        sct: i32,
        /// NVMe Status Code.
        sc: i32,
    },
}

impl Error {
    /// An error from SPDK's `-errno` convention (`rc` may be negative or positive).
    pub fn spdk(op: impl Into<String>, rc: i32) -> Self {
        Error::Spdk {
            op: op.into(),
            errno: rc.abs(),
        }
    }

    /// Whether this is a bdev I/O that failed on unreadable media (NVMe
    /// Unrecovered Read Error).
    pub fn is_media_error(&self) -> bool {
        matches!(
            self,
            Error::BdevIo { sct, sc, .. } if *sct == spdk_sys::SPDK_NVME_SCT_MEDIA_ERROR as i32
                && *sc == spdk_sys::SPDK_NVME_SC_UNRECOVERED_READ_ERROR as i32
        )
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Spdk { errno, .. } | Error::Pmem { errno, .. } | Error::Ceph { errno, .. } => {
                Some(*errno)
            }
            Error::BdevRemoved { .. } => Some(libc::ENODEV),
            Error::BdevIo { .. } => Some(libc::EIO),
            _ => None,
        }
    }
}

/// Turns SPDK's `0` / `-errno` return convention into a `Result`.
pub fn check_rc(op: &str, rc: i32) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::spdk(op, rc))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spdk { op, errno } => {
                write!(f, "{op} failed: {}", io::Error::from_raw_os_error(*errno))
            }
            Error::Pmem {
                op,
                path,
                errno,
                message,
            } => {
                write!(f, "{op} {}: ", path.display())?;
                if message.is_empty() {
                    write!(f, "{}", io::Error::from_raw_os_error(*errno))
                } else {
                    write!(f, "{message} ({})", io::Error::from_raw_os_error(*errno))
                }
            }
            Error::Ceph { op, errno, hint } => {
                write!(f, "{op}: {}", io::Error::from_raw_os_error(*errno))?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            Error::InvalidArgument(msg) | Error::Environment(msg) | Error::NotFound(msg) => {
                f.write_str(msg)
            }
            Error::BdevRemoved { bdev } => write!(
                f,
                "bdev {bdev} was removed: its descriptor is closed and its I/O fails"
            ),
            Error::BdevIo { op, bdev, sct, sc } => {
                write!(
                    f,
                    "{op} on bdev {bdev} failed: NVMe status SCT {sct:#x} SC {sc:#x}"
                )?;
                if self.is_media_error() {
                    f.write_str(" (unrecovered read error: the block cannot be read)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_positive_errno_read_the_same() {
        let a = Error::spdk("spdk_x", -libc::EEXIST);
        let b = Error::spdk("spdk_x", libc::EEXIST);
        assert_eq!(a.errno(), Some(libc::EEXIST));
        assert_eq!(a.to_string(), b.to_string());
        assert!(a.to_string().starts_with("spdk_x failed: File exists"));
    }

    #[test]
    fn check_rc_keeps_context() {
        assert!(check_rc("op", 0).is_ok());
        let err = check_rc("spdk_nvmf_subsystem_add_ns", -libc::ENODEV).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENODEV));
        assert!(err.to_string().contains("spdk_nvmf_subsystem_add_ns"));
    }
}
