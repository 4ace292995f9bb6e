//! `cjson.decode` on arbitrary bytes, through the real code path: the module's `cjson` (the very same source
//! file, `src/engine/libs/cjson.rs`) opened into a patched Lua 5.1 state and called with `lua_pcall`.
//!
//! The first input byte picks one of four `cjson` instances (default configuration; strict numbers; raised
//! depth limits + invalid numbers encoded + no kept buffer; converted sparse arrays + precision 3 + invalid
//! numbers as null); the rest is the JSON text. Whatever decodes is encoded again; whatever encodes must decode
//! again and re-encode to the same length (key order may change, content may not). Any Lua error escaping the
//! checks, a panic or a sanitizer report is a finding.

#![no_main]

use std::ffi::{c_int, CStr};

use libfuzzer_sys::fuzz_target;
use mlua_sys as ffi;
use mlua_sys::lua_State;
use rfunc_lua_sys as _;

#[path = "../../src/engine/libs/cjson.rs"]
#[allow(dead_code)]
mod cjson;

const SETUP: &CStr = c"
c = {cjson, cjson.new(), cjson.new(), cjson.new()}
c[2].decode_invalid_numbers(false)
c[3].decode_max_depth(100000) c[3].encode_max_depth(100000) c[3].encode_invalid_numbers(true) c[3].encode_keep_buffer(false)
c[4].encode_sparse_array(true, 1, 0) c[4].encode_number_precision(3) c[4].encode_invalid_numbers('null')
function run(i, s)
  local j = c[i]
  local ok, v = pcall(j.decode, s)
  if not ok then
    if type(v) ~= 'string' then error('non-string error') end
    return
  end
  local ok2, e = pcall(j.encode, v)
  if not ok2 then return end
  local ok3, v2 = pcall(j.decode, e)
  if not ok3 then error('re-decode failed: ' .. tostring(v2) .. ' for ' .. e) end
  local e2 = j.encode(v2)
  if #e2 ~= #e then error('unstable encode: ' .. e .. ' / ' .. e2) end
end
";

unsafe extern "C-unwind" fn open_tramp(l: *mut lua_State) -> c_int {
    cjson::open(l);
    0
}

struct State(*mut lua_State);

// The fuzzer runs the target on one thread.
unsafe impl Send for State {}
unsafe impl Sync for State {}

fn state() -> *mut lua_State {
    static L: std::sync::OnceLock<State> = std::sync::OnceLock::new();
    L.get_or_init(|| unsafe {
        let l = ffi::luaL_newstate();
        assert!(!l.is_null());
        ffi::luaL_openlibs(l);
        ffi::lua_pushcfunction(l, open_tramp);
        assert_eq!(ffi::lua_pcall(l, 0, 0, 0), 0, "open cjson");
        if ffi::luaL_loadstring(l, SETUP.as_ptr()) != 0 || ffi::lua_pcall(l, 0, 0, 0) != 0 {
            panic!(
                "setup: {}",
                CStr::from_ptr(ffi::lua_tolstring(l, -1, std::ptr::null_mut())).to_string_lossy()
            );
        }
        State(l)
    })
    .0
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let l = state();
    unsafe {
        ffi::lua_settop(l, 0);
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"run".as_ptr());
        ffi::lua_pushnumber(l, f64::from(sel % 4 + 1));
        ffi::lua_pushlstring(l, json.as_ptr().cast(), json.len());
        if ffi::lua_pcall(l, 2, 0, 0) != 0 {
            let mut len = 0;
            let p = ffi::lua_tolstring(l, -1, &mut len);
            let msg = if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
            };
            panic!("{}", String::from_utf8_lossy(&msg));
        }
    }
});
