//! What SPDK's RPC server calls for each request (the dispatch hook,
//! `vendor/patches/0005`, and the trampoline of Rust methods) and each
//! response (`vendor/patches/0024`), and a handler's reply on its way
//! back. Every step runs on the RPC thread under the crate's panic policy.

use std::cell::RefCell;
use std::ffi::CStr;
use std::future::Future;
use std::os::raw::c_char;
use std::pin::Pin;

use serde_json::Value;

use super::c_json::{dispatch_with, params_to_value, respond};
use super::{
    filter_slot, registry, replacements, tally, BoxedReply, Filter, Filtered, Handler, RpcError,
    RpcResult, UNKNOWN_METHOD,
};
use crate::sys;
use crate::thread;

thread_local! {
    /// The Rust method the hook saw last on this thread; SPDK calls
    /// method_trampoline (which has no context argument) right after.
    static CURRENT_METHOD: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs both hooks (again: idempotent).
pub(super) fn install_hooks() {
    // SAFETY: both hooks match SPDK's hook types and live forever.
    unsafe {
        sys::spdk_rpc_set_dispatch_hook(Some(dispatch_hook));
        sys::spdk_jsonrpc_set_response_hook(Some(response_hook));
    }
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

/// Every request, before SPDK dispatches it: true when it is answered
/// here (or will be), false to let SPDK dispatch it as it came.
extern "C" fn dispatch_hook(
    request: *mut sys::spdk_jsonrpc_request,
    method: *const c_char,
    params: *const sys::spdk_json_val,
) -> bool {
    match crate::panics::catch(|| route(request, method, params)) {
        Ok(handled) => handled,
        Err(caught) => {
            let msg = format!("internal error in the RPC filter: {}", caught.message());
            // SAFETY: the request has not been answered (the panic came first).
            unsafe { respond(request, Err(RpcError::internal(msg))) };
            true
        }
    }
}

/// The steps of a request: counted; a Rust method's goes to the
/// trampoline; one for a C method goes through the filter, then to its
/// Rust replacement if it has one, else back to SPDK (rewritten or not).
fn route(
    request: *mut sys::spdk_jsonrpc_request,
    method: *const c_char,
    params: *const sys::spdk_json_val,
) -> bool {
    // SAFETY: SPDK passes a NUL-terminated method name valid for this call.
    let name = unsafe { CStr::from_ptr(method) }
        .to_string_lossy()
        .into_owned();
    count(request, method, &name);
    if crate::sync::lock(registry()).contains_key(&name) {
        CURRENT_METHOD.with(|m| *m.borrow_mut() = Some(name));
        return false;
    }
    let filter = crate::sync::lock(filter_slot()).clone();
    let replacement = replacement(method, &name);
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
    let params = match filtered(
        request,
        method,
        &name,
        filter.as_deref(),
        value,
        replacement.is_some(),
    ) {
        Some(params) => params,
        None => return true,
    };
    let Some(handler) = replacement else {
        return false;
    };
    if let Err(e) = answer_later(request, name, handler(params)) {
        // SAFETY: the reply was never started, so the request is unanswered.
        unsafe { respond(request, Err(e)) };
    }
    true
}

/// Counts the request under its method, or under [`UNKNOWN_METHOD`].
fn count(request: *mut sys::spdk_jsonrpc_request, method: *const c_char, name: &str) {
    // SAFETY: `method` is a valid C string; SPDK's method list is read on
    // this thread, the one that changes it.
    let known = unsafe { sys::spdk_rpc_is_method_allowed(method, sys::spdk_rpc_get_state()) }
        != -libc::ENOENT;
    tally().dispatched(request as usize, if known { name } else { UNKNOWN_METHOD });
}

/// The Rust replacement of the C method `name`, if it has one and SPDK
/// allows the method in its current state (else SPDK answers, as it does).
fn replacement(method: *const c_char, name: &str) -> Option<Handler> {
    crate::sync::lock(replacements())
        .get(name)
        .cloned()
        // SAFETY: `method` is a valid C string; SPDK's method list is read
        // on this (the RPC) thread, where it is changed.
        .filter(|_| unsafe {
            sys::spdk_rpc_is_method_allowed(method, sys::spdk_rpc_get_state()) == 0
        })
}

/// The filter's decision on a C method's params: the params to go on with,
/// or `None` when the request is answered here (refused, or rewritten and
/// dispatched to SPDK's C handler).
fn filtered(
    request: *mut sys::spdk_jsonrpc_request,
    method: *const c_char,
    name: &str,
    filter: Option<&Filter>,
    value: Option<Value>,
    replaced: bool,
) -> Option<Option<Value>> {
    match filter.map_or(Filtered::Unchanged, |f| f(name, value.as_ref())) {
        Filtered::Unchanged => Some(value),
        Filtered::Rewritten(new) if replaced => Some(Some(new)),
        Filtered::Rewritten(new) => {
            // SAFETY: `request` is live and unanswered; the method name is
            // a valid C string.
            if let Err(e) = unsafe { dispatch_with(request, method, &new) } {
                // SAFETY: dispatch failed before SPDK saw the request.
                unsafe { respond(request, Err(RpcError::internal(e))) };
            }
            None
        }
        Filtered::Refused(e) => {
            // SAFETY: as above.
            unsafe { respond(request, Err(e)) };
            None
        }
    }
}

pub(super) extern "C" fn method_trampoline(
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
