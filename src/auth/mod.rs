//! Who may connect: NVMe in-band authentication with DH-HMAC-CHAP (NVMe
//! Base Specification 2.0, 8.13), which SPDK 20.07 lacks, served from Rust
//! through the hooks of vendor patch 0034.
//!
//! A host that has a key on a subsystem (`nvmf_subsystem_add_host
//! --dhchap-key`) must authenticate every queue pair, admin and I/O: its
//! Connect is answered "authentication required", and until the
//! transaction of [`dhchap`] admits it, the queue pair runs nothing but the
//! authentication commands. A transaction that fails is answered with
//! AUTH_Failure1 and the queue pair is disconnected 100 ms later (so the
//! host reads why); one that stalls is disconnected after the controller's
//! keep-alive timeout (120 s without one), as upstream SPDK does. A host
//! may authenticate again on an admitted queue pair (re-authentication,
//! `nvme` writes to `dhchap_secret`); its I/O goes on meanwhile, and only
//! a failed attempt ends the queue pair.
//!
//! Each refusal is one line in the target's log, naming the host, its
//! address, the queue and why, never a key; the lines go through the log's
//! rate limit like SPDK's own.
//!
//! Upstream SPDK's vocabulary drives it: [`crate::keyring`]'s RPCs,
//! `nvmf_subsystem_add_host --dhchap-key --dhchap-ctrlr-key`,
//! `nvmf_subsystem_set_keys`, `nvmf_set_config --dhchap-digests
//! --dhchap-dhgroups` ([`rpcs`]).

pub mod dhchap;
pub mod hosts;
pub mod rpcs;
pub mod secret;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::rc::Rc;

use serde_json::Value;

use crate::sys;
use crate::thread::Poller;
use dhchap::{Exchange, Names, Received, Sent, State};
use std::sync::Mutex;

/// How long a host may take over one step of a transaction when its
/// controller has no keep-alive timeout (upstream SPDK's default).
const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// How long a refused queue pair stays, so the host reads AUTH_Failure1.
const FAILURE_LINGER_US: u64 = 100_000;
/// The security protocol of NVMe in-band authentication (SECP).
const SECP_NVME: u8 = 0xe9;
const SC_INVALID_FIELD: u16 = 0x02;

/// The next challenge's sequence number: never 0, starting anywhere.
fn next_seqnum() -> u32 {
    static SEQ: std::sync::OnceLock<Mutex<u32>> = std::sync::OnceLock::new();
    let mut seq = crate::sync::lock(SEQ.get_or_init(|| {
        let mut b = [0u8; 4];
        let _ = openssl::rand::rand_bytes(&mut b);
        Mutex::new(u32::from_le_bytes(b))
    }));
    *seq = seq.wrapping_add(1).max(1);
    *seq
}

/// One log line through SPDK's logger (and so the log's rate limit, by
/// `line`: one kind per call site).
fn log(level: sys::spdk_log_level, line: u32, message: &str) {
    let Ok(text) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: all strings are NUL-terminated and outlive the call; the
    // format takes exactly one string.
    unsafe {
        sys::spdk_log(
            level,
            c"auth.rs".as_ptr(),
            line as c_int,
            c"dhchap".as_ptr(),
            c"%s\n".as_ptr(),
            text.as_ptr(),
        )
    };
}

/// A queue pair's authentication, owned by its C queue pair
/// (`qpair->auth_ctx`), used on its poll group's thread only.
struct QpairAuth {
    qpair: *mut sys::spdk_nvmf_qpair,
    exchange: Option<Exchange>,
    admitted: bool,
    /// Whether this transaction's refusal was logged.
    logged: bool,
    kato_ms: u32,
    /// The subsystem's and the host's NQN, for the log.
    names: Option<(String, String)>,
    /// Whether the host sent any authentication command.
    attempted: bool,
    /// False once the queue pair is gone: its timer's closure may still run
    /// once before the unregistering reaches it.
    alive: Rc<Cell<bool>>,
    timer: Option<Poller>,
}

/// What a timer does when it fires.
#[derive(Clone, Copy)]
enum Expiry {
    /// The transaction took too long.
    Timeout,
    /// A refused queue pair's AUTH_Failure1 had its time to reach the host.
    Linger,
}

impl QpairAuth {
    fn new(qpair: *mut sys::spdk_nvmf_qpair, kato_ms: u32) -> Box<QpairAuth> {
        Box::new(QpairAuth {
            qpair,
            exchange: None,
            admitted: false,
            logged: false,
            kato_ms,
            names: None,
            attempted: false,
            alive: Rc::new(Cell::new(true)),
            timer: None,
        })
    }

    fn peer(&self) -> String {
        // SAFETY: a zeroed transport ID is a valid buffer for SPDK to fill.
        let mut trid: sys::spdk_nvme_transport_id = unsafe { std::mem::zeroed() };
        // SAFETY: the queue pair is live (this context goes with it).
        if unsafe { sys::spdk_nvmf_qpair_get_peer_trid(self.qpair, &mut trid) } != 0 {
            return "unknown address".into();
        }
        // SAFETY: SPDK NUL-terminates both fields.
        let (addr, port) = unsafe {
            (
                CStr::from_ptr(trid.traddr.as_ptr()).to_string_lossy(),
                CStr::from_ptr(trid.trsvcid.as_ptr()).to_string_lossy(),
            )
        };
        format!("{addr}:{port}")
    }
}

/// The queue pair's timer: a transaction's timeout, a refusal's linger.
impl QpairAuth {
    /// Arms the timer (again): `expiry` after `after_us`.
    fn arm(&mut self, after_us: u64, expiry: Expiry) {
        self.timer = None;
        let me: *mut QpairAuth = self;
        let alive = self.alive.clone();
        let poller = Poller::register(after_us, move || {
            if alive.get() {
                // SAFETY: `alive` says the context (a Box that never moves)
                // still exists; this runs on its thread, between calls into
                // it.
                unsafe { QpairAuth::expire(me, expiry) };
            }
            true
        });
        match poller {
            Ok(p) => self.timer = Some(p),
            Err(e) => log(
                sys::SPDK_LOG_ERROR,
                line!(),
                &format!("DH-HMAC-CHAP: no timer for queue pair: {e}"),
            ),
        }
    }

    fn arm_timeout(&mut self) {
        let ms = if self.kato_ms > 0 {
            u64::from(self.kato_ms)
        } else {
            DEFAULT_TIMEOUT_MS
        };
        self.arm(ms * 1000, Expiry::Timeout);
    }

    /// A timer fired.
    ///
    /// # Safety
    /// `me` is a live context, not borrowed elsewhere.
    unsafe fn expire(me: *mut QpairAuth, expiry: Expiry) {
        let qpair = {
            // SAFETY: per the contract; the borrow ends before the
            // disconnect, which may free the context.
            let ctx = unsafe { &mut *me };
            ctx.timer = None;
            match expiry {
                Expiry::Timeout if ctx.admitted => {
                    // A stalled re-authentication is not fatal: the queue
                    // pair was admitted and stays so.
                    ctx.exchange = None;
                    return;
                }
                Expiry::Timeout => log(
                    sys::SPDK_LOG_ERROR,
                    line!(),
                    &format!(
                        "DH-HMAC-CHAP: queue pair from {} did not authenticate in time: disconnecting it",
                        ctx.peer()
                    ),
                ),
                Expiry::Linger => {}
            }
            ctx.alive.set(false);
            ctx.qpair
        };
        // SAFETY: the queue pair is live and this is its thread; it may
        // free the context (qpair_fini), which is not used after this.
        unsafe { sys::spdk_nvmf_qpair_disconnect(qpair, None, std::ptr::null_mut()) };
    }
}

/// What the queue pair's commands do.
impl QpairAuth {
    fn refuse(&mut self, line: u32, names: Names<'_>, qid: u16, why: &str) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        log(
            sys::SPDK_LOG_ERROR,
            line,
            &format!(
                "DH-HMAC-CHAP: host {} ({}) refused on queue {qid} of {}: {why}",
                names.hostnqn,
                self.peer(),
                names.subnqn
            ),
        );
    }

    fn admit(&mut self, names: Names<'_>, qid: u16) {
        let was_admitted = std::mem::replace(&mut self.admitted, true);
        self.timer = None;
        if qid == 0 {
            let (hash, group) = self
                .exchange
                .as_ref()
                .map(Exchange::negotiated)
                .unwrap_or((secret::HashFn::Sha256, secret::DhGroup::Null));
            log(
                sys::SPDK_LOG_NOTICE,
                line!(),
                &format!(
                    "DH-HMAC-CHAP: host {} ({}) {} to {} ({}, {})",
                    names.hostnqn,
                    self.peer(),
                    if was_admitted {
                        "re-authenticated"
                    } else {
                        "authenticated"
                    },
                    names.subnqn,
                    hash.name(),
                    group.name()
                ),
            );
        }
    }

    /// One AUTHENTICATION_SEND or _RECV; returns the completion's status.
    fn exec(&mut self, req: &sys::spdk_nvmf_auth_request, recv_length: &mut u32) -> (u16, bool) {
        self.attempted = true;
        // SAFETY: SPDK passes NUL-terminated NQNs of the live controller.
        let (hostnqn, subnqn) = unsafe {
            (
                CStr::from_ptr(req.hostnqn).to_string_lossy(),
                CStr::from_ptr(req.subnqn).to_string_lossy(),
            )
        };
        let names = Names {
            hostnqn: &hostnqn,
            subnqn: &subnqn,
        };
        let wrong_command = req.secp != SECP_NVME
            || req.spsp0 != 1
            || req.spsp1 != 1
            || req.data.is_null()
            || req.length != req.data_length;
        if wrong_command {
            self.refuse(
                line!(),
                names,
                req.qid,
                &format!(
                    "an authentication command with SECP {:#x}, SPSP {}/{}, length {} for {} bytes of data",
                    req.secp, req.spsp0, req.spsp1, req.length, req.data_length
                ),
            );
            return (SC_INVALID_FIELD, false);
        }
        // SAFETY: SPDK passes the command's contiguous buffer of
        // `data_length` bytes, ours until the command completes.
        let data = unsafe {
            std::slice::from_raw_parts_mut(req.data as *mut u8, req.data_length as usize)
        };
        let send = u32::from(req.fctype) == sys::SPDK_NVMF_FABRIC_COMMAND_AUTHENTICATION_SEND;
        let fresh = matches!(
            self.exchange.as_ref().map(Exchange::state),
            None | Some(State::Completed)
        );
        if fresh {
            // A new transaction: the first, or a re-authentication.
            self.exchange = Some(Exchange::new());
            self.logged = false;
        }
        let exchange = self.exchange.as_mut().expect("set just above");
        if send {
            let sent = exchange.on_send(data, &hosts::policy(), names, || {
                hosts::keys(names.subnqn, names.hostnqn).map(|k| k.secrets())
            });
            match sent {
                Sent::Taken => self.arm_timeout(),
                Sent::Admitted => {
                    self.admit(names, req.qid);
                    return (0, true);
                }
                Sent::Failed(f) => self.refuse(line!(), names, req.qid, &f.why),
                Sent::Rejected(f) => {
                    self.refuse(line!(), names, req.qid, &f.why);
                    self.arm(FAILURE_LINGER_US, Expiry::Linger);
                }
            }
            (0, false)
        } else {
            match exchange.on_recv(data, next_seqnum) {
                Received::Message(n) => {
                    *recv_length = n as u32;
                    self.arm_timeout();
                    (0, false)
                }
                Received::Admitted(n) => {
                    *recv_length = n as u32;
                    self.admit(names, req.qid);
                    (0, true)
                }
                Received::Failure1(n) => {
                    *recv_length = n as u32;
                    let why = exchange
                        .failure()
                        .map_or_else(String::new, |f| f.why.clone());
                    self.refuse(line!(), names, req.qid, &why);
                    self.arm(FAILURE_LINGER_US, Expiry::Linger);
                    (0, false)
                }
            }
        }
    }
}

extern "C" fn required(subnqn: *const c_char, hostnqn: *const c_char) -> bool {
    crate::panics::catch(|| {
        // SAFETY: SPDK passes NUL-terminated NQNs.
        let (sub, host) = unsafe {
            (
                CStr::from_ptr(subnqn).to_string_lossy(),
                CStr::from_ptr(hostnqn).to_string_lossy(),
            )
        };
        hosts::keys(&sub, &host).is_some()
    })
    // Unsure: ask (an authentication that cannot succeed refuses the host).
    .unwrap_or(true)
}

extern "C" fn qpair_init(
    qpair: *mut sys::spdk_nvmf_qpair,
    ctx: *mut *mut c_void,
    subnqn: *const c_char,
    hostnqn: *const c_char,
    kato_ms: u32,
) -> c_int {
    crate::panics::catch(|| {
        // SAFETY: `ctx` is the queue pair's slot; a context there is ours.
        let slot = unsafe { &mut *ctx };
        if slot.is_null() {
            *slot = Box::into_raw(QpairAuth::new(qpair, kato_ms)) as *mut c_void;
        }
        // SAFETY: just set, or set by an earlier call; this thread owns it.
        let auth = unsafe { &mut *(*slot as *mut QpairAuth) };
        auth.kato_ms = kato_ms;
        // SAFETY: SPDK passes the controller's NUL-terminated NQNs.
        auth.names = unsafe {
            Some((
                CStr::from_ptr(subnqn).to_string_lossy().into_owned(),
                CStr::from_ptr(hostnqn).to_string_lossy().into_owned(),
            ))
        };
        auth.arm_timeout();
        0
    })
    .unwrap_or(-libc::EIO)
}

extern "C" fn exec(
    ctx: *mut *mut c_void,
    req: *const sys::spdk_nvmf_auth_request,
    status: *mut u16,
    recv_length: *mut u32,
) -> sys::spdk_nvmf_auth_outcome {
    let outcome = crate::panics::catch(|| {
        // SAFETY: SPDK passes the live request and the queue pair's slot,
        // on the queue pair's thread.
        let (req, slot) = unsafe { (&*req, &mut *ctx) };
        if slot.is_null() {
            // Re-authentication of a queue pair that had none.
            *slot = Box::into_raw(QpairAuth::new(req.qpair, req.kato_ms)) as *mut c_void;
            // SAFETY: just made.
            unsafe { (*(*slot as *mut QpairAuth)).admitted = req.admitted };
        }
        // SAFETY: our context, used on this thread only.
        let auth = unsafe { &mut *(*slot as *mut QpairAuth) };
        let mut length = 0;
        let (sc, admitted) = auth.exec(req, &mut length);
        // SAFETY: SPDK's out-parameters.
        unsafe {
            *status = sc;
            *recv_length = length;
        }
        admitted
    });
    match outcome {
        Ok(true) => sys::SPDK_NVMF_AUTH_OUTCOME_ADMITTED,
        Ok(false) => sys::SPDK_NVMF_AUTH_OUTCOME_CONTINUE,
        Err(_) => {
            // SAFETY: SPDK's out-parameter.
            unsafe { *status = 0x06 }; // Internal Error
            sys::SPDK_NVMF_AUTH_OUTCOME_CONTINUE
        }
    }
}

extern "C" fn qpair_fini(ctx: *mut c_void) {
    let _ = crate::panics::catch(|| {
        // SAFETY: the context qpair_init or exec made; SPDK calls this once.
        let auth = unsafe { Box::from_raw(ctx as *mut QpairAuth) };
        auth.alive.set(false);
        if !auth.admitted && !auth.attempted {
            // A host without a key gives up at once: the one trace of it.
            let (sub, host) = auth.names.clone().unwrap_or_default();
            log(
                sys::SPDK_LOG_ERROR,
                line!(),
                &format!(
                    "DH-HMAC-CHAP: host {host} ({}) closed queue pair of {sub} without authenticating (the subsystem requires it: has the host a key?)",
                    auth.peer()
                ),
            );
        }
        drop(auth);
    });
}

extern "C" fn host_removed(subnqn: *const c_char, hostnqn: *const c_char) {
    let _ = crate::panics::catch(|| {
        // SAFETY: SPDK passes NUL-terminated NQNs.
        let (sub, host) = unsafe {
            (
                CStr::from_ptr(subnqn).to_string_lossy(),
                CStr::from_ptr(hostnqn).to_string_lossy(),
            )
        };
        hosts::set(&sub, &host, None);
    });
}

extern "C" fn write_host_config(
    w: *mut sys::spdk_json_write_ctx,
    subnqn: *const c_char,
    hostnqn: *const c_char,
) {
    let keys = crate::panics::catch(|| {
        // SAFETY: SPDK passes NUL-terminated NQNs.
        let (sub, host) = unsafe {
            (
                CStr::from_ptr(subnqn).to_string_lossy(),
                CStr::from_ptr(hostnqn).to_string_lossy(),
            )
        };
        hosts::keys(&sub, &host)
    });
    if let Ok(Some(keys)) = keys {
        // SAFETY: `w` is inside the host's params object.
        unsafe {
            crate::rpc::write_named_json_value(w, "dhchap_key", &Value::from(keys.key.name()));
            if let Some(c) = &keys.ctrlr_key {
                crate::rpc::write_named_json_value(w, "dhchap_ctrlr_key", &Value::from(c.name()));
            }
        }
    }
}

extern "C" fn write_tgt_config(w: *mut sys::spdk_json_write_ctx) {
    if let Ok((digests, groups)) = crate::panics::catch(|| {
        let p = hosts::policy();
        (rpcs::digest_names(&p), rpcs::dhgroup_names(&p))
    }) {
        // SAFETY: `w` is inside nvmf_set_config's params object.
        unsafe {
            crate::rpc::write_named_json_value(w, "dhchap_digests", &digests);
            crate::rpc::write_named_json_value(w, "dhchap_dhgroups", &groups);
        }
    }
}

static OPS: sys::spdk_nvmf_auth_ops = sys::spdk_nvmf_auth_ops {
    required: Some(required),
    qpair_init: Some(qpair_init),
    exec: Some(exec),
    qpair_fini: Some(qpair_fini),
    host_removed: Some(host_removed),
    write_host_config: Some(write_host_config),
    write_tgt_config: Some(write_tgt_config),
};

/// Serves in-band authentication: installs the hooks, the keyring's RPCs
/// and `nvmf_subsystem_set_keys`. Call before `spdk_app_start`.
pub fn serve() -> crate::Result<()> {
    crate::keyring::serve_rpcs()?;
    rpcs::serve_rpcs()?;
    // SAFETY: the hooks live forever and never unwind into C.
    unsafe { sys::spdk_nvmf_set_auth_ops(&OPS) };
    Ok(())
}
