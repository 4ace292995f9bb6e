//! Not written yet: opens nothing.

use mlua_sys::lua_State;

pub unsafe fn open(_l: *mut lua_State) {}
