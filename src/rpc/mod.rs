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
//!
//! - this module: registering methods, replacing C ones, the filter, the
//!   counts;
//! - `dispatch`: the hooks SPDK calls for each request and response, and a
//!   handler's reply on its way back;
//! - `c_json`: params between SPDK's parsed JSON and serde_json, answers;
//! - [`params`]: typed params and their errors, in the words every
//!   method uses; [`ParamError`]: why params did not fit, as data;
//!   `value_de`: the reader that reports it.

mod c_json;
mod dispatch;
mod param_error;
pub mod params;
mod value_de;

pub(crate) use c_json::{write_json_value, write_named_json_value};
pub use param_error::ParamError;
use params::typed_result;
pub use params::{params_error, type_name, typed_params, typed_params_with};

use std::collections::HashMap;
use std::ffi::CString;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sys;
use crate::thread::{AppThread, Thread};

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

/// Calls by method and result, for the metrics.
fn tally() -> &'static crate::sync::RpcTally {
    static TALLY: std::sync::OnceLock<crate::sync::RpcTally> = std::sync::OnceLock::new();
    TALLY.get_or_init(Default::default)
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
/// RPC thread (see [`crate::thread::spawn_local`]): for methods that wait on SPDK.
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
        sys::spdk_rpc_register_method(
            c_name.as_ptr(),
            Some(dispatch::method_trampoline),
            states.mask(),
        )
    };
    dispatch::install_hooks();
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
    dispatch::install_hooks();
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
    dispatch::install_hooks();
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
