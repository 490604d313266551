//! A process running in the background for one test.

use std::path::Path;
use std::time::{Duration, Instant};

use super::spdk_dd_command;

/// A process running in the background, killed if the test ends first.
pub struct Background {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    status: Option<std::process::ExitStatus>,
}

impl Background {
    /// spdk_dd as [`super::spdk_dd_ok`] runs it, in the background.
    pub fn spdk_dd(config: &Path, args: &[&str]) -> Background {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = spdk_dd_command(config, args)
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting spdk_dd");
        Background {
            child,
            log,
            status: None,
        }
    }

    /// Whether the command still runs.
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_none()
    }

    /// Waits for the command to exit; fails the test after `within`.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        while self.running() {
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.status.unwrap()
    }

    /// What the command printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
