//! Lua 5.1.5 with the Valkey server's patches, linked in place of mlua's
//! vendored Lua (mlua-sys feature `external`).
//!
//! The C library is compiled by `build.rs` and linked statically into the
//! crate that depends on this one; mlua-sys's `extern "C"` declarations then
//! resolve to it. The crate must be *used* by the final artifact (call any
//! function below, or `use rfunc_lua_sys as _;`) or rustc drops it and the
//! Lua symbols are missing at link time.
//!
//! Deviations from stock Lua 5.1.5 (each marked `/* rfunc: */` in the C
//! sources; see README.md):
//! - string hash selectable per state: MurmurHash3 (Valkey 8.1+/9.x) or the
//!   stock hash over every byte (Valkey 7.x/8.0, Redis 7.x);
//! - read-only tables (`lua_enablereadonlytable` / `lua_isreadonlytable`);
//! - binary chunks are never loaded (parsed as text: a syntax error);
//! - fixes for CVE-2025-46817 (`unpack`), CVE-2025-49844 (parser) and
//!   CVE-2025-46819 (lexer).

#![no_std]

use core::ffi::c_int;

/// Opaque Lua state. Cast `mlua::ffi::lua_State` pointers to it (or pass
/// any `*mut` of your own type through `.cast()`).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct lua_State {
    _private: [u8; 0],
}

/// String hash used by `luaS_newlstr`. It decides the order of `pairs()` /
/// `next()` and therefore the bytes of anything that iterates a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashMode {
    /// Stock Lua 5.1 hash with step 1 (every byte hashed): Valkey 7.x and
    /// 8.0, Redis 7.x.
    StockAllBytes = 0,
    /// MurmurHash3 x86_32, seed = string length: Valkey 8.1+ and 9.x.
    Murmur3 = 1,
}

impl HashMode {
    fn from_raw(raw: c_int) -> HashMode {
        if raw == HashMode::StockAllBytes as c_int {
            HashMode::StockAllBytes
        } else {
            HashMode::Murmur3
        }
    }
}

/// The raw C API added to Lua (all `LUA_API`, defined in the static library).
pub mod ffi {
    use super::lua_State;
    use core::ffi::c_int;

    extern "C" {
        /// Marks the table at `objindex` read-only (`enabled != 0`) or writable.
        pub fn lua_enablereadonlytable(L: *mut lua_State, objindex: c_int, enabled: c_int);
        /// 1 if the table at `objindex` is read-only, else 0.
        pub fn lua_isreadonlytable(L: *mut lua_State, objindex: c_int) -> c_int;
        /// Sets the process-wide hash mode taken by states created afterwards
        /// (0 or 1; anything else is ignored).
        pub fn rfunc_lua_set_hash_mode(mode: c_int);
        /// The process-wide hash mode new states will get.
        pub fn rfunc_lua_get_hash_mode() -> c_int;
        /// The hash mode `L`'s state was created with.
        pub fn rfunc_lua_state_hash_mode(L: *mut lua_State) -> c_int;
    }
}

/// Sets the string hash that Lua states created *from now on* use. Each state
/// keeps the mode it was created with for its whole life, so changing it later
/// never affects existing states. Default: [`HashMode::Murmur3`].
///
/// Set it before creating a state (e.g. `mlua::Lua::new()`); when several
/// threads create states with different modes, serialize "set mode + create
/// state".
pub fn set_hash_mode(mode: HashMode) {
    // SAFETY: an atomic store of a valid mode.
    unsafe { ffi::rfunc_lua_set_hash_mode(mode as c_int) }
}

/// The hash mode states created from now on get.
pub fn hash_mode() -> HashMode {
    // SAFETY: an atomic load.
    HashMode::from_raw(unsafe { ffi::rfunc_lua_get_hash_mode() })
}

/// The hash mode the state of `l` was created with.
///
/// # Safety
/// `l` must be a valid Lua state (any thread of it).
#[allow(non_snake_case)]
pub unsafe fn state_hash_mode(L: *mut lua_State) -> HashMode {
    HashMode::from_raw(ffi::rfunc_lua_state_hash_mode(L))
}

/// Marks the table at stack index `idx` read-only or writable again.
///
/// A write to a read-only table raises `Attempt to modify a readonly table`
/// from assignments (with the usual `chunk:line:` prefix), `lua_settable` /
/// `lua_setfield`, `lua_rawset`, `lua_rawseti` and `lua_setmetatable`.
///
/// # Safety
/// `L` must be a valid Lua state and `idx` must hold a table (checked only
/// with `LUA_USE_APICHECK`, i.e. debug builds).
#[allow(non_snake_case)]
pub unsafe fn enable_readonly_table(L: *mut lua_State, idx: c_int, enabled: bool) {
    ffi::lua_enablereadonlytable(L, idx, c_int::from(enabled))
}

/// Whether the table at stack index `idx` is read-only.
///
/// # Safety
/// As [`enable_readonly_table`].
#[allow(non_snake_case)]
pub unsafe fn is_readonly_table(L: *mut lua_State, idx: c_int) -> bool {
    ffi::lua_isreadonlytable(L, idx) != 0
}
