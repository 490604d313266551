//! The SPDK application framework (`spdk_app_start`): environment, reactors,
//! subsystems and the JSON-RPC server, configured by [`AppOptions`].
//!
//! ```no_run
//! use spdk_pmem::app::{self, AppOptions};
//!
//! let code = AppOptions::new("example")
//!     .reactor_mask("0x1")
//!     .rpc_addr("/var/tmp/example.sock")
//!     .run(|| {
//!         println!("SPDK is up");
//!         app::stop(0).expect("the app is serving");
//!     })
//!     .expect("options are valid");
//! std::process::exit(code);
//! ```

use std::any::Any;
use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::sys;

/// Options of an SPDK application: the fields of `spdk_app_opts`, plus `--no-huge`.
/// Unset options keep SPDK's defaults (`spdk_app_opts_init`).
#[derive(Debug, Clone)]
pub struct AppOptions {
    name: String,
    config_file: Option<PathBuf>,
    json_config_file: Option<PathBuf>,
    json_config_ignore_errors: bool,
    rpc_addr: Option<String>,
    reactor_mask: Option<String>,
    tpoint_group_mask: Option<String>,
    enable_coredump: bool,
    silence_noticelog: bool,
    wait_for_rpc: bool,
    num_trace_entries: Option<u64>,
    log_flags: Vec<String>,
    log_limit: u32,
    env: EnvOptions,
}

/// The DPDK environment's part of [`AppOptions`]: shared memory, cores,
/// memory and hugepages, IOVA, PCI.
#[derive(Debug, Clone, Default)]
struct EnvOptions {
    shm_id: Option<i32>,
    mem_channel: Option<i32>,
    master_core: Option<i32>,
    mem_size_mb: Option<i32>,
    no_pci: bool,
    hugepage_single_segments: bool,
    unlink_hugepage: bool,
    hugedir: Option<PathBuf>,
    iova_mode: Option<String>,
    base_virtaddr: Option<u64>,
    no_huge: bool,
    pci_blocked: Vec<String>,
    pci_allowed: Vec<String>,
}

/// Memory reserved with `--no-huge` when no size is given: DPDK's own default
/// (64 MiB) is too small for the NVMe-oF TCP transport's buffer pool.
const NO_HUGE_DEFAULT_MEM_MB: i32 = 1024;

/// The application: name, configuration, RPC server, reactors, tracing, logs.
impl AppOptions {
    /// Options with SPDK's defaults and the given application name.
    pub fn new(name: &str) -> Self {
        AppOptions {
            name: name.to_string(),
            config_file: None,
            json_config_file: None,
            json_config_ignore_errors: false,
            rpc_addr: None,
            reactor_mask: None,
            tpoint_group_mask: None,
            enable_coredump: true,
            silence_noticelog: false,
            wait_for_rpc: false,
            num_trace_entries: None,
            log_flags: Vec::new(),
            log_limit: crate::log_limit::DEFAULT_BURST,
            env: EnvOptions::default(),
        }
    }

    /// Legacy INI configuration file (`-c`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }
    /// JSON configuration file (`--json`), e.g. the output of `save_config`.
    pub fn json_config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.json_config_file = Some(path.into());
        self
    }
    /// Keep going when a JSON configuration entry fails (`--json-ignore-init-errors`).
    pub fn json_config_ignore_errors(mut self, yes: bool) -> Self {
        self.json_config_ignore_errors = yes;
        self
    }
    /// JSON-RPC listen address: a Unix socket path or `IP:port` (`-r`).
    pub fn rpc_addr(mut self, addr: &str) -> Self {
        self.rpc_addr = Some(addr.to_string());
        self
    }
    /// Reactor core mask, e.g. `0x1` or `[0,1]` (`-m`).
    pub fn reactor_mask(mut self, mask: &str) -> Self {
        self.reactor_mask = Some(mask.to_string());
        self
    }
    /// Tracepoint group mask (`-e`).
    pub fn tpoint_group_mask(mut self, mask: &str) -> Self {
        self.tpoint_group_mask = Some(mask.to_string());
        self
    }
    /// Whether a crash may write a full core dump (`-d` turns it off).
    pub fn enable_coredump(mut self, yes: bool) -> Self {
        self.enable_coredump = yes;
        self
    }
    /// Print warnings and errors only (`--silence-noticelog`).
    pub fn silence_noticelog(mut self, yes: bool) -> Self {
        self.silence_noticelog = yes;
        self
    }
    /// Start only the RPC server and wait for `framework_start_init` (`--wait-for-rpc`).
    pub fn wait_for_rpc(mut self, yes: bool) -> Self {
        self.wait_for_rpc = yes;
        self
    }
    /// Trace entries per core, a power of two (`--num-trace-entries`).
    pub fn num_trace_entries(mut self, n: u64) -> Self {
        self.num_trace_entries = Some(n);
        self
    }
    /// At most `lines` log lines (errors, warnings, notices) of one kind
    /// (one source line of SPDK's) per 10 s, then one that says how many
    /// more were left out; 0: every line (`--log-limit`, default 10).
    pub fn log_limit(mut self, lines: u32) -> Self {
        self.log_limit = lines;
        self
    }
    /// Enable a debug log flag (`-L`); effective in debug builds of SPDK.
    pub fn log_flag(mut self, flag: &str) -> Self {
        self.log_flags.push(flag.to_string());
        self
    }

    /// The RPC listen address in effect (SPDK's default `/var/tmp/spdk.sock` if unset).
    pub fn effective_rpc_addr(&self) -> &str {
        self.rpc_addr.as_deref().unwrap_or("/var/tmp/spdk.sock")
    }
}

/// The DPDK environment.
impl AppOptions {
    /// Shared-memory id: processes with the same id share hugepage files (`-i`).
    pub fn shm_id(mut self, id: i32) -> Self {
        self.env.shm_id = Some(id);
        self
    }
    /// Memory channels (`-n`).
    pub fn mem_channel(mut self, n: i32) -> Self {
        self.env.mem_channel = Some(n);
        self
    }
    /// The main reactor's core (`-p`).
    pub fn master_core(mut self, core: i32) -> Self {
        self.env.master_core = Some(core);
        self
    }
    /// Memory to reserve, in MiB (`-s`).
    pub fn mem_size_mb(mut self, mb: i32) -> Self {
        self.env.mem_size_mb = Some(mb);
        self
    }
    /// Do not touch PCI devices (`-u`).
    pub fn no_pci(mut self, yes: bool) -> Self {
        self.env.no_pci = yes;
        self
    }
    /// One hugepage file per segment list (`-g`).
    pub fn hugepage_single_segments(mut self, yes: bool) -> Self {
        self.env.hugepage_single_segments = yes;
        self
    }
    /// Unlink hugepage files after mapping them (`-R`).
    pub fn unlink_hugepage(mut self, yes: bool) -> Self {
        self.env.unlink_hugepage = yes;
        self
    }
    /// Where hugetlbfs is mounted (`--huge-dir`).
    pub fn hugedir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.env.hugedir = Some(dir.into());
        self
    }
    /// DPDK IOVA mode, `pa` or `va` (`--iova-mode`).
    pub fn iova_mode(mut self, mode: &str) -> Self {
        self.env.iova_mode = Some(mode.to_string());
        self
    }
    /// Base virtual address for DPDK's memory map (`--base-virtaddr`).
    pub fn base_virtaddr(mut self, addr: u64) -> Self {
        self.env.base_virtaddr = Some(addr);
        self
    }
    /// Run from ordinary memory instead of hugepages (`--no-huge`): DPDK gets
    /// `--no-huge`, IOVA mode `va`, and 1 GiB unless a memory size is given.
    /// SPDK's own NVMe-oF TCP target serves I/O like this; PCI devices cannot be used.
    pub fn no_huge(mut self, yes: bool) -> Self {
        self.env.no_huge = yes;
        self
    }
    /// Block a PCI address, `domain:bus:device.function` (`-B`).
    pub fn pci_block(mut self, bdf: &str) -> Self {
        self.env.pci_blocked.push(bdf.to_string());
        self
    }
    /// Allow only listed PCI addresses (`-W`).
    pub fn pci_allow(mut self, bdf: &str) -> Self {
        self.env.pci_allowed.push(bdf.to_string());
        self
    }
}

/// Checking and running.
impl AppOptions {
    /// Checks the options that SPDK would otherwise reject with a page of usage text.
    fn validate(&self) -> Result<()> {
        if !self.env.pci_blocked.is_empty() && !self.env.pci_allowed.is_empty() {
            return Err(Error::InvalidArgument(
                "-B (PCI block list) and -W (PCI allow list) cannot be used at the same time"
                    .into(),
            ));
        }
        if self.config_file.is_some() && self.json_config_file.is_some() {
            return Err(Error::InvalidArgument(
                "a legacy config (-c) and a JSON config (--json) can't be used together".into(),
            ));
        }
        if self.json_config_file.is_some() && self.wait_for_rpc {
            return Err(Error::InvalidArgument(
                "a JSON configuration (--json) can't be used together with --wait-for-rpc".into(),
            ));
        }
        if let Some(n) = self.num_trace_entries {
            if n == 0 || !n.is_power_of_two() {
                return Err(Error::InvalidArgument(format!(
                    "num-trace-entries must be a power of 2, not {n}"
                )));
            }
        }
        for path in self.json_config_file.iter().chain(&self.config_file) {
            if let Err(e) = std::fs::File::open(path) {
                return Err(Error::InvalidArgument(format!(
                    "can't read configuration file {}: {e}",
                    path.display()
                )));
            }
        }
        if let Some(mask) = &self.reactor_mask {
            check_core_mask(mask)?;
        }
        check_rpc_socket_free(self.effective_rpc_addr())?;
        if let Some(id) = self.env.shm_id.filter(|&id| id >= 0) {
            check_shm_id_free(id, Path::new("/var/run/dpdk"))?;
        }
        if !self.env.no_huge {
            check_hugepages(self.env.hugedir.as_deref())?;
        }
        Ok(())
    }

    /// Starts SPDK, calls `start` on the main reactor once the subsystems are
    /// up, and blocks until the application stops ([`stop`], SIGINT, SIGTERM).
    /// Returns the application's exit code (0 after a clean shutdown).
    ///
    /// A panic in `start` or in any callback of this crate stops the
    /// application and is resumed here, after SPDK has shut down.
    pub fn run<F: FnOnce()>(&self, start: F) -> Result<i32> {
        self.validate()?;
        if APP_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(
                "an SPDK application is already running in this process".into(),
            ));
        }
        let result = self.run_inner(start);
        APP_RUNNING.store(false, Ordering::SeqCst);
        let code = result?;
        if let Some(payload) = take_panic() {
            panic::resume_unwind(payload);
        }
        Ok(code)
    }

    fn run_inner<F: FnOnce()>(&self, start: F) -> Result<i32> {
        let mut spdk = SpdkAppOpts::new(self)?;
        for flag in &self.log_flags {
            let c = c_string("log flag", flag)?;
            // SAFETY: `c` is a valid C string for the duration of the call.
            if unsafe { sys::spdk_log_set_flag(c.as_ptr()) } != 0 {
                return Err(Error::InvalidArgument(format!("unknown log flag {flag:?}")));
            }
            spdk.opts.print_level = sys::SPDK_LOG_DEBUG;
        }
        spdk.set_pci_lists(&self.env)?;
        spdk.opts.shutdown_cb = Some(shutdown_trampoline);
        spdk.opts.log = crate::log_limit::install(self.log_limit);
        let context = StartContext {
            start: Cell::new(Some(Box::new(start) as Box<dyn FnOnce() + '_>)),
        };
        // SAFETY: every pointer in `spdk.opts` refers to a CString `spdk`
        // owns, which lives until spdk_app_start returns; `context` outlives
        // the call too, since spdk_app_start blocks until the application
        // has stopped. SPDK frees the PCI lists (malloc'ed by
        // pci_addr_array) itself.
        let rc = unsafe {
            sys::spdk_app_start(
                &mut spdk.opts,
                Some(start_trampoline),
                &context as *const StartContext<'_> as *mut c_void,
            )
        };
        *phase() = Phase::Idle;
        APP_THREAD_ID.store(0, Ordering::SeqCst);
        // SAFETY: spdk_app_fini releases what spdk_app_start set up; it is
        // called once after every spdk_app_start, as SPDK's apps do.
        unsafe { sys::spdk_app_fini() };
        crate::log_limit::finish();
        Ok(rc)
    }
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// `spdk_app_opts` made from [`AppOptions`], with the C strings its
/// pointers point into (a `CString`'s buffer stays put when it moves).
struct SpdkAppOpts {
    opts: sys::spdk_app_opts,
    strings: Vec<CString>,
}

impl SpdkAppOpts {
    /// The conversion: it only fills a struct (SPDK's defaults first, from
    /// `spdk_app_opts_init`), so unit tests check it. The log flags (SPDK
    /// globals) and the PCI lists (malloc'ed for SPDK) are `run`'s.
    fn new(o: &AppOptions) -> Result<SpdkAppOpts> {
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
    fn set_pci_lists(&mut self, env: &EnvOptions) -> Result<()> {
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

/// The cores of a core mask in SPDK's forms: hex (`0x3`, `3`) or a list
/// (`[0,2-3]`).
pub fn parse_core_mask(mask: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::InvalidArgument(format!(
            "invalid core mask {mask:?}: use hex (0x3) or a list ([0,2-3])"
        ))
    };
    let m = mask.trim();
    let mut cores = Vec::new();
    if let Some(list) = m.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        for part in list.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let c: usize = part.trim().parse().map_err(|_| bad())?;
                    (c, c)
                }
            };
            if lo > hi || hi >= 1024 {
                return Err(bad());
            }
            cores.extend(lo..=hi);
        }
    } else {
        let hex = m
            .strip_prefix("0x")
            .or_else(|| m.strip_prefix("0X"))
            .unwrap_or(m);
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        for (i, digit) in hex.chars().rev().enumerate() {
            let v = digit.to_digit(16).unwrap_or(0);
            for bit in 0..4 {
                if v & (1 << bit) != 0 {
                    cores.push(i * 4 + bit);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "core mask {mask:?} selects no core"
        )));
    }
    Ok(cores)
}

/// SPDK 20.07 logs "socket in use" and then runs on without its RPC server,
/// unreachable; refuse to start instead when another server answers there.
fn check_rpc_socket_free(addr: &str) -> Result<()> {
    if !addr.starts_with('/') {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(addr).is_ok() {
        return Err(Error::InvalidArgument(format!(
            "RPC socket {addr} is in use by another SPDK application: stop it, or pass -r with another path"
        )));
    }
    Ok(())
}

/// DPDK starts with `--proc-type=auto`: a second process on the same shared
/// memory id does not fail, it attaches to the first one's memory as a DPDK
/// secondary process. Refuse instead while a live process holds the lock
/// DPDK's primary takes on its runtime config file.
fn check_shm_id_free(shm_id: i32, runtime_dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let config = runtime_dir.join(format!("spdk{shm_id}")).join("config");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&config)
    else {
        return Ok(());
    };
    // SAFETY: a zeroed flock is a valid value to fill in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_GETLK on an open descriptor, with a valid flock to fill in.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    if rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short {
        return Err(Error::InvalidArgument(format!(
            "shared-memory id {shm_id} is in use by another SPDK application (process {}): stop it, or pass -i with another id",
            lock.l_pid
        )));
    }
    Ok(())
}

/// The cores this process may run on.
fn usable_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and its size is passed along.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads the set filled above; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// A core mask naming cores the machine lacks makes DPDK print its usage text;
/// say which core is missing and which exist instead.
fn check_core_mask(mask: &str) -> Result<()> {
    let usable = usable_cores();
    let missing: Vec<usize> = parse_core_mask(mask)?
        .into_iter()
        .filter(|c| !usable.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "core mask {mask} selects core(s) {missing:?}, which this machine does not have for this process; \
         usable cores: {usable:?} (e.g. -m 0x1)"
    )))
}

/// Hugepages are where SPDK gets DMA-able memory; without them DPDK prints a
/// page of usage text. Say what to run instead.
fn check_hugepages(hugedir: Option<&Path>) -> Result<()> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fix =
        "run `echo 1024 > /proc/sys/vm/nr_hugepages && mount -t hugetlbfs nodev /dev/hugepages` \
               as root (scripts/setup-host.sh does both), or start with --no-huge";
    if free == 0 {
        return Err(Error::Environment(format!(
            "no free hugepages (HugePages_Free: 0 in /proc/meminfo): {fix}"
        )));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let dir = f.nth(1);
        let fstype = f.next();
        fstype == Some("hugetlbfs")
            && hugedir.is_none_or(|want| dir == Some(&*want.to_string_lossy()))
    });
    if !mounted {
        let where_ = hugedir.map_or("any directory".to_string(), |d| d.display().to_string());
        return Err(Error::Environment(format!(
            "hugetlbfs is not mounted at {where_}: {fix}"
        )));
    }
    Ok(())
}

static APP_RUNNING: AtomicBool = AtomicBool::new(false);

/// Where the running application is: SPDK's threads and its RPC server exist
/// only while `Serving` or `Stopping`. Changed under the mutex, which
/// [`stop`] and [`shutdown`] hold while they call into SPDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No application, or one that has not called its start closure yet.
    Idle,
    /// Started; RPC answers and stop requests go to SPDK.
    Serving,
    /// Shutting down: SPDK finishes the RPC server next, and a second stop
    /// request has nothing to add.
    Stopping,
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Idle);

/// The id of the application's main SPDK thread, 0 when none.
static APP_THREAD_ID: AtomicU64 = AtomicU64::new(0);

fn phase() -> std::sync::MutexGuard<'static, Phase> {
    crate::sync::lock(&PHASE)
}

/// The id of the application's main SPDK thread, if an application runs.
pub(crate) fn app_thread_id() -> Option<u64> {
    Some(APP_THREAD_ID.load(Ordering::SeqCst)).filter(|&id| id != 0)
}

/// Whether an application runs in this process (from the call to
/// [`AppOptions::run`] until it returns).
pub(crate) fn is_running() -> bool {
    APP_RUNNING.load(Ordering::SeqCst)
}

/// Whether RPC requests may still be answered: an application runs and has
/// not begun to shut down (SPDK frees its RPC server then). This includes
/// start-up, before the start closure, when SPDK loads a `--json`
/// configuration through its own RPC server.
pub(crate) fn serving() -> bool {
    is_running() && *phase() != Phase::Stopping
}

/// Work a clean shutdown waits for before SPDK stops its subsystems (a
/// write-back cache destaging, say): called on the application thread, it
/// calls `done` there once finished.
pub type ShutdownHook = fn(done: Box<dyn FnOnce()>);

static SHUTDOWN_HOOKS: Mutex<Vec<ShutdownHook>> = Mutex::new(Vec::new());

/// Adds `hook` (once) to what a clean shutdown (SIGINT, SIGTERM,
/// `spdk_kill_instance`, [`shutdown`]) awaits before SPDK stops; hosts stay
/// connected meanwhile. The hook bounds its own wait; a second signal stops
/// at once.
pub fn on_shutdown(hook: ShutdownHook) {
    let mut hooks = crate::sync::lock(&SHUTDOWN_HOOKS);
    if !hooks.contains(&hook) {
        hooks.push(hook);
    }
}

/// Runs `hooks` one after another, then stops SPDK.
fn run_shutdown_hooks(mut hooks: Vec<ShutdownHook>) {
    match hooks.pop() {
        // SAFETY: on the app thread (SPDK's shutdown path, or a hook's
        // `done` there), inside SPDK's own shutdown.
        None => unsafe { sys::spdk_app_stop(0) },
        Some(hook) => hook(Box::new(move || run_shutdown_hooks(hooks))),
    }
}

/// SPDK's shutdown callback (SIGINT, SIGTERM, `spdk_kill_instance`, [`shutdown`]):
/// marks the shutdown, awaits the [`on_shutdown`] hooks, then stops as
/// SPDK's default does.
extern "C" fn shutdown_trampoline() {
    catch_panic(|| {
        // SPDK calls this only while its application runs, start-up included.
        *phase() = Phase::Stopping;
        let hooks = crate::sync::lock(&SHUTDOWN_HOOKS).clone();
        run_shutdown_hooks(hooks);
    });
}
static PANIC: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);

struct StartContext<'a> {
    start: Cell<Option<Box<dyn FnOnce() + 'a>>>,
}

extern "C" fn start_trampoline(arg: *mut c_void) {
    // SAFETY: `arg` is the StartContext that run_inner passed to spdk_app_start,
    // alive until spdk_app_start returns; SPDK calls this once, on its main thread.
    let context = unsafe { &*(arg as *const StartContext<'_>) };
    // SAFETY: called on the app thread, which spdk_get_thread returns.
    let id = unsafe { sys::spdk_thread_get_id(sys::spdk_get_thread()) };
    APP_THREAD_ID.store(id, Ordering::SeqCst);
    {
        // A shutdown that began during start-up stands.
        let mut phase = phase();
        if *phase == Phase::Idle {
            *phase = Phase::Serving;
        }
    }
    if let Some(start) = context.start.take() {
        catch_panic(start);
    }
}

/// Runs `f`, catching a panic so it never unwinds into C: the panic is kept,
/// the application is told to stop, and [`AppOptions::run`] resumes it.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Option<R> {
    match crate::panics::catch(f) {
        Ok(value) => Some(value),
        Err(caught) => {
            let mut slot = crate::sync::lock(&PANIC);
            if slot.is_none() {
                *slot = Some(caught.into_payload());
            }
            drop(slot);
            // Harmless when the app is not serving. When the app thread
            // takes no message now, asked again from elsewhere until it
            // does (or the application has ended).
            if stop(-1).is_err() && serving() {
                let _ = std::thread::Builder::new()
                    .name("app-stop".into())
                    .spawn(|| {
                        while stop(-1).is_err() && serving() {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    });
            }
            None
        }
    }
}

fn take_panic() -> Option<Box<dyn Any + Send>> {
    crate::sync::lock(&PANIC).take()
}

/// Asks the running application to shut down; [`AppOptions::run`] then
/// returns `code`. Callable from any thread. Before the application started
/// or after it ended it is an error, and changes nothing; so it is while the
/// application's thread has no room for a message (its ring of 65,536 is
/// full): try again. While it is already shutting down it is a no-op (the
/// first stop's code stands).
pub fn stop(code: i32) -> Result<()> {
    let mut phase = phase();
    match *phase {
        Phase::Idle => Err(not_running("app::stop")),
        Phase::Stopping => Ok(()),
        Phase::Serving => {
            // Through a message of ours, whose refusal is seen: SPDK 20.07's
            // spdk_app_stop sends the app thread a message and ignores the
            // error, so a stop asked while that thread's ring is full was
            // lost without a word. On the app thread, just after it took a
            // message off the ring, spdk_app_stop's own message has room.
            let id = app_thread_id().ok_or_else(|| not_running("app::stop"))?;
            // SAFETY: spdk_thread_get_by_id walks SPDK's thread list under
            // its lock; the app is serving (checked under the lock its end
            // takes), so its thread exists. The code travels as the
            // message's pointer-sized argument; stop_on_app_thread takes
            // nothing else.
            let rc = unsafe {
                let thread = sys::spdk_thread_get_by_id(id);
                if thread.is_null() {
                    return Err(not_running("app::stop"));
                }
                sys::spdk_thread_send_msg(
                    thread,
                    Some(stop_on_app_thread),
                    code as isize as *mut c_void,
                )
            };
            if rc != 0 {
                return Err(Error::Environment(format!(
                    "app::stop: the application's thread takes no message now (rc {rc}); try \
                     again"
                )));
            }
            *phase = Phase::Stopping;
            Ok(())
        }
    }
}

/// Runs on the app thread: spdk_app_stop records the code (the message's
/// argument) and sends this thread the message that stops it.
extern "C" fn stop_on_app_thread(arg: *mut c_void) {
    // SAFETY: on the app thread of the serving application, as stop sent it.
    unsafe { sys::spdk_app_stop(arg as isize as i32) }
}

/// Starts the same clean shutdown as SIGINT: subsystems finish, then the app
/// stops with 0. Errors, changing nothing, when no application is serving.
pub fn shutdown() -> Result<()> {
    match *phase() {
        Phase::Idle => Err(not_running("app::shutdown")),
        Phase::Stopping => Ok(()),
        Phase::Serving => {
            // SAFETY: as in stop; the message runs shutdown_trampoline on the
            // app thread, which marks the shutdown.
            unsafe { sys::spdk_app_start_shutdown() };
            Ok(())
        }
    }
}

fn not_running(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{what}: no SPDK application is running in this process"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn conflicting_options_are_refused_before_spdk_starts() {
        let err = AppOptions::new("t")
            .pci_block("0000:01:00.0")
            .pci_allow("0000:02:00.0")
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot be used at the same time"),
            "{err}"
        );

        let err = AppOptions::new("t")
            .num_trace_entries(1000)
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(err.to_string().contains("power of 2"), "{err}");

        let err = AppOptions::new("t")
            .json_config_file("/nonexistent/config.json")
            .no_huge(true)
            .run(|| {})
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/config.json"),
            "{err}"
        );
    }

    #[test]
    fn an_rpc_socket_with_a_server_on_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let path = path.to_str().unwrap();
        assert!(check_rpc_socket_free(path).is_ok());
        let _server = std::os::unix::net::UnixListener::bind(path).unwrap();
        let err = check_rpc_socket_free(path).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains("-r"), "{err}");
    }

    #[test]
    fn core_masks_parse_in_spdks_forms() {
        assert_eq!(parse_core_mask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_core_mask("0x5").unwrap(), vec![0, 2]);
        assert_eq!(parse_core_mask("30").unwrap(), vec![4, 5]);
        assert_eq!(parse_core_mask("[0,2-3]").unwrap(), vec![0, 2, 3]);
        assert!(parse_core_mask("0x0").is_err());
        assert!(parse_core_mask("zz").is_err());
        assert!(parse_core_mask("[3-1]").is_err());
    }

    #[test]
    fn a_core_the_machine_lacks_is_named() {
        let err = check_core_mask("[1000]").unwrap_err().to_string();
        assert!(
            err.contains("[1000]") && err.contains("usable cores"),
            "{err}"
        );
        assert!(check_core_mask("0x1").is_ok());
    }

    #[test]
    fn missing_hugetlbfs_mount_names_the_fix() {
        let err = check_hugepages(Some(Path::new("/nonexistent-hugedir"))).unwrap_err();
        let text = err.to_string();
        // With no free hugepages the first check fires; either way the fix is named.
        assert!(
            text.contains("--no-huge") && text.contains("nr_hugepages"),
            "{text}"
        );
    }

    #[test]
    fn caught_panic_is_kept_for_run_to_resume() {
        assert!(catch_panic(|| panic!("boom")).is_none());
        let payload = take_panic().expect("panic recorded");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(catch_panic(|| 7), Some(7));
    }
}
