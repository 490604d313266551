//! Params between SPDK's parsed JSON (`spdk_json_val`) and serde_json, and
//! answers to requests.

use std::ffi::{c_void, CString};
use std::os::raw::c_char;

use serde_json::Value;

use super::RpcResult;
use crate::sys;

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
pub(super) unsafe fn params_to_value(
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
pub(super) unsafe fn dispatch_with(
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
pub(super) unsafe fn respond(request: *mut sys::spdk_jsonrpc_request, outcome: RpcResult) {
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

/// Writes `value` where SPDK's JSON writer `w` expects a value.
///
/// # Safety
/// `w` is a live SPDK JSON writer positioned where a value may go.
pub(crate) unsafe fn write_json_value(w: *mut sys::spdk_json_write_ctx, value: &Value) {
    let text = value.to_string();
    // SAFETY: per the function's contract; `text` is one complete JSON
    // value and outlives the call.
    unsafe { sys::spdk_json_write_val_raw(w, text.as_ptr() as *const c_void, text.len()) };
}

/// Writes the member `name: value` into the object SPDK's writer `w` is in.
///
/// # Safety
/// `w` is a live SPDK JSON writer positioned inside an object.
pub(crate) unsafe fn write_named_json_value(
    w: *mut sys::spdk_json_write_ctx,
    name: &str,
    value: &Value,
) {
    let Ok(c_name) = CString::new(name) else {
        return;
    };
    // SAFETY: per the function's contract; the name outlives the call.
    unsafe {
        sys::spdk_json_write_name(w, c_name.as_ptr());
        write_json_value(w, value);
    }
}
