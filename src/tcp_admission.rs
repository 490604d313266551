//! Which NVMe/TCP connections the target takes before they have sent a
//! Fabrics Connect.
//!
//! Every accepted connection holds its queue's buffers (about 670 KiB of
//! hugepages with the default transport options) before it has sent a byte,
//! so connections that never connect must be bounded (vendor/patches/0015),
//! and the bound must not be one that a single source can fill: one address
//! opening junk connections faster than they close would lock every other
//! host out (0022). These limits are process-wide and apply to connections
//! accepted from the moment they are set, in every TCP transport.

use std::time::Duration;

use crate::error::{Error, Result};

/// Limits on connections waiting for a Fabrics Connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectLimits {
    /// At most this many, from all sources together; further connections
    /// are closed when accepted.
    pub max_waiting: u32,
    /// At most this many from one source address. A host connects all its
    /// queues (one per CPU on Linux, and an admin queue, per controller)
    /// before it sends their Connects, so keep it above that.
    pub max_waiting_per_address: u32,
    /// A connection without a controller this long after it was accepted
    /// is closed; whole seconds.
    pub deadline: Duration,
}

impl Default for ConnectLimits {
    /// 1,024 in all, 128 per address, 10 s: SPDK 20.07 with this project's
    /// patches when nothing sets them.
    fn default() -> Self {
        ConnectLimits {
            max_waiting: 1024,
            max_waiting_per_address: 128,
            deadline: Duration::from_secs(10),
        }
    }
}

/// The longest deadline accepted: past the NVMe/TCP binding's 30 s for a
/// host to answer, a silent connection has no reason to be kept.
const MAX_DEADLINE: Duration = Duration::from_secs(3600);

impl ConnectLimits {
    /// Checks that the limits make sense together, saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.max_waiting == 0 || self.max_waiting_per_address == 0 {
            return Err(Error::InvalidArgument(format!(
                "connections waiting for a Fabrics Connect: {} in all and {} per address \
                 would refuse every host; give at least 1",
                self.max_waiting, self.max_waiting_per_address
            )));
        }
        if self.max_waiting_per_address > self.max_waiting {
            return Err(Error::InvalidArgument(format!(
                "{} connections per address waiting for a Fabrics Connect is more than the {} \
                 allowed in all; give at most {}",
                self.max_waiting_per_address, self.max_waiting, self.max_waiting
            )));
        }
        if self.deadline < Duration::from_secs(1)
            || self.deadline > MAX_DEADLINE
            || self.deadline.subsec_nanos() != 0
        {
            return Err(Error::InvalidArgument(format!(
                "a Fabrics Connect deadline of {:?}: give whole seconds from 1 to {}",
                self.deadline,
                MAX_DEADLINE.as_secs()
            )));
        }
        Ok(())
    }

    /// Makes these the limits of every TCP transport of this process, for
    /// connections accepted from now on. May be called before the SPDK
    /// application starts, or at any time while it runs.
    pub fn apply(&self) -> Result<()> {
        self.validate()?;
        // SAFETY: stores three integers the TCP transport reads atomically.
        unsafe {
            crate::sys::spdk_nvmf_tcp_set_connect_limits(
                self.max_waiting,
                self.max_waiting_per_address,
                self.deadline.as_secs() as u32,
            )
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused_with_what_to_give() {
        assert!(ConnectLimits::default().validate().is_ok());
        let refused = |l: ConnectLimits, says: &str| {
            let e = l.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{l:?}: {e}");
        };
        let d = ConnectLimits::default();
        refused(
            ConnectLimits {
                max_waiting: 0,
                ..d
            },
            "give at least 1",
        );
        refused(
            ConnectLimits {
                max_waiting_per_address: 0,
                ..d
            },
            "give at least 1",
        );
        refused(
            ConnectLimits {
                max_waiting: 64,
                ..d
            },
            "give at most 64",
        );
        for deadline in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(3601),
        ] {
            refused(
                ConnectLimits { deadline, ..d },
                "whole seconds from 1 to 3600",
            );
        }
    }
}
