//! While an rfunc function runs, `FUNCTION KILL` means it: the built-in's KILL knows nothing of rfunc's
//! functions and would answer NOTBUSY, so it is rewritten to RFUNC.KILL. `SCRIPT KILL` gets the built-in's answer
//! for a running function (BUSY ... only FUNCTION KILL).
//!
//! Other clients' commands reach the server during a run only through the run's yields, so the filter is
//! registered at a run's first hook tick (before its first yield) and removed when the run ends: the rest of
//! the time the server runs every command without calling into rfunc.

use std::cell::Cell;
use std::ffi::c_int;

use valkey_module::raw;

use crate::engine::lua;
use crate::rm::{self as api, Ctx};

unsafe fn arg_is(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: c_int, word: &[u8]) -> bool {
    let s = api::api!(RedisModule_CommandFilterArgGet)(fctx, pos);
    !s.is_null() && api::string_bytes(s).eq_ignore_ascii_case(word)
}

unsafe fn replace_command(fctx: *mut raw::RedisModuleCommandFilterCtx, name: &[u8]) {
    let s = api::create_string(std::ptr::null_mut(), name);
    api::api!(RedisModule_CommandFilterArgReplace)(fctx, 0, s);
    api::api!(RedisModule_CommandFilterArgDelete)(fctx, 1);
}

unsafe extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    if lua::running().is_none() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        if api::api!(RedisModule_CommandFilterArgsCount)(fctx) != 2 || !arg_is(fctx, 1, b"kill") {
            return;
        }
        if arg_is(fctx, 0, b"function") {
            replace_command(fctx, b"RFUNC.KILL");
        } else if arg_is(fctx, 0, b"script") {
            replace_command(fctx, b"RFUNC.SCRIPT-KILL");
        }
    });
}

/// `RFUNC.SCRIPT-KILL` (internal): what SCRIPT KILL answers while a function runs.
pub fn script_kill(ctx: Ctx, _argv: &[&[u8]]) {
    match lua::running() {
        Some(run) if run.wrote => api::reply_error(
            ctx,
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ),
        Some(_) => api::reply_error(
            ctx,
            "BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
        ),
        None => api::reply_error(ctx, "NOTBUSY No scripts in execution right now."),
    }
}

thread_local! {
    static REGISTERED: Cell<*mut raw::RedisModuleCommandFilter> = const { Cell::new(std::ptr::null_mut()) };
}

/// Registers the filter if it is not (called from a running function's hook, before it yields).
pub fn arm(ctx: Ctx) {
    REGISTERED.with(|r| {
        if r.get().is_null() {
            r.set(unsafe {
                api::api!(RedisModule_RegisterCommandFilter)(
                    ctx,
                    Some(filter),
                    raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
                )
            });
        }
    });
}

/// Removes the filter if a run registered it.
pub fn disarm(ctx: Ctx) {
    REGISTERED.with(|r| {
        let f = r.replace(std::ptr::null_mut());
        if !f.is_null() {
            unsafe { api::api!(RedisModule_UnregisterCommandFilter)(ctx, f) };
        }
    });
}
