//! A cdylib linked like librfunc.so (mlua over rfunc-lua-sys), used by
//! scripts/check-symbols.sh to show that no Lua symbol is exported or left
//! undefined (so nothing binds to valkey-server's own Lua).

use mlua::Lua;

/// The only exported symbol: runs a chunk in a fresh state.
#[no_mangle]
pub extern "C" fn symcheck_run() -> i32 {
    rfunc_lua_sys::set_hash_mode(rfunc_lua_sys::HashMode::Murmur3);
    let lua = Lua::new();
    lua.load("return 40 + 2").eval::<i32>().unwrap_or(-1)
}
