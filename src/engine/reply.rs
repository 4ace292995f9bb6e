//! A function's return value → the client's reply, exactly as the built-in converts it (spec lua.md §4.1).

use std::ffi::c_int;

use mlua_sys as ffi;
use mlua_sys::lua_State;

use super::lua::to_bytes as lua_bytes;
use crate::rm::{self as api, Ctx};

/// `(long long)` of a double as x86-64 does it: truncation, and i64::MIN for NaN and out-of-range values.
pub fn c_double_to_i64(n: f64) -> i64 {
    if n.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

fn replace_crlf(b: &[u8]) -> Vec<u8> {
    b.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

/// Pushes `t[key]` (raw) and returns its type.
unsafe fn raw_field(l: *mut lua_State, t: c_int, key: &[u8]) -> c_int {
    super::lua::push_bytes(l, key);
    ffi::lua_rawget(l, t);
    ffi::lua_type(l, -1)
}

/// Writes the Lua value at `idx` as the reply. `resp3` is the run's `server.setresp` protocol (it decides how
/// booleans are sent).
pub unsafe fn lua_to_reply(l: *mut lua_State, ctx: Ctx, idx: c_int, resp3: bool, depth: u32) {
    let idx = ffi::lua_absindex(l, idx);
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => api::reply_bulk(ctx, lua_bytes(l, idx).unwrap_or_default()),
        ffi::LUA_TBOOLEAN => {
            let b = ffi::lua_toboolean(l, idx) != 0;
            if resp3 {
                api::reply_bool(ctx, b);
            } else if b {
                api::reply_int(ctx, 1);
            } else {
                api::reply_null(ctx);
            }
        }
        ffi::LUA_TNUMBER => api::reply_int(ctx, c_double_to_i64(ffi::lua_tonumber(l, idx))),
        ffi::LUA_TTABLE => table_to_reply(l, ctx, idx, resp3, depth),
        _ => api::reply_null(ctx),
    }
}

unsafe fn table_to_reply(l: *mut lua_State, ctx: Ctx, t: c_int, resp3: bool, depth: u32) {
    if ffi::lua_checkstack(l, 4) == 0 {
        api::reply_error(ctx, "ERR reached lua stack limit");
        return;
    }
    // The special fields, probed raw, in the built-in's order.
    if raw_field(l, t, b"err") == ffi::LUA_TSTRING {
        let msg = replace_crlf(lua_bytes(l, -1).unwrap_or_default());
        ffi::lua_pop(l, 1);
        api::reply_error_bytes(ctx, &msg);
        return;
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"ok") == ffi::LUA_TSTRING {
        let msg = replace_crlf(lua_bytes(l, -1).unwrap_or_default());
        ffi::lua_pop(l, 1);
        api::reply_simple_bytes(ctx, &msg);
        return;
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"double") == ffi::LUA_TNUMBER {
        let d = ffi::lua_tonumber(l, -1);
        ffi::lua_pop(l, 1);
        api::reply_double(ctx, d);
        return;
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"big_number") == ffi::LUA_TSTRING {
        let digits = replace_crlf(lua_bytes(l, -1).unwrap_or_default());
        ffi::lua_pop(l, 1);
        api::reply_big_number(ctx, &digits);
        return;
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"verbatim_string") == ffi::LUA_TTABLE {
        let v = ffi::lua_gettop(l);
        let fmt_type = raw_field(l, v, b"format");
        let str_type = raw_field(l, v, b"string");
        if fmt_type == ffi::LUA_TSTRING && str_type == ffi::LUA_TSTRING {
            let mut format = [b' '; 3];
            for (i, b) in lua_bytes(l, -2)
                .unwrap_or_default()
                .iter()
                .take(3)
                .enumerate()
            {
                format[i] = *b;
            }
            api::reply_verbatim(ctx, lua_bytes(l, -1).unwrap_or_default(), &format);
            ffi::lua_pop(l, 3);
            return;
        }
        ffi::lua_pop(l, 2);
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"map") == ffi::LUA_TTABLE {
        let m = ffi::lua_gettop(l);
        api::reply_map(ctx, -1);
        let mut n = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, m) != 0 {
            if ffi::lua_checkstack(l, 4) == 0 {
                ffi::lua_pop(l, 1);
                break;
            }
            lua_to_reply(l, ctx, -2, resp3, depth + 1);
            lua_to_reply(l, ctx, -1, resp3, depth + 1);
            ffi::lua_pop(l, 1);
            n += 1;
        }
        ffi::lua_pop(l, 1);
        api::set_map_len(ctx, n);
        return;
    }
    ffi::lua_pop(l, 1);
    if raw_field(l, t, b"set") == ffi::LUA_TTABLE {
        let s = ffi::lua_gettop(l);
        api::reply_set(ctx, -1);
        let mut n = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, s) != 0 {
            lua_to_reply(l, ctx, -2, resp3, depth + 1);
            ffi::lua_pop(l, 1);
            n += 1;
        }
        ffi::lua_pop(l, 1);
        api::set_set_len(ctx, n);
        return;
    }
    ffi::lua_pop(l, 1);
    api::reply_array(ctx, -1);
    let mut n = 0;
    loop {
        ffi::lua_rawgeti(l, t, (n + 1) as _);
        if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
            ffi::lua_pop(l, 1);
            break;
        }
        lua_to_reply(l, ctx, -1, resp3, depth + 1);
        ffi::lua_pop(l, 1);
        n += 1;
    }
    api::set_array_len(ctx, n);
}
