//! Test-only hooks, compiled with the `test-hooks` feature: prove that a Rust panic anywhere on rfunc's paths
//! becomes an error reply and a log line, never an unwind into the server.

use mlua_sys::lua_State;

use crate::rm::Ctx;
use crate::runtime;

unsafe extern "C-unwind" fn panicking_lua_function(l: *mut lua_State) -> std::ffi::c_int {
    crate::engine::lua::guarded_for_tests(l, || panic!("test-hooks: panic inside a Lua C function"))
}

/// `RFUNC.TESTPANIC command|lua`.
pub fn testpanic(ctx: Ctx, argv: &[&[u8]]) {
    match argv[1] {
        b"command" => panic!("test-hooks: panic in a command handler"),
        b"lua" => {
            let r = runtime::with(|rt| {
                rt.engine
                    .call_c_function_for_tests(ctx, panicking_lua_function)
            });
            match r {
                Ok(msg) => crate::rm::reply_error_bytes(ctx, &msg),
                Err(e) => crate::rm::reply_error(ctx, e),
            }
        }
        _ => crate::rm::reply_error(ctx, "ERR unknown panic place"),
    }
}
