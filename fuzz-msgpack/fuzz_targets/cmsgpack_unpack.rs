//! Fuzzes rfunc's `cmsgpack` (src/engine/libs/cmsgpack.rs, included as is) through the Lua API, without a
//! server: each input is decoded by `cmsgpack.unpack` in a fresh state of the patched Lua 5.1.5; when that
//! succeeds the values are packed again and decoded once more, and `unpack_limit` walks the input from an offset
//! taken from its first byte. Lua errors are fine; a crash, a sanitizer report or a panic (libfuzzer-sys aborts
//! on panics, so the library's own panic guard cannot hide one) is a finding.

#![no_main]

use std::ffi::{c_int, c_void};
use std::ptr;

use libfuzzer_sys::fuzz_target;
use mlua_sys as ffi;
use mlua_sys::lua_State;
// Links the patched Lua.
use rfunc_lua_sys as _;

#[path = "../../src/engine/libs/cmsgpack.rs"]
#[allow(dead_code)]
mod cmsgpack;

unsafe extern "C-unwind" fn open(l: *mut lua_State) -> c_int {
    cmsgpack::open(l);
    0
}

/// Calls `cmsgpack.<name>` with the values on top of the stack (`nargs`), leaving its results (or the error).
unsafe fn call(l: *mut lua_State, name: &std::ffi::CStr, nargs: c_int) -> bool {
    ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"cmsgpack".as_ptr());
    ffi::lua_getfield(l, -1, name.as_ptr());
    ffi::lua_remove(l, -2);
    ffi::lua_insert(l, -(nargs + 1));
    ffi::lua_pcall(l, nargs, ffi::LUA_MULTRET, 0) == 0
}

fuzz_target!(|data: &[u8]| {
    unsafe {
        let l = ffi::luaL_newstate();
        assert!(!l.is_null());
        assert_eq!(ffi::lua_cpcall(l, open, ptr::null_mut::<c_void>()), 0);

        // unpack(data), then pack(results...) and unpack that again.
        ffi::lua_settop(l, 0);
        ffi::lua_pushlstring(l, data.as_ptr().cast(), data.len());
        if call(l, c"unpack", 1) {
            let n = ffi::lua_gettop(l);
            if n > 0 && call(l, c"pack", n) {
                assert_eq!(ffi::lua_type(l, -1), ffi::LUA_TSTRING);
                let _ = call(l, c"unpack", 1);
            }
        }

        // unpack_limit(data, limit, offset) with both taken from the input.
        if let [a, b, ..] = data {
            ffi::lua_settop(l, 0);
            ffi::lua_pushlstring(l, data.as_ptr().cast(), data.len());
            ffi::lua_pushinteger(l, (*a % 8) as ffi::lua_Integer - 1);
            ffi::lua_pushinteger(
                l,
                *b as ffi::lua_Integer % (data.len() as ffi::lua_Integer + 2),
            );
            let _ = call(l, c"unpack_limit", 3);
        }
        ffi::lua_close(l);
    }
});
