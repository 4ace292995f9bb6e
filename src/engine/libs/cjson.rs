//! `cjson`: the server's bundled lua-cjson 2.1.0 (Redis fork), re-implemented against the raw Lua C API.
//!
//! Same table (members inserted in the same order, so `pairs(cjson)` walks them identically), same per-table
//! configuration (one configuration object shared by the functions of a `cjson` table as their upvalue;
//! `cjson.new()` makes an independent one), same output bytes, same error texts. Errors are raised with
//! `luaL_error` / `luaL_argerror` so Lua adds the position prefix and names the function exactly as for the C
//! library (`bad argument #1 to 'encode' (...)`, `'?'` under `pcall(cjson.encode)`).
//!
//! Error discipline: a Lua error is a `longjmp`. Every C function runs its body inside `catch_unwind`; no
//! frame of a body owns anything with a destructor: the encode buffer and the decode scratch buffer are
//! [`LuaBuf`]s kept in the configuration object (as the C library keeps its `strbuf`s), allocated with the
//! state's own allocator so they count toward its memory (and limit). A body returns a [`Fail`] (plain data)
//! and the error is raised only after `catch_unwind` has returned. The Lua API calls made inside a body are
//! raw (no metamethods, no Lua code runs) and can only raise a memory error (the embedder's memory limit);
//! such an error unwinds frames that own nothing, and the buffers stay with the configuration object.
//! A buffer that cannot grow raises Lua's own memory error (see [`Fail::NoMemory`]).
//!
//! This file depends only on `mlua_sys`, `libc` and `std`, so the fuzz crate (`fuzz/`) can include it as is.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use mlua_sys as ffi;
use mlua_sys::lua_State;

const MODNAME: &CStr = c"cjson";
const VERSION: &CStr = c"2.1.0";

/// Every number written by the encoder fits (`FPCONV_G_FMT_BUFSIZE`).
const FMT_BUFSIZE: usize = 32;

/// Decode scratch buffers above this capacity are released after each decode (the C library frees its
/// temporary buffer every time; small ones are kept to save allocations).
const KEEP_TMP: usize = 64 * 1024;

/// Encode buffers above this capacity are released after each encode even while `encode_keep_buffer` is on
/// (the C library keeps any size; a big buffer pinned until FLUSH only costs memory).
const KEEP_BUF: usize = 1024 * 1024;

// ----------------------------------------------------------------------------------------------------------
// Buffers in Lua's memory.

/// A byte buffer allocated with the Lua state's allocator: it counts toward the state's memory (and any limit
/// the embedder puts on it), as the C library's `strbuf`s count toward the process's. Freed explicitly with
/// the same state (no destructor: it may be alive when a Lua error unwinds).
struct LuaBuf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

impl LuaBuf {
    const fn new() -> LuaBuf {
        LuaBuf {
            ptr: ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: `len` bytes from `ptr` are initialised.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Room for `extra` more bytes.
    unsafe fn reserve(&mut self, l: *mut lua_State, extra: usize) -> Result<(), Fail> {
        let need = self
            .len
            .checked_add(extra)
            .ok_or(Fail::NoMemory(usize::MAX))?;
        if need <= self.cap {
            return Ok(());
        }
        let new_cap = need.max(self.cap.saturating_mul(2)).max(64);
        let mut ud: *mut c_void = ptr::null_mut();
        let alloc = ffi::lua_getallocf(l, &mut ud);
        let p = alloc(ud, self.ptr as *mut c_void, self.cap, new_cap) as *mut u8;
        if p.is_null() {
            return Err(Fail::NoMemory(new_cap));
        }
        self.ptr = p;
        self.cap = new_cap;
        Ok(())
    }

    unsafe fn put(&mut self, l: *mut lua_State, bytes: &[u8]) -> Result<(), Fail> {
        self.reserve(l, bytes.len())?;
        ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.len), bytes.len());
        self.len += bytes.len();
        Ok(())
    }

    unsafe fn free(&mut self, l: *mut lua_State) {
        if !self.ptr.is_null() {
            let mut ud: *mut c_void = ptr::null_mut();
            let alloc = ffi::lua_getallocf(l, &mut ud);
            alloc(ud, self.ptr as *mut c_void, self.cap, 0);
        }
        *self = LuaBuf::new();
    }
}

// ----------------------------------------------------------------------------------------------------------
// Configuration.

#[derive(Clone, Copy)]
struct Settings {
    encode_sparse_convert: c_int,
    encode_sparse_ratio: c_int,
    encode_sparse_safe: c_int,
    encode_max_depth: c_int,
    /// 0 off, 1 on, 2 encode as `null`.
    encode_invalid_numbers: c_int,
    encode_number_precision: c_int,
    encode_keep_buffer: c_int,
    decode_invalid_numbers: c_int,
    decode_max_depth: c_int,
}

const DEFAULTS: Settings = Settings {
    encode_sparse_convert: 0,
    encode_sparse_ratio: 2,
    encode_sparse_safe: 10,
    encode_max_depth: 1000,
    encode_invalid_numbers: 0,
    encode_number_precision: 14,
    encode_keep_buffer: 1,
    decode_invalid_numbers: 1,
    decode_max_depth: 1000,
};

/// The configuration object of one `cjson` table. The Lua userdata holds a pointer to it (freed by `__gc`).
struct Config {
    s: Settings,
    /// The encode buffer (kept between calls while `encode_keep_buffer` is on, like the C `strbuf`).
    buf: LuaBuf,
    /// Decode scratch space for string tokens.
    tmp: LuaBuf,
}

/// The configuration of the running closure (upvalue 1: userdata holding a `*mut Config`).
unsafe fn fetch_config<'a>(l: *mut lua_State) -> Result<&'a mut Config, Fail> {
    let ud = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *mut *mut Config;
    if ud.is_null() || (*ud).is_null() {
        return Err(Fail::Bug);
    }
    Ok(&mut **ud)
}

unsafe extern "C-unwind" fn destroy_config(l: *mut lua_State) -> c_int {
    let ud = ffi::lua_touserdata(l, 1) as *mut *mut Config;
    if !ud.is_null() && !(*ud).is_null() {
        let cfg = *ud;
        *ud = ptr::null_mut();
        (*cfg).buf.free(l);
        (*cfg).tmp.free(l);
        // Dropping plain Rust data cannot panic; guard anyway so nothing unwinds into Lua.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(cfg))));
    }
    0
}

/// Pushes a new configuration userdata.
unsafe fn create_config(l: *mut lua_State) {
    let ud = ffi::lua_newuserdata(l, std::mem::size_of::<*mut Config>()) as *mut *mut Config;
    *ud = ptr::null_mut();
    ffi::lua_createtable(l, 0, 0);
    ffi::lua_pushcfunction(l, destroy_config);
    ffi::lua_setfield(l, -2, c"__gc".as_ptr());
    ffi::lua_setmetatable(l, -2);
    // No Lua call between the allocation and storing the pointer.
    *ud = Box::into_raw(Box::new(Config {
        s: DEFAULTS,
        buf: LuaBuf::new(),
        tmp: LuaBuf::new(),
    }));
}

// ----------------------------------------------------------------------------------------------------------
// Errors: what to raise once the body has returned.

#[derive(Clone, Copy)]
enum Options {
    /// `off`, `on`
    Bool,
    /// `off`, `on`, `null`
    InvalidNumbers,
}

impl Options {
    fn names(self) -> &'static [&'static CStr] {
        match self {
            Options::Bool => &[c"off", c"on"],
            Options::InvalidNumbers => &[c"off", c"on", c"null"],
        }
    }
}

/// A Lua error to raise. Plain data only: it is alive while `longjmp` leaves the frame.
#[derive(Clone, Copy)]
enum Fail {
    /// `luaL_argerror(l, narg, msg)`
    Arg(c_int, &'static CStr),
    /// `bad argument #1 to '...' (expected integer between MIN and MAX)`
    IntRange(c_int, c_int),
    /// The argument is not a number: `luaL_checkinteger` raises its own message.
    CheckInteger(c_int),
    /// The argument is not a string / not one of the options: `luaL_checkoption` raises its own message.
    CheckOption(c_int, Options),
    /// Not a string: `luaL_checklstring` raises its own message.
    CheckString(c_int),
    /// `Cannot serialise <type>: <reason>`
    Serialise(c_int, &'static CStr),
    /// `Cannot serialise, excessive nesting (<depth>)`
    Nesting(c_int),
    /// `Expected <exp> but found <found> at character <n>`
    Parse(&'static CStr, &'static CStr, c_int),
    /// `Found too many nested data structures (<depth>) at character <n>`
    TooDeep(c_int, c_int),
    Utf16,
    /// A buffer could not grow to this many bytes.
    NoMemory(usize),
    Bug,
    Panic,
}

unsafe fn raise(l: *mut lua_State, f: Fail) -> ! {
    match f {
        Fail::Arg(narg, msg) => {
            ffi::luaL_argerror(l, narg, msg.as_ptr());
        }
        Fail::IntRange(min, max) => {
            let msg =
                ffi::lua_pushfstring(l, c"expected integer between %d and %d".as_ptr(), min, max);
            ffi::luaL_argerror(l, 1, msg);
        }
        Fail::CheckInteger(idx) => {
            ffi::luaL_checkinteger(l, idx);
        }
        Fail::CheckOption(idx, opts) => {
            let mut list: [*const c_char; 4] = [ptr::null(); 4];
            for (slot, name) in list.iter_mut().zip(opts.names()) {
                *slot = name.as_ptr();
            }
            ffi::luaL_checkoption(l, idx, ptr::null(), list.as_ptr());
        }
        Fail::CheckString(idx) => {
            ffi::luaL_checklstring(l, idx, ptr::null_mut());
        }
        Fail::Serialise(ty, reason) => {
            ffi::luaL_error(
                l,
                c"Cannot serialise %s: %s".as_ptr(),
                ffi::lua_typename(l, ty),
                reason.as_ptr(),
            );
        }
        Fail::Nesting(depth) => {
            ffi::luaL_error(
                l,
                c"Cannot serialise, excessive nesting (%d)".as_ptr(),
                depth,
            );
        }
        Fail::Parse(exp, found, at) => {
            ffi::luaL_error(
                l,
                c"Expected %s but found %s at character %d".as_ptr(),
                exp.as_ptr(),
                found.as_ptr(),
                at,
            );
        }
        Fail::TooDeep(depth, at) => {
            ffi::luaL_error(
                l,
                c"Found too many nested data structures (%d) at character %d".as_ptr(),
                depth,
                at,
            );
        }
        Fail::Utf16 => {
            ffi::luaL_error(l, c"JSON parser does not support UTF-16 or UTF-32".as_ptr());
        }
        Fail::NoMemory(size) => {
            // Ask Lua for the same block: when the allocator refuses it again, Lua raises its own memory
            // error (LUA_ERRMEM), exactly as if the buffer had been a Lua object.
            ffi::lua_newuserdata(l, size);
            ffi::lua_pop(l, 1);
            ffi::lua_pushstring_(l, c"not enough memory".as_ptr());
        }
        Fail::Bug => {
            ffi::luaL_error(l, c"BUG: Unable to fetch CJSON configuration".as_ptr());
        }
        Fail::Panic => {
            ffi::luaL_error(l, c"rfunc internal error (panic) in cjson".as_ptr());
        }
    }
    // Only reached for NoMemory (and if one of the checks above unexpectedly passed).
    ffi::lua_error(l)
}

/// Runs a C function body; a returned [`Fail`] or a panic is raised as a Lua error after the body's frame
/// (and everything it owned) is gone.
unsafe fn guard(l: *mut lua_State, body: impl FnOnce() -> Result<c_int, Fail>) -> c_int {
    let fail = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(n)) => return n,
        Ok(Err(f)) => f,
        Err(payload) => {
            drop(payload);
            Fail::Panic
        }
    };
    raise(l, fail)
}

/// The C conversion `(int)d` of an integral double ≥ 1 as x86-64 compilers emit it (`cvttsd2si`): values
/// out of `int` range become `INT_MIN`.
fn c_double_to_int(d: f64) -> c_int {
    if d > -2147483649.0 && d < 2147483648.0 {
        d as c_int
    } else {
        c_int::MIN
    }
}

/// A `size_t` passed where `%d` reads an `int` (x86-64: the low 32 bits).
fn c_int_of_size(n: usize) -> c_int {
    n as u32 as c_int
}

// ----------------------------------------------------------------------------------------------------------
// Configuration functions.

/// Checks the argument count (`found too many arguments`) and pads with nil.
unsafe fn arg_init(l: *mut lua_State, args: c_int) -> Result<&'static mut Config, Fail> {
    if ffi::lua_gettop(l) > args {
        return Err(Fail::Arg(args + 1, c"found too many arguments"));
    }
    while ffi::lua_gettop(l) < args {
        ffi::lua_pushnil(l);
    }
    fetch_config(l)
}

unsafe fn integer_option(
    l: *mut lua_State,
    idx: c_int,
    setting: &mut c_int,
    min: c_int,
    max: c_int,
) -> Result<(), Fail> {
    if ffi::lua_isnil(l, idx) == 0 {
        if ffi::lua_isnumber(l, idx) == 0 {
            return Err(Fail::CheckInteger(idx));
        }
        // `int value = luaL_checkinteger(...)`: the lua_Integer is truncated to int.
        let value = ffi::lua_tointeger_(l, idx) as c_int;
        if !(min <= value && value <= max) {
            return Err(Fail::IntRange(min, max));
        }
        *setting = value;
    }
    ffi::lua_pushinteger(l, *setting as ffi::lua_Integer);
    Ok(())
}

unsafe fn enum_option(
    l: *mut lua_State,
    idx: c_int,
    setting: &mut c_int,
    opts: Options,
) -> Result<(), Fail> {
    // Every option of the library is a "boolean" one (bool_true = 1).
    if ffi::lua_isnil(l, idx) == 0 {
        if ffi::lua_isboolean(l, idx) != 0 {
            *setting = ffi::lua_toboolean(l, idx);
        } else {
            // luaL_checkoption: luaL_checkstring (numbers are converted in place), then strcmp.
            let p = ffi::lua_tolstring(l, idx, ptr::null_mut());
            if p.is_null() {
                return Err(Fail::CheckOption(idx, opts));
            }
            let name = CStr::from_ptr(p);
            match opts.names().iter().position(|o| *o == name) {
                Some(i) => *setting = i as c_int,
                None => return Err(Fail::CheckOption(idx, opts)),
            }
        }
    }
    if *setting == 0 || *setting == 1 {
        ffi::lua_pushboolean(l, *setting);
    } else {
        let names = opts.names();
        let name = names.get(*setting as usize).copied().unwrap_or(c"");
        ffi::lua_pushstring_(l, name.as_ptr());
    }
    Ok(())
}

unsafe extern "C-unwind" fn cfg_encode_sparse_array(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 3)?;
        enum_option(l, 1, &mut cfg.s.encode_sparse_convert, Options::Bool)?;
        integer_option(l, 2, &mut cfg.s.encode_sparse_ratio, 0, c_int::MAX)?;
        integer_option(l, 3, &mut cfg.s.encode_sparse_safe, 0, c_int::MAX)?;
        Ok(3)
    })
}

unsafe extern "C-unwind" fn cfg_encode_max_depth(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        integer_option(l, 1, &mut cfg.s.encode_max_depth, 1, c_int::MAX)?;
        Ok(1)
    })
}

unsafe extern "C-unwind" fn cfg_decode_max_depth(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        integer_option(l, 1, &mut cfg.s.decode_max_depth, 1, c_int::MAX)?;
        Ok(1)
    })
}

unsafe extern "C-unwind" fn cfg_encode_number_precision(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        integer_option(l, 1, &mut cfg.s.encode_number_precision, 1, 14)?;
        Ok(1)
    })
}

unsafe extern "C-unwind" fn cfg_encode_keep_buffer(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        let old = cfg.s.encode_keep_buffer;
        let r = enum_option(l, 1, &mut cfg.s.encode_keep_buffer, Options::Bool);
        if old != cfg.s.encode_keep_buffer {
            // Init / free the buffer when the setting changes.
            cfg.buf.free(l);
        }
        r?;
        Ok(1)
    })
}

unsafe extern "C-unwind" fn cfg_encode_invalid_numbers(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        enum_option(
            l,
            1,
            &mut cfg.s.encode_invalid_numbers,
            Options::InvalidNumbers,
        )?;
        Ok(1)
    })
}

unsafe extern "C-unwind" fn cfg_decode_invalid_numbers(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = arg_init(l, 1)?;
        enum_option(l, 1, &mut cfg.s.decode_invalid_numbers, Options::Bool)?;
        Ok(1)
    })
}

// ----------------------------------------------------------------------------------------------------------
// Encoding.

/// The escape sequence of a byte inside a JSON string, if it needs one.
fn escape(b: u8, out: &mut [u8; 6]) -> Option<usize> {
    let two = |c: u8, out: &mut [u8; 6]| {
        out[0] = b'\\';
        out[1] = c;
        Some(2)
    };
    match b {
        b'"' => two(b'"', out),
        b'\\' => two(b'\\', out),
        b'/' => two(b'/', out),
        0x08 => two(b'b', out),
        b'\t' => two(b't', out),
        b'\n' => two(b'n', out),
        0x0c => two(b'f', out),
        b'\r' => two(b'r', out),
        0..=0x1f | 0x7f => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            *out = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ];
            Some(6)
        }
        _ => None,
    }
}

/// Appends `s` as a JSON string.
unsafe fn append_escaped(l: *mut lua_State, buf: &mut LuaBuf, s: &[u8]) -> Result<(), Fail> {
    buf.reserve(l, s.len().checked_add(2).ok_or(Fail::NoMemory(usize::MAX))?)?;
    buf.put(l, b"\"")?;
    let mut esc = [0u8; 6];
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if let Some(n) = escape(b, &mut esc) {
            buf.put(l, &s[start..i])?;
            buf.put(l, &esc[..n])?;
            start = i + 1;
        }
    }
    buf.put(l, &s[start..])?;
    buf.put(l, b"\"")
}

/// `printf("%.<precision>g", num)`, as the C library formats numbers (the server's locale uses '.').
fn format_number(num: f64, precision: c_int, out: &mut [u8; FMT_BUFSIZE]) -> usize {
    // SAFETY: the buffer is FMT_BUFSIZE bytes; snprintf writes at most that many, NUL included.
    let n = unsafe {
        libc::snprintf(
            out.as_mut_ptr() as *mut c_char,
            FMT_BUFSIZE,
            c"%.*g".as_ptr(),
            precision,
            num,
        )
    };
    (n.max(0) as usize).min(FMT_BUFSIZE - 1)
}

struct Encoder<'a> {
    l: *mut lua_State,
    s: Settings,
    buf: &'a mut LuaBuf,
}

impl Encoder<'_> {
    unsafe fn put(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        self.buf.put(self.l, bytes)
    }

    unsafe fn append_string(&mut self, idx: c_int) -> Result<(), Fail> {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(self.l, idx, &mut len);
        let s: &[u8] = if p.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(p as *const u8, len)
        };
        append_escaped(self.l, self.buf, s)
    }

    unsafe fn append_number(&mut self, idx: c_int) -> Result<(), Fail> {
        let num = ffi::lua_tonumber(self.l, idx);
        match self.s.encode_invalid_numbers {
            0 => {
                if num.is_infinite() || num.is_nan() {
                    return Err(Fail::Serialise(
                        ffi::lua_type(self.l, idx),
                        c"must not be NaN or Inf",
                    ));
                }
            }
            1 => {
                // Some platforms print "-nan".
                if num.is_nan() {
                    return self.put(b"nan");
                }
            }
            _ => {
                if num.is_infinite() || num.is_nan() {
                    return self.put(b"null");
                }
            }
        }
        let mut out = [0u8; FMT_BUFSIZE];
        let n = format_number(num, self.s.encode_number_precision, &mut out);
        self.put(&out[..n])
    }

    /// The array length of the table on top of the stack, or -1 for an object (lua_array_length).
    unsafe fn array_length(&mut self) -> Result<c_int, Fail> {
        let l = self.l;
        let mut max: c_int = 0;
        let mut items: c_int = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, -2) != 0 {
            if ffi::lua_type(l, -2) == ffi::LUA_TNUMBER {
                let k = ffi::lua_tonumber(l, -2);
                if k != 0.0 && k.floor() == k && k >= 1.0 {
                    if k > max as f64 {
                        max = c_double_to_int(k);
                    }
                    items = items.wrapping_add(1);
                    ffi::lua_pop(l, 1);
                    continue;
                }
            }
            // Not an array (non integer key).
            ffi::lua_pop(l, 2);
            return Ok(-1);
        }
        let s = &self.s;
        if s.encode_sparse_ratio > 0
            && max > items.wrapping_mul(s.encode_sparse_ratio)
            && max > s.encode_sparse_safe
        {
            if s.encode_sparse_convert == 0 {
                return Err(Fail::Serialise(
                    ffi::LUA_TTABLE,
                    c"excessively sparse array",
                ));
            }
            return Ok(-1);
        }
        Ok(max)
    }

    unsafe fn append_array(&mut self, depth: c_int, len: c_int) -> Result<(), Fail> {
        self.put(b"[")?;
        for i in 1..=len as i64 {
            if i > 1 {
                self.put(b",")?;
            }
            ffi::lua_rawgeti_(self.l, -1, i as c_int);
            self.append_data(depth)?;
            ffi::lua_pop(self.l, 1);
        }
        self.put(b"]")
    }

    unsafe fn append_object(&mut self, depth: c_int) -> Result<(), Fail> {
        let l = self.l;
        self.put(b"{")?;
        ffi::lua_pushnil(l);
        let mut comma = false;
        while ffi::lua_next(l, -2) != 0 {
            if comma {
                self.put(b",")?;
            } else {
                comma = true;
            }
            match ffi::lua_type(l, -2) {
                ffi::LUA_TNUMBER => {
                    self.put(b"\"")?;
                    self.append_number(-2)?;
                    self.put(b"\":")?;
                }
                ffi::LUA_TSTRING => {
                    self.append_string(-2)?;
                    self.put(b":")?;
                }
                ty => return Err(Fail::Serialise(ty, c"table key must be a number or string")),
            }
            self.append_data(depth)?;
            ffi::lua_pop(l, 1);
        }
        self.put(b"}")
    }

    /// Serialises the value on top of the stack.
    unsafe fn append_data(&mut self, depth: c_int) -> Result<(), Fail> {
        let l = self.l;
        match ffi::lua_type(l, -1) {
            ffi::LUA_TSTRING => self.append_string(-1),
            ffi::LUA_TNUMBER => self.append_number(-1),
            ffi::LUA_TBOOLEAN => {
                if ffi::lua_toboolean(l, -1) != 0 {
                    self.put(b"true")
                } else {
                    self.put(b"false")
                }
            }
            ffi::LUA_TTABLE => {
                let depth = depth.saturating_add(1);
                // Room to traverse (key, value) plus an error message.
                if !(depth <= self.s.encode_max_depth && ffi::lua_checkstack(l, 3) != 0) {
                    return Err(Fail::Nesting(depth));
                }
                let len = self.array_length()?;
                if len > 0 {
                    self.append_array(depth, len)
                } else {
                    self.append_object(depth)
                }
            }
            ffi::LUA_TNIL => self.put(b"null"),
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, -1).is_null() => self.put(b"null"),
            ty => Err(Fail::Serialise(ty, c"type not supported")),
        }
    }
}

unsafe extern "C-unwind" fn json_encode(l: *mut lua_State) -> c_int {
    guard(l, || {
        let cfg = fetch_config(l)?;
        if ffi::lua_gettop(l) != 1 {
            return Err(Fail::Arg(1, c"expected 1 argument"));
        }
        cfg.buf.clear();
        let r = Encoder {
            l,
            s: cfg.s,
            buf: &mut cfg.buf,
        }
        .append_data(0);
        if r.is_ok() {
            let out = cfg.buf.as_slice();
            ffi::lua_pushlstring_(l, out.as_ptr() as *const c_char, out.len());
        }
        if cfg.s.encode_keep_buffer == 0 || cfg.buf.cap > KEEP_BUF {
            cfg.buf.free(l);
        }
        r.map(|()| 1)
    })
}
// ----------------------------------------------------------------------------------------------------------
// Decoding.

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    /// The string is in the scratch buffer.
    Str,
    Number(f64),
    Boolean(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static CStr),
}

impl Tok {
    fn name(self) -> &'static CStr {
        match self {
            Tok::ObjBegin => c"T_OBJ_BEGIN",
            Tok::ObjEnd => c"T_OBJ_END",
            Tok::ArrBegin => c"T_ARR_BEGIN",
            Tok::ArrEnd => c"T_ARR_END",
            Tok::Str => c"T_STRING",
            Tok::Number(_) => c"T_NUMBER",
            Tok::Boolean(_) => c"T_BOOLEAN",
            Tok::Null => c"T_NULL",
            Tok::Colon => c"T_COLON",
            Tok::Comma => c"T_COMMA",
            Tok::End => c"T_END",
            Tok::Error(s) => s,
        }
    }
}

#[derive(Clone, Copy)]
struct Token {
    tok: Tok,
    /// 0-based byte offset (of the token, or of the error).
    index: usize,
}

fn hex_digit(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u32),
        b'a'..=b'f' => Some((b - b'a' + 10) as u32),
        b'A'..=b'F' => Some((b - b'A' + 10) as u32),
        _ => None,
    }
}

/// The UTF-8 encoding of a code point up to 0x10FFFF: bytes and length.
fn utf8(cp: u32) -> ([u8; 4], usize) {
    if cp <= 0x7f {
        ([cp as u8, 0, 0, 0], 1)
    } else if cp <= 0x7ff {
        (
            [((cp >> 6) | 0xc0) as u8, ((cp & 0x3f) | 0x80) as u8, 0, 0],
            2,
        )
    } else if cp <= 0xffff {
        (
            [
                ((cp >> 12) | 0xe0) as u8,
                (((cp >> 6) & 0x3f) | 0x80) as u8,
                ((cp & 0x3f) | 0x80) as u8,
                0,
            ],
            3,
        )
    } else {
        // At most 0x10FFFF (a decoded surrogate pair).
        (
            [
                ((cp >> 18) | 0xf0) as u8,
                (((cp >> 12) & 0x3f) | 0x80) as u8,
                (((cp >> 6) & 0x3f) | 0x80) as u8,
                ((cp & 0x3f) | 0x80) as u8,
            ],
            4,
        )
    }
}

struct Parser<'a> {
    l: *mut lua_State,
    /// The input: the bytes of a Lua string, which Lua terminates with a NUL at `data[data.len()]`.
    data: &'a [u8],
    pos: usize,
    tmp: &'a mut LuaBuf,
    depth: c_int,
    max_depth: c_int,
    invalid_numbers: bool,
}

impl Parser<'_> {
    /// The byte at `i`; the input behaves as NUL-terminated (the C parser stops at the first NUL).
    fn at(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn error(&self, msg: &'static CStr) -> Token {
        Token {
            tok: Tok::Error(msg),
            index: self.pos,
        }
    }

    fn decode_hex4(&self, at: usize) -> Option<u32> {
        let mut v = 0;
        for i in 0..4 {
            v = (v << 4) | hex_digit(self.at(at + i))?;
        }
        Some(v)
    }

    /// At `\u`: appends the UTF-8 of the escape (or surrogate pair) and moves past it. `Ok(false)`: invalid.
    unsafe fn unicode_escape(&mut self) -> Result<bool, Fail> {
        let Some(mut cp) = self.decode_hex4(self.pos + 2) else {
            return Ok(false);
        };
        let mut len = 6;
        if cp & 0xf800 == 0xd800 {
            // A low surrogate first, or a high one not followed by `\u` + low surrogate.
            if cp & 0x400 != 0 {
                return Ok(false);
            }
            if self.at(self.pos + 6) != b'\\' || self.at(self.pos + 7) != b'u' {
                return Ok(false);
            }
            let Some(low) = self.decode_hex4(self.pos + 8) else {
                return Ok(false);
            };
            if low & 0xfc00 != 0xdc00 {
                return Ok(false);
            }
            cp = (((cp & 0x3ff) << 10) | (low & 0x3ff)) + 0x10000;
            len = 12;
        }
        let (bytes, n) = utf8(cp);
        self.tmp.put(self.l, &bytes[..n])?;
        self.pos += len;
        Ok(true)
    }

    unsafe fn string_token(&mut self) -> Result<Token, Fail> {
        let index = self.pos;
        self.pos += 1; // opening quote
        self.tmp.clear();
        loop {
            let ch = self.at(self.pos);
            if ch == b'"' {
                break;
            }
            if ch == 0 {
                return Ok(self.error(c"unexpected end of string"));
            }
            if ch == b'\\' {
                let out = match self.at(self.pos + 1) {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'u' => {
                        if self.unicode_escape()? {
                            continue;
                        }
                        return Ok(self.error(c"invalid unicode escape code"));
                    }
                    _ => return Ok(self.error(c"invalid escape code")),
                };
                self.tmp.put(self.l, &[out])?;
                self.pos += 2;
                continue;
            }
            // Copy the run of plain bytes.
            let start = self.pos;
            let mut end = start + 1;
            while end < self.data.len() && !matches!(self.data[end], b'"' | b'\\' | 0) {
                end += 1;
            }
            self.tmp.put(self.l, &self.data[start..end])?;
            self.pos = end;
        }
        self.pos += 1; // closing quote
        Ok(Token {
            tok: Tok::Str,
            index,
        })
    }

    /// Forms strict JSON rejects but strtod accepts: `+`, hex, leading zeros, inf, nan.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.pos;
        if self.at(p) == b'+' {
            return true;
        }
        if self.at(p) == b'-' {
            p += 1;
        }
        let c = self.at(p);
        if c == b'0' {
            let c2 = self.at(p + 1);
            return (c2 | 0x20) == b'x' || c2.is_ascii_digit();
        }
        // `*p <= '9'` on a signed char: bytes >= 0x80 count as "ordinary" too.
        if c <= b'9' || c >= 0x80 {
            return false;
        }
        let prefix =
            |word: &[u8; 3]| (0..3).all(|i| self.at(p + i).to_ascii_lowercase() == word[i]);
        prefix(b"inf") || prefix(b"nan")
    }

    fn number_token(&mut self) -> Token {
        let index = self.pos;
        // SAFETY: `data` is a Lua string: NUL-terminated, so strtod stops inside it (at the NUL at the latest).
        let (value, used) = unsafe {
            let start = self.data.as_ptr().add(self.pos) as *const c_char;
            let mut end: *mut c_char = ptr::null_mut();
            let v = libc::strtod(start, &mut end);
            (v, (end as usize).saturating_sub(start as usize))
        };
        if used == 0 {
            return self.error(c"invalid number");
        }
        self.pos += used;
        Token {
            tok: Tok::Number(value),
            index,
        }
    }

    unsafe fn next_token(&mut self) -> Result<Token, Fail> {
        while matches!(self.at(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let index = self.pos;
        let single = |p: &mut Self, tok: Tok| {
            p.pos += 1;
            Token { tok, index }
        };
        let rest = &self.data[self.pos.min(self.data.len())..];
        let t = match self.at(self.pos) {
            0 => Token {
                tok: Tok::End,
                index,
            },
            b'{' => single(self, Tok::ObjBegin),
            b'}' => single(self, Tok::ObjEnd),
            b'[' => single(self, Tok::ArrBegin),
            b']' => single(self, Tok::ArrEnd),
            b',' => single(self, Tok::Comma),
            b':' => single(self, Tok::Colon),
            b'"' => self.string_token()?,
            b'-' | b'0'..=b'9' => {
                if !self.invalid_numbers && self.is_invalid_number() {
                    self.error(c"invalid number")
                } else {
                    self.number_token()
                }
            }
            b'f' | b'i' | b'I' | b'n' | b'N' | b't' | b'+' => {
                if rest.starts_with(b"true") {
                    self.pos += 4;
                    Token {
                        tok: Tok::Boolean(true),
                        index,
                    }
                } else if rest.starts_with(b"false") {
                    self.pos += 5;
                    Token {
                        tok: Tok::Boolean(false),
                        index,
                    }
                } else if rest.starts_with(b"null") {
                    self.pos += 4;
                    Token {
                        tok: Tok::Null,
                        index,
                    }
                } else if self.invalid_numbers && self.is_invalid_number() {
                    self.number_token()
                } else {
                    self.error(c"invalid token")
                }
            }
            _ => self.error(c"invalid token"),
        };
        Ok(t)
    }

    fn parse_error(exp: &'static CStr, t: Token) -> Fail {
        Fail::Parse(exp, t.tok.name(), c_int_of_size(t.index.wrapping_add(1)))
    }

    unsafe fn descend(&mut self, slots: c_int) -> Result<(), Fail> {
        self.depth = self.depth.saturating_add(1);
        if self.depth <= self.max_depth && ffi::lua_checkstack(self.l, slots) != 0 {
            return Ok(());
        }
        Err(Fail::TooDeep(self.depth, c_int_of_size(self.pos)))
    }

    unsafe fn object(&mut self) -> Result<(), Fail> {
        let l = self.l;
        // .., table, key, value
        self.descend(3)?;
        ffi::lua_createtable(l, 0, 0);
        let mut t = self.next_token()?;
        if t.tok == Tok::ObjEnd {
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if t.tok != Tok::Str {
                return Err(Self::parse_error(c"object key string", t));
            }
            let key = self.tmp.as_slice();
            ffi::lua_pushlstring_(l, key.as_ptr() as *const c_char, key.len());
            t = self.next_token()?;
            if t.tok != Tok::Colon {
                return Err(Self::parse_error(c"colon", t));
            }
            t = self.next_token()?;
            self.value(t)?;
            ffi::lua_rawset(l, -3);
            t = self.next_token()?;
            if t.tok == Tok::ObjEnd {
                self.depth -= 1;
                return Ok(());
            }
            if t.tok != Tok::Comma {
                return Err(Self::parse_error(c"comma or object end", t));
            }
            t = self.next_token()?;
        }
    }

    unsafe fn array(&mut self) -> Result<(), Fail> {
        let l = self.l;
        // .., table, value
        self.descend(2)?;
        ffi::lua_createtable(l, 0, 0);
        let mut t = self.next_token()?;
        if t.tok == Tok::ArrEnd {
            self.depth -= 1;
            return Ok(());
        }
        let mut i: c_int = 1;
        loop {
            self.value(t)?;
            ffi::lua_rawseti_(l, -2, i);
            i = i.wrapping_add(1);
            t = self.next_token()?;
            if t.tok == Tok::ArrEnd {
                self.depth -= 1;
                return Ok(());
            }
            if t.tok != Tok::Comma {
                return Err(Self::parse_error(c"comma or array end", t));
            }
            t = self.next_token()?;
        }
    }

    /// Pushes the one value of the whole input.
    unsafe fn document(&mut self) -> Result<(), Fail> {
        let t = self.next_token()?;
        self.value(t)?;
        // Nothing may follow the value.
        let t = self.next_token()?;
        if t.tok != Tok::End {
            return Err(Self::parse_error(c"the end", t));
        }
        Ok(())
    }

    /// Pushes the value starting with token `t`.
    unsafe fn value(&mut self, t: Token) -> Result<(), Fail> {
        let l = self.l;
        match t.tok {
            Tok::Str => {
                let v = self.tmp.as_slice();
                ffi::lua_pushlstring_(l, v.as_ptr() as *const c_char, v.len())
            }
            Tok::Number(n) => ffi::lua_pushnumber(l, n),
            Tok::Boolean(b) => ffi::lua_pushboolean(l, b as c_int),
            Tok::ObjBegin => return self.object(),
            Tok::ArrBegin => return self.array(),
            // JSON null is a NULL light userdata (t[k] = nil would delete k).
            Tok::Null => ffi::lua_pushlightuserdata(l, ptr::null_mut::<c_void>()),
            _ => return Err(Self::parse_error(c"value", t)),
        }
        Ok(())
    }
}

unsafe extern "C-unwind" fn json_decode(l: *mut lua_State) -> c_int {
    guard(l, || {
        if ffi::lua_gettop(l) != 1 {
            return Err(Fail::Arg(1, c"expected 1 argument"));
        }
        let cfg = fetch_config(l)?;
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, 1, &mut len);
        if p.is_null() {
            return Err(Fail::CheckString(1));
        }
        let data = std::slice::from_raw_parts(p as *const u8, len);
        // UTF-16 / UTF-32 input has a NUL in one of the first two bytes (RFC 4627, 3).
        if len >= 2 && (data[0] == 0 || data[1] == 0) {
            return Err(Fail::Utf16);
        }
        let mut parser = Parser {
            l,
            data,
            pos: 0,
            tmp: &mut cfg.tmp,
            depth: 0,
            max_depth: cfg.s.decode_max_depth,
            invalid_numbers: cfg.s.decode_invalid_numbers != 0,
        };
        let r = parser.document();
        if cfg.tmp.cap > KEEP_TMP {
            cfg.tmp.free(l);
        }
        r.map(|()| 1)
    })
}

// ----------------------------------------------------------------------------------------------------------
// The module table.

/// The functions of a cjson table, in the C library's registration order (it decides `pairs` order).
const FUNCTIONS: [(&CStr, ffi::lua_CFunction); 10] = [
    (c"encode", json_encode),
    (c"decode", json_decode),
    (c"encode_sparse_array", cfg_encode_sparse_array),
    (c"encode_max_depth", cfg_encode_max_depth),
    (c"decode_max_depth", cfg_decode_max_depth),
    (c"encode_number_precision", cfg_encode_number_precision),
    (c"encode_keep_buffer", cfg_encode_keep_buffer),
    (c"encode_invalid_numbers", cfg_encode_invalid_numbers),
    (c"decode_invalid_numbers", cfg_decode_invalid_numbers),
    (c"new", cjson_new),
];

/// Pushes a new cjson table with its own default configuration.
unsafe fn push_module(l: *mut lua_State) {
    ffi::lua_createtable(l, 0, 0);
    create_config(l);
    // luaL_setfuncs (5.2 compatibility code in the C library) checks room for the upvalue.
    ffi::luaL_checkstack_(l, 1, c"too many upvalues".as_ptr());
    for (name, f) in FUNCTIONS {
        ffi::lua_pushvalue(l, -1);
        ffi::lua_pushcclosure(l, f, 1);
        ffi::lua_setfield(l, -3, name.as_ptr());
    }
    ffi::lua_pop(l, 1);
    ffi::lua_pushlightuserdata(l, ptr::null_mut());
    ffi::lua_setfield(l, -2, c"null".as_ptr());
    ffi::lua_pushstring_(l, MODNAME.as_ptr());
    ffi::lua_setfield(l, -2, c"_NAME".as_ptr());
    ffi::lua_pushstring_(l, VERSION.as_ptr());
    ffi::lua_setfield(l, -2, c"_VERSION".as_ptr());
}

/// `cjson.new()`: arguments are ignored.
unsafe extern "C-unwind" fn cjson_new(l: *mut lua_State) -> c_int {
    push_module(l);
    1
}

/// Opens `cjson` as a global table.
///
/// # Safety
/// `l` must be a valid Lua state, called from a protected context.
pub unsafe fn open(l: *mut lua_State) {
    push_module(l);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, MODNAME.as_ptr());
}
