//! The libraries the server bundles with its Lua and exposes to function code: cjson, cmsgpack, bit, struct.
//! Each is written against the raw Lua C API (so error messages name the functions the way the server's C
//! libraries do) and opened into the globals before the sandbox locks them.

mod bit;
mod cjson;
mod cmsgpack;
mod structlib;

use mlua_sys::lua_State;

/// Opens every bundled library as a global table, in the order of the server's `luaLoadLibraries` (cjson,
/// struct, cmsgpack, bit): the order the keys enter the globals decides their `pairs()` order. Each `open`
/// inserts its global the way the server's `luaopen_*` does (`lua_setglobal` or `luaL_register`), so the
/// insertion goes through the allow-list `__newindex` the state has at that point.
///
/// # Safety
/// `l` must be a valid Lua state, called from a protected context.
pub unsafe fn open_all(l: *mut lua_State) {
    cjson::open(l);
    structlib::open(l);
    cmsgpack::open(l);
    bit::open(l);
}
