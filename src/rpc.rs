//! JSON-RPC methods defined in Rust, served by SPDK's own RPC server next to
//! its C methods, and a filter in front of SPDK's dispatch (our patch
//! `vendor/patches/0005`) that lets clients of other SPDK versions in.
//!
//! ```no_run
//! use spdk_pmem::rpc::{self, RpcError, RpcStates};
//! use serde_json::json;
//!
//! rpc::register_method("example_echo", RpcStates::Runtime, |params| {
//!     match params {
//!         Some(p) => Ok(json!({ "echo": p })),
//!         None => Err(RpcError::invalid_params("example_echo needs params")),
//!     }
//! })?;
//! # Ok::<(), spdk_pmem::Error>(())
//! ```
//!
//! Handlers run on SPDK's RPC thread. A panic in a handler becomes an
//! "internal error" reply; it never reaches C and the target keeps serving.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::future::Future;
use std::os::raw::c_char;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{self, AppThread, Thread};

/// A JSON-RPC error reply: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code (e.g. -32602 invalid params).
    pub code: i32,
    /// What went wrong, for the client to read.
    pub message: String,
}

impl RpcError {
    /// JSON-RPC "invalid params" (-32602) with a message naming the problem.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError {
            code: sys::SPDK_JSONRPC_ERROR_INVALID_PARAMS,
            message: message.into(),
        }
    }
    /// JSON-RPC "internal error" (-32603).
    pub fn internal(message: impl Into<String>) -> Self {
        RpcError {
            code: sys::SPDK_JSONRPC_ERROR_INTERNAL_ERROR,
            message: message.into(),
        }
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => RpcError::invalid_params(m),
            other => RpcError {
                code: other
                    .errno()
                    .map_or(sys::SPDK_JSONRPC_ERROR_INTERNAL_ERROR, |e| -e),
                message: other.to_string(),
            },
        }
    }
}

/// When a method may be called: before subsystems start (`--wait-for-rpc`),
/// after, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcStates {
    /// Only while waiting for `framework_start_init`.
    Startup,
    /// Only once the subsystems run.
    Runtime,
    /// Either.
    Both,
}

impl RpcStates {
    fn mask(self) -> u32 {
        match self {
            RpcStates::Startup => sys::SPDK_RPC_STARTUP,
            RpcStates::Runtime => sys::SPDK_RPC_RUNTIME,
            RpcStates::Both => sys::SPDK_RPC_STARTUP | sys::SPDK_RPC_RUNTIME,
        }
    }
}

/// The outcome a handler's future resolves to.
pub type RpcResult = std::result::Result<Value, RpcError>;
type BoxedReply = Pin<Box<dyn Future<Output = RpcResult>>>;
type Handler = Arc<dyn Fn(Option<Value>) -> BoxedReply + Send + Sync>;

/// What the dispatch filter does with a request to a C method.
pub enum Filtered {
    /// Dispatch as it came.
    Unchanged,
    /// Dispatch with these params instead.
    Rewritten(Value),
    /// Refuse with this error.
    Refused(RpcError),
}

/// A filter over requests to SPDK's C methods: method name and params in,
/// decision out.
pub type Filter = dyn Fn(&str, Option<&Value>) -> Filtered + Send + Sync;

fn registry() -> &'static Mutex<HashMap<String, Handler>> {
    static METHODS: OnceLock<Mutex<HashMap<String, Handler>>> = OnceLock::new();
    METHODS.get_or_init(Mutex::default)
}

fn replacements() -> &'static Mutex<HashMap<String, Handler>> {
    static METHODS: OnceLock<Mutex<HashMap<String, Handler>>> = OnceLock::new();
    METHODS.get_or_init(Mutex::default)
}

fn filter_slot() -> &'static Mutex<Option<Arc<Filter>>> {
    static FILTER: OnceLock<Mutex<Option<Arc<Filter>>>> = OnceLock::new();
    FILTER.get_or_init(Mutex::default)
}

thread_local! {
    /// The Rust method the hook saw last on this thread; SPDK calls
    /// method_trampoline (which has no context argument) right after.
    static CURRENT_METHOD: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    // SAFETY: both hooks match SPDK's hook types and live forever.
    unsafe {
        sys::spdk_rpc_set_dispatch_hook(Some(dispatch_hook));
        sys::spdk_jsonrpc_set_response_hook(Some(response_hook));
    }
}

/// Calls by method and result, for the metrics.
fn tally() -> &'static crate::sync::RpcTally {
    static TALLY: std::sync::OnceLock<crate::sync::RpcTally> = std::sync::OnceLock::new();
    TALLY.get_or_init(Default::default)
}

/// Every response, on whichever thread answers (vendor patch 0024).
extern "C" fn response_hook(request: *mut sys::spdk_jsonrpc_request, error: bool) {
    let outcome = if error {
        crate::sync::Outcome::Error
    } else {
        crate::sync::Outcome::Ok
    };
    // A count lost is better than a panic unwinding into C.
    crate::panics::contain(
        || "the JSON-RPC response hook".to_string(),
        || tally().answered(request as usize, outcome),
    );
}

/// How a JSON-RPC call was answered.
pub use crate::sync::Outcome;

/// The method name under which responses to requests that never reached
/// dispatch (they were not JSON-RPC) are counted.
pub const UNMATCHED_REQUEST: &str = crate::sync::RpcTally::UNMATCHED;

/// JSON-RPC calls answered so far: (method, result, count), methods the
/// target does not have under [`UNKNOWN_METHOD`], responses to requests
/// that never reached dispatch under [`UNMATCHED_REQUEST`].
pub fn calls_by_method_and_result() -> Vec<(String, Outcome, u64)> {
    tally().counts()
}

/// Registers a JSON-RPC method whose reply is computed at once.
pub fn register_method<F>(name: &str, states: RpcStates, handler: F) -> Result<()>
where
    F: Fn(Option<Value>) -> RpcResult + Send + Sync + 'static,
{
    register_async_method(name, states, move |params| {
        let reply = handler(params);
        async move { reply }
    })
}

/// Registers a JSON-RPC method whose reply comes from a future, run on the
/// RPC thread (see [`thread::spawn_local`]): for methods that wait on SPDK.
pub fn register_async_method<F, Fut>(name: &str, states: RpcStates, handler: F) -> Result<()>
where
    F: Fn(Option<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RpcResult> + 'static,
{
    let c_name = CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("method name {name:?} contains a NUL byte")))?;
    // SPDK's method list has no lock: it changes before the application
    // starts, or on its main thread, where the RPC server reads it.
    if crate::app::is_running() && Thread::current().is_none_or(|t| Some(t) != Thread::app_thread())
    {
        return Err(Error::InvalidArgument(format!(
            "registering RPC method {name}: while the application runs, register on its main \
             thread (the start closure, or a message sent to Thread::app_thread())"
        )));
    }
    // SAFETY: `c_name` is a C string; SPDK walks its method list (filled by
    // constructors at load time, changed only where registration may run).
    let spdk_has_it = unsafe {
        sys::spdk_rpc_is_method_allowed(
            c_name.as_ptr(),
            sys::SPDK_RPC_STARTUP | sys::SPDK_RPC_RUNTIME,
        )
    } != -libc::ENOENT;
    if spdk_has_it {
        // SPDK would keep its own handler and ignore ours.
        return Err(Error::spdk(
            format!("registering RPC method {name}: SPDK has a method of that name"),
            -libc::EEXIST,
        ));
    }
    let mut methods = crate::sync::lock(registry());
    if methods.contains_key(name) {
        return Err(Error::spdk(
            format!("registering RPC method {name}: it exists"),
            -libc::EEXIST,
        ));
    }
    let handler: Handler = Arc::new(move |params| Box::pin(handler(params)) as BoxedReply);
    methods.insert(name.to_string(), handler);
    drop(methods);
    // SAFETY: SPDK copies the name (strdup); method_trampoline matches
    // spdk_rpc_method_handler. SPDK refuses (and logs) a duplicate C name.
    unsafe {
        sys::spdk_rpc_register_method(c_name.as_ptr(), Some(method_trampoline), states.mask())
    };
    install_hook();
    Ok(())
}

/// Serves SPDK's C method `name` (or one of its aliases, which are matched
/// by the name the client sent) with a Rust handler instead: same name, same
/// place in `rpc_get_methods`, SPDK's own state check (a call in the wrong
/// state still gets SPDK's answer), and the dispatch filter applied first.
/// The handler runs on the RPC thread, as [`register_async_method`]'s do.
pub fn replace_c_method<F, Fut>(name: &str, handler: F) -> Result<()>
where
    F: Fn(Option<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RpcResult> + 'static,
{
    let c_name = CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("method name {name:?} contains a NUL byte")))?;
    // SAFETY: `c_name` is a C string; SPDK walks its method list.
    let spdk_has_it = unsafe {
        sys::spdk_rpc_is_method_allowed(
            c_name.as_ptr(),
            sys::SPDK_RPC_STARTUP | sys::SPDK_RPC_RUNTIME,
        )
    } != -libc::ENOENT;
    if !spdk_has_it {
        return Err(Error::NotFound(format!(
            "replacing RPC method {name}: SPDK has no method of that name"
        )));
    }
    let handler: Handler = Arc::new(move |params| Box::pin(handler(params)) as BoxedReply);
    crate::sync::lock(replacements()).insert(name.to_string(), handler);
    install_hook();
    Ok(())
}

/// Registers a method with typed params and result: the request's params
/// are deserialized into `P` (absent params as `{}`, or as `null` when `P`
/// takes that, e.g. `Option<_>` or `()`), and the handler's `R` is
/// serialized as the result. Params that do not fit answer -32602 naming
/// the field's path, what it must be and what came:
/// `my_method: field items[0].bdev_name must be a string, not a number`,
/// `my_method: missing required field name`, `my_method: unknown field x`,
/// `my_method: field count must be a number from 0 to 4294967295, not -1`.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use spdk_pmem::rpc::{self, RpcError, RpcStates};
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Resize {
///     name: String,
///     #[serde(default)]
///     size_in_mib: u64,
/// }
///
/// #[derive(Serialize)]
/// struct Resized {
///     name: String,
///     bytes: u64,
/// }
///
/// rpc::register_typed_method("example_resize", RpcStates::Runtime, |p: Resize| {
///     let bytes = p.size_in_mib.checked_mul(1 << 20).ok_or_else(|| {
///         RpcError::invalid_params("example_resize: size_in_mib is out of range")
///     })?;
///     Ok(Resized { name: p.name, bytes })
/// })?;
/// # Ok::<(), spdk_pmem::Error>(())
/// ```
pub fn register_typed_method<P, R, F>(name: &str, states: RpcStates, handler: F) -> Result<()>
where
    P: DeserializeOwned + 'static,
    R: Serialize + 'static,
    F: Fn(P) -> std::result::Result<R, RpcError> + Send + Sync + 'static,
{
    let method = name.to_string();
    register_method(name, states, move |params| {
        let reply = handler(typed_params(&method, params)?)?;
        typed_result(&method, reply)
    })
}

/// [`register_typed_method`] for handlers whose reply comes from a future.
pub fn register_typed_async_method<P, R, F, Fut>(
    name: &str,
    states: RpcStates,
    handler: F,
) -> Result<()>
where
    P: DeserializeOwned + 'static,
    R: Serialize + 'static,
    F: Fn(P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, RpcError>> + 'static,
{
    let method = name.to_string();
    register_async_method(name, states, move |params| {
        let method = method.clone();
        let started = typed_params(&method, params).map(&handler);
        async move { typed_result(&method, started?.await?) }
    })
}

/// The params of `method` as a `P`, or -32602 naming the field at fault.
pub fn typed_params<P: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> std::result::Result<P, RpcError> {
    typed_params_with(method, params, &|_| None)
}

/// [`typed_params`], where `expected` may say what the field at a path
/// must be in the method's own words (`None`: serde's expectation).
pub fn typed_params_with<P: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<P, RpcError> {
    let refused = |value: &Value, e: serde_path_to_error::Error<serde_json::Error>| {
        params_error(method, value, &e, expected)
    };
    match params {
        Some(value) => serde_path_to_error::deserialize(&value).map_err(|e| refused(&value, e)),
        // No params: as an empty object (a struct of optional fields), else
        // as null (Option, unit); the object's error names what is missing.
        None => {
            let empty = Value::Object(Default::default());
            serde_path_to_error::deserialize(&empty).or_else(|e| {
                serde_path_to_error::deserialize(Value::Null).map_err(|_| refused(&empty, e))
            })
        }
    }
}

/// A params error (-32602) in the words every method uses: the field's path,
/// what it must be, and what came (`field nqn must be a string, not a
/// number`; `field count must be a number from 0 to 4294967295, not -1`;
/// `missing required field listen_address.traddr`; `unknown field colour`).
/// `expected` may say what the field at a path must be in the method's own
/// words (`None`: serde's expectation).
pub fn params_error(
    method: &str,
    params: &Value,
    e: &serde_path_to_error::Error<serde_json::Error>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> RpcError {
    RpcError::invalid_params(format!("{method}: {}", explain(params, e, expected)))
}

fn explain(
    params: &Value,
    e: &serde_path_to_error::Error<serde_json::Error>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> String {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    let quoted = |prefix: &str| {
        inner
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    if let Some(field) = quoted("missing field `") {
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}.")
        };
        return format!("missing required field {at}{field}");
    }
    if inner.starts_with("unknown field `") {
        return format!("unknown field {path}");
    }
    let must_be = expected(&path).unwrap_or_else(|| {
        let serde_words = inner.rsplit("expected ").next().unwrap_or_default();
        match serde_words {
            "u8" | "u16" | "u32" | "u64" | "usize" => {
                let max = match serde_words {
                    "u8" => u64::from(u8::MAX),
                    "u16" => u64::from(u16::MAX),
                    "u32" => u64::from(u32::MAX),
                    _ => u64::MAX,
                };
                format!("a number from 0 to {max}")
            }
            "a sequence" => "an array".to_string(),
            "a map" => "an object".to_string(),
            "a JSON number" => "a number".to_string(),
            words if words.starts_with("struct ") => "an object".to_string(),
            words => words.to_string(),
        }
    });
    // A wrong type is named by its kind, a wrong value by itself.
    let came = value_at(params, &path);
    let value = match came {
        Some(v) if inner.starts_with("invalid type") => type_name(v).to_string(),
        Some(v) => v.to_string(),
        None => "nothing".to_string(),
    };
    if path == "." {
        format!("params must be {must_be}, not {value}")
    } else {
        format!("field {path} must be {must_be}, not {value}")
    }
}

/// A JSON value's kind, as messages name it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at a serde_path_to_error path (`a.b[2].c`) in `v`.
fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "." {
        return Some(v);
    }
    let mut at = v;
    for part in path.split('.') {
        let (key, indices) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            at = at.get(key)?;
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            at = at.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(at)
}

fn typed_result<R: Serialize>(method: &str, reply: R) -> RpcResult {
    serde_json::to_value(reply)
        .map_err(|e| RpcError::internal(format!("{method}: its result did not serialize: {e}")))
}

/// How requests for methods the target does not have are counted.
pub const UNKNOWN_METHOD: &str = "(unknown)";

/// The requests the RPC server has received, by method (those for methods
/// it does not have under [`UNKNOWN_METHOD`]); read on the application
/// thread. Counted once a filter is set, as nvmf_tgt does, where they are
/// dispatched, in the same tally as their answers.
pub fn requests_by_method(app: AppThread) -> Result<Vec<(String, u64)>> {
    app.check()?;
    Ok(tally().requests())
}

/// Sets the filter applied to every request for a C method (replacing any
/// earlier one).
pub fn set_filter(filter: Box<Filter>) {
    *crate::sync::lock(filter_slot()) = Some(Arc::from(filter));
    install_hook();
}

extern "C" fn dispatch_hook(
    request: *mut sys::spdk_jsonrpc_request,
    method: *const c_char,
    params: *const sys::spdk_json_val,
) -> bool {
    let result = crate::panics::catch(|| {
        // SAFETY: SPDK passes a NUL-terminated method name valid for this call.
        let name = unsafe { CStr::from_ptr(method) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; SPDK's method list is read on this thread, the
        // one that changes it.
        let known = unsafe { sys::spdk_rpc_is_method_allowed(method, sys::spdk_rpc_get_state()) }
            != -libc::ENOENT;
        let counted_as = if known { &name } else { UNKNOWN_METHOD };
        tally().dispatched(request as usize, counted_as);
        if crate::sync::lock(registry()).contains_key(&name) {
            CURRENT_METHOD.with(|m| *m.borrow_mut() = Some(name));
            return false;
        }
        let filter = crate::sync::lock(filter_slot()).clone();
        let replacement = crate::sync::lock(replacements())
            .get(&name)
            .cloned()
            // SAFETY: `method` is a valid C string; SPDK's method list is
            // read on this (the RPC) thread, where it is changed.
            .filter(|_| unsafe {
                sys::spdk_rpc_is_method_allowed(method, sys::spdk_rpc_get_state()) == 0
            });
        if filter.is_none() && replacement.is_none() {
            return false;
        }
        // SAFETY: `params` is SPDK's parsed request, valid for this call.
        let value = match unsafe { params_to_value(params) } {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: `request` is the live request this hook answers.
                unsafe { respond(request, Err(RpcError::invalid_params(e))) };
                return true;
            }
        };
        let decision = filter.map_or(Filtered::Unchanged, |f| f(&name, value.as_ref()));
        let params = match decision {
            Filtered::Refused(e) => {
                // SAFETY: as above.
                unsafe { respond(request, Err(e)) };
                return true;
            }
            Filtered::Unchanged => value,
            Filtered::Rewritten(new) if replacement.is_some() => Some(new),
            Filtered::Rewritten(new) => {
                // SAFETY: as above; the method name is a valid C string.
                if let Err(e) = unsafe { dispatch_with(request, method, &new) } {
                    // SAFETY: dispatch failed before SPDK saw the request.
                    unsafe { respond(request, Err(RpcError::internal(e))) };
                }
                return true;
            }
        };
        let Some(handler) = replacement else {
            return false;
        };
        if let Err(e) = answer_later(request, name, handler(params)) {
            // SAFETY: the reply was never started, so the request is unanswered.
            unsafe { respond(request, Err(e)) };
        }
        true
    });
    match result {
        Ok(handled) => handled,
        Err(caught) => {
            let msg = format!("internal error in the RPC filter: {}", caught.message());
            // SAFETY: the request has not been answered (the panic came first).
            unsafe { respond(request, Err(RpcError::internal(msg))) };
            true
        }
    }
}

extern "C" fn method_trampoline(
    request: *mut sys::spdk_jsonrpc_request,
    params: *const sys::spdk_json_val,
) {
    let name = CURRENT_METHOD.with(|m| m.borrow_mut().take());
    let result = crate::panics::catch(|| -> std::result::Result<(), RpcError> {
        let name = name.ok_or_else(|| {
            RpcError::internal("Rust RPC method called without the dispatch hook")
        })?;
        let handler = crate::sync::lock(registry())
            .get(&name)
            .cloned()
            .ok_or_else(|| RpcError::internal(format!("no Rust handler for {name}")))?;
        // SAFETY: `params` is SPDK's parsed request, valid for this call.
        let value = unsafe { params_to_value(params) }.map_err(RpcError::invalid_params)?;
        answer_later(request, name, handler(value))
    });
    let failure = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(caught) => RpcError::internal(format!("internal error: {}", caught.message())),
    };
    // SAFETY: the handler never started, so the request is still unanswered.
    unsafe { respond(request, Err(failure)) };
}

/// Runs a handler's reply on this (the RPC) thread and answers `request`
/// with it, unless the application has begun to shut down by then.
fn answer_later(
    request: *mut sys::spdk_jsonrpc_request,
    name: String,
    reply: BoxedReply,
) -> std::result::Result<(), RpcError> {
    let request_addr = request as usize;
    thread::spawn_local(async move {
        let outcome = match futures_catch(reply).await {
            Ok(r) => r,
            Err(msg) => Err(RpcError::internal(format!(
                "internal error in {name}: {msg}"
            ))),
        };
        // Once shutdown began, SPDK finishes (frees) its RPC server and the
        // request with it: the answer has nowhere to go.
        if !crate::app::serving() {
            return;
        }
        // SAFETY: SPDK keeps the request alive until it is answered, once,
        // here, while the app serves (checked just above, on the app
        // thread, where the server is also finished).
        unsafe { respond(request_addr as *mut sys::spdk_jsonrpc_request, outcome) };
    })
    .map_err(|e| RpcError::internal(e.to_string()))
}

/// Polls `fut`, turning a panic inside it into an error message.
async fn futures_catch(fut: BoxedReply) -> std::result::Result<RpcResult, String> {
    struct CatchUnwind(BoxedReply);
    impl Future for CatchUnwind {
        type Output = std::result::Result<RpcResult, String>;
        fn poll(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            match crate::panics::catch(|| self.0.as_mut().poll(cx)) {
                Ok(std::task::Poll::Ready(r)) => std::task::Poll::Ready(Ok(r)),
                Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
                Err(caught) => std::task::Poll::Ready(Err(caught.message())),
            }
        }
    }
    CatchUnwind(fut).await
}

extern "C" fn collect_json(ctx: *mut c_void, data: *const c_void, size: usize) -> i32 {
    crate::app::catch_panic(|| {
        // SAFETY: `ctx` is the Vec params_to_value passed; SPDK gives `size` bytes at `data`.
        unsafe {
            let buf = &mut *(ctx as *mut Vec<u8>);
            buf.extend_from_slice(std::slice::from_raw_parts(data as *const u8, size));
        }
    })
    .map_or(-1, |()| 0)
}

/// SPDK's parsed params as a serde_json value (None when absent).
///
/// # Safety
/// `params` must be null or point at a valid parsed spdk_json_val array.
unsafe fn params_to_value(
    params: *const sys::spdk_json_val,
) -> std::result::Result<Option<Value>, String> {
    if params.is_null() {
        return Ok(None);
    }
    let mut buf: Vec<u8> = Vec::new();
    // SAFETY: collect_json appends to `buf`, which outlives the writer.
    let w = unsafe {
        sys::spdk_json_write_begin(
            Some(collect_json),
            &mut buf as *mut Vec<u8> as *mut c_void,
            0,
        )
    };
    if w.is_null() {
        return Err("out of memory reading params".into());
    }
    // SAFETY: `w` is a live writer and `params` valid per the contract.
    let rc = unsafe { sys::spdk_json_write_val(w, params) };
    // SAFETY: ends the writer created above.
    let end = unsafe { sys::spdk_json_write_end(w) };
    if rc != 0 || end != 0 {
        return Err("params could not be read".into());
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| format!("params are not valid JSON: {e}"))
}

/// Hands `params` to SPDK's dispatch for `method`, as if the request carried them.
///
/// # Safety
/// `request` must be a live, unanswered request; `method` a valid C string.
unsafe fn dispatch_with(
    request: *mut sys::spdk_jsonrpc_request,
    method: *const c_char,
    params: &Value,
) -> std::result::Result<(), String> {
    let mut text = serde_json::to_vec(params).map_err(|e| e.to_string())?;
    text.push(0);
    let mut end: *mut c_void = std::ptr::null_mut();
    let len = text.len() - 1;
    // SAFETY: counting pass over our own buffer; no values are written.
    let count = unsafe {
        sys::spdk_json_parse(
            text.as_mut_ptr() as *mut c_void,
            len,
            std::ptr::null_mut(),
            0,
            &mut end,
            0,
        )
    };
    if count <= 0 {
        return Err("rewritten params did not parse".into());
    }
    // SAFETY: spdk_json_val is plain data; zeroed entries are overwritten by the parse.
    let mut values: Vec<sys::spdk_json_val> = vec![unsafe { std::mem::zeroed() }; count as usize];
    // SAFETY: `values` has room for `count` entries; strings are decoded in
    // place inside `text`, which outlives the dispatch below.
    let parsed = unsafe {
        sys::spdk_json_parse(
            text.as_mut_ptr() as *mut c_void,
            len,
            values.as_mut_ptr(),
            values.len(),
            &mut end,
            sys::SPDK_JSON_PARSE_FLAG_DECODE_IN_PLACE,
        )
    };
    if parsed != count {
        return Err("rewritten params did not parse".into());
    }
    // SAFETY: SPDK's C handlers decode params before returning, so `values`
    // and `text` may go once this call returns.
    unsafe { sys::spdk_rpc_dispatch(request, method, values.as_ptr()) };
    Ok(())
}

/// Answers a request with a result or an error.
///
/// # Safety
/// `request` must be a live request not answered yet; it is answered here.
unsafe fn respond(request: *mut sys::spdk_jsonrpc_request, outcome: RpcResult) {
    match outcome {
        Ok(value) => {
            let text = serde_json::to_vec(&value).unwrap_or_else(|_| b"null".to_vec());
            // SAFETY: per the contract; the writer is ended by end_result.
            unsafe {
                let w = sys::spdk_jsonrpc_begin_result(request);
                if w.is_null() {
                    return;
                }
                sys::spdk_json_write_val_raw(w, text.as_ptr() as *const c_void, text.len());
                sys::spdk_jsonrpc_end_result(request, w);
            }
        }
        Err(e) => {
            let msg = CString::new(e.message.replace('\0', " ")).unwrap_or_default();
            // SAFETY: per the contract; SPDK copies the message.
            unsafe { sys::spdk_jsonrpc_send_error_response(request, e.code, msg.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_spdk_or_rust_already_use_are_refused() {
        let err =
            register_method("bdev_get_bdevs", RpcStates::Runtime, |_| Ok(Value::Null)).unwrap_err();
        assert!(err.to_string().contains("SPDK has a method"), "{err}");
        register_method("rpc_unit_test_once", RpcStates::Both, |_| Ok(Value::Null)).unwrap();
        let err = register_method("rpc_unit_test_once", RpcStates::Both, |_| Ok(Value::Null))
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert!(register_method("bad\0name", RpcStates::Both, |_| Ok(Value::Null)).is_err());
    }

    #[test]
    fn library_errors_map_to_json_rpc_errors() {
        let e: RpcError = Error::InvalidArgument("bad nqn".into()).into();
        assert_eq!(
            (e.code, e.message.as_str()),
            (sys::SPDK_JSONRPC_ERROR_INVALID_PARAMS, "bad nqn")
        );
        let e: RpcError = Error::spdk("adding ns", -libc::ENODEV).into();
        assert_eq!(e.code, -libc::ENODEV);
        assert!(e.message.contains("adding ns"));
    }
}
