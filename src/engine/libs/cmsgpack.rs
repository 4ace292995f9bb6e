//! `cmsgpack`: the lua-cmsgpack 0.4.0 library (Redis fork) the server bundles: `pack`, `unpack`, `unpack_one`,
//! `unpack_limit` and the `_NAME`, `_VERSION`, `_COPYRIGHT`, `_DESCRIPTION` fields.
//!
//! Encoding: integral numbers use the smallest integer format, other numbers float32 when exact, else float64;
//! strings fixstr/str8/str16/str32; a table is an array iff its keys are exactly 1..n, else a map in `lua_next`
//! order; tables nested 16 deep pack as nil (so self-references terminate); other types pack as nil.
//! Decoding: every format but bin/ext; uint64 wraps to a signed value; values are pushed on the Lua stack as
//! they are decoded, with the same stack checks as the C (so "stack overflow (...)" errors come at the same
//! depth).
//!
//! The Lua stack is used exactly as the C uses it. Errors are raised only when no Rust value is alive: the
//! recursive coders return a small error value and the C function raises it (through Lua's own auxiliary
//! functions, so the texts and positions are the server's). Panics are caught and turned into Lua errors.
//!
//! This file depends on nothing but `std` and `mlua_sys`, so the fuzz target in `fuzz-msgpack/` includes it
//! as is.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua_sys as ffi;
use mlua_sys::lua_State;

/// Tables nested this deep are packed as nil.
const MAX_NESTING: c_int = 16;

/// Why packing or unpacking stops. No variant has a destructor.
#[derive(Clone, Copy)]
enum Fail {
    /// Not enough bytes (`Missing bytes in input.`).
    Eof,
    /// A type byte the library does not decode (`Bad data format in input.`).
    BadFormat,
    /// `luaL_checkstack` failed: `stack overflow (<what>)`.
    Stack(&'static CStr),
    /// An error Lua raises from `lua_settable` itself (no position prefix): `table index is nil` / `NaN`.
    Raw(&'static CStr),
    /// The allocator refused `usize` bytes for the pack buffer (rfunc's memory cap): a Lua memory error.
    NoMemory(usize),
}

const TOO_MANY_VALUES: &CStr =
    c"too many return values at once; use unpack_one or unpack_limit instead.";

/// Raises the error for `fail`. Call only with no Rust value alive.
unsafe fn raise(l: *mut lua_State, fail: Fail) -> c_int {
    match fail {
        Fail::Eof => ffi::luaL_error(l, c"Missing bytes in input.".as_ptr()),
        Fail::BadFormat => ffi::luaL_error(l, c"Bad data format in input.".as_ptr()),
        Fail::Stack(what) => ffi::luaL_error(l, c"stack overflow (%s)".as_ptr(), what.as_ptr()),
        Fail::Raw(msg) => {
            ffi::lua_pushstring(l, msg.as_ptr());
            ffi::lua_error(l)
        }
        Fail::NoMemory(size) => {
            // Asking Lua for the same block raises its own "not enough memory" error (LUA_ERRMEM), the way any
            // other allocation over the cap fails.
            ffi::lua_newuserdata(l, size);
            ffi::lua_pop(l, 1);
            ffi::luaL_error(l, c"not enough memory".as_ptr())
        }
    }
}

/// Runs `body` with panics caught; on failure raises once the body's values are dropped.
unsafe fn run(l: *mut lua_State, body: impl FnOnce() -> Result<c_int, Fail>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(n)) => n,
        Ok(Err(fail)) => raise(l, fail),
        Err(payload) => {
            drop(payload);
            ffi::luaL_error(l, c"rfunc internal error (panic) in cmsgpack".as_ptr())
        }
    }
}

/// `luaL_checkstack` without raising.
unsafe fn check_stack(l: *mut lua_State, n: c_int, what: &'static CStr) -> Result<(), Fail> {
    if ffi::lua_checkstack(l, n) == 0 {
        return Err(Fail::Stack(what));
    }
    Ok(())
}

/// `(T)d == d` for a C cast to a signed integer type of `bits` bits as compiled for x86-64, where cvttsd2si gives
/// the "integer indefinite" (the type's minimum) for NaN and out-of-range values.
fn is_int_equivalent(d: f64, bits: u32) -> bool {
    if d.is_infinite() || d.is_nan() {
        return false;
    }
    let lim = (2.0f64).powi(bits as i32 - 1);
    let cast = if d >= -lim && d < lim {
        d.trunc()
    } else {
        -lim
    };
    cast == d
}

// ----------------------------------------------------------------------------------------------------------
// Encoding

/// The pack buffer (the C's `mp_buf`): memory from the state's allocator, so it counts against rfunc's memory cap,
/// owned by a userdata (an upvalue of `pack`) so that nothing leaks when a Lua error interrupts a pack.
#[repr(C)]
struct Buf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

/// Buffers up to this size are kept between calls.
const KEEP: usize = 64 * 1024;

impl Buf {
    /// Resizes the block to `cap` bytes (0 frees it).
    unsafe fn resize(&mut self, l: *mut lua_State, cap: usize) -> Result<(), Fail> {
        let mut ud = std::ptr::null_mut();
        let alloc = ffi::lua_getallocf(l, &mut ud);
        let p = alloc(ud, self.ptr.cast(), self.cap, cap) as *mut u8;
        if p.is_null() && cap != 0 {
            return Err(Fail::NoMemory(cap));
        }
        self.ptr = p;
        self.cap = cap;
        self.len = self.len.min(cap);
        Ok(())
    }

    /// Appends `s`, doubling the block when it is full (as `mp_buf_append`).
    unsafe fn extend(&mut self, l: *mut lua_State, s: &[u8]) -> Result<(), Fail> {
        if self.cap - self.len < s.len() {
            let need = self
                .len
                .checked_add(s.len())
                .ok_or(Fail::NoMemory(usize::MAX))?;
            let cap = need.checked_mul(2).ok_or(Fail::NoMemory(usize::MAX))?;
            self.resize(l, cap)?;
        }
        if !s.is_empty() {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.add(self.len), s.len());
            self.len += s.len();
        }
        Ok(())
    }

    unsafe fn push(&mut self, l: *mut lua_State, b: u8) -> Result<(), Fail> {
        self.extend(l, &[b])
    }

    unsafe fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// `__gc` of the buffer's userdata: frees the block when the state is closed.
unsafe extern "C-unwind" fn buf_gc(l: *mut lua_State) -> c_int {
    let b = ffi::lua_touserdata(l, 1) as *mut Buf;
    if !b.is_null() {
        let _ = (*b).resize(l, 0);
    }
    0
}

/// A small header or scalar encoding: a type byte and up to 8 big-endian bytes.
struct Head {
    b: [u8; 9],
    n: usize,
}

impl Head {
    fn new(t: u8, rest: &[u8]) -> Head {
        let mut b = [0u8; 9];
        b[0] = t;
        b[1..1 + rest.len()].copy_from_slice(rest);
        Head {
            b,
            n: 1 + rest.len(),
        }
    }
    fn as_slice(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

fn bytes_head(len: usize) -> Head {
    if len < 32 {
        Head::new(0xa0 | len as u8, &[])
    } else if len <= 0xff {
        Head::new(0xd9, &[len as u8])
    } else if len <= 0xffff {
        Head::new(0xda, &(len as u16).to_be_bytes())
    } else {
        Head::new(0xdb, &(len as u32).to_be_bytes())
    }
}

fn double_enc(d: f64) -> Head {
    let f = d as f32;
    if d == f as f64 {
        Head::new(0xca, &f.to_be_bytes())
    } else {
        Head::new(0xcb, &d.to_be_bytes())
    }
}

fn int_enc(n: i64) -> Head {
    if n >= 0 {
        if n <= 127 {
            Head::new(n as u8, &[])
        } else if n <= 0xff {
            Head::new(0xcc, &[n as u8])
        } else if n <= 0xffff {
            Head::new(0xcd, &(n as u16).to_be_bytes())
        } else if n <= 0xffff_ffff {
            Head::new(0xce, &(n as u32).to_be_bytes())
        } else {
            Head::new(0xcf, &(n as u64).to_be_bytes())
        }
    } else if n >= -32 {
        Head::new(n as i8 as u8, &[])
    } else if n >= -128 {
        Head::new(0xd0, &[n as u8])
    } else if n >= -32768 {
        Head::new(0xd1, &(n as u16).to_be_bytes())
    } else if n >= -2_147_483_648 {
        Head::new(0xd2, &(n as u32).to_be_bytes())
    } else {
        Head::new(0xd3, &(n as u64).to_be_bytes())
    }
}

/// Array (`fix`, 0xdc, 0xdd) or map (`fix`, 0xde, 0xdf) header.
fn container_head(n: u64, fix: u8, x16: u8, x32: u8) -> Head {
    if n <= 15 {
        Head::new(fix | n as u8, &[])
    } else if n <= 65535 {
        Head::new(x16, &(n as u16).to_be_bytes())
    } else {
        Head::new(x32, &(n as u32).to_be_bytes())
    }
}

/// Whether the table on top has exactly the keys 1..n (`table_is_an_array`).
unsafe fn table_is_an_array(l: *mut lua_State) -> Result<bool, Fail> {
    let top = ffi::lua_gettop(l);
    check_stack(l, 2, c"in function table_is_an_array")?;
    let mut count: c_int = 0;
    let mut max: c_int = 0;
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, -2) != 0 {
        ffi::lua_pop(l, 1);
        if ffi::lua_type(l, -1) != ffi::LUA_TNUMBER {
            ffi::lua_settop(l, top);
            return Ok(false);
        }
        let n = ffi::lua_tonumber(l, -1);
        if n <= 0.0 || !is_int_equivalent(n, 32) {
            ffi::lua_settop(l, top);
            return Ok(false);
        }
        if n > max as f64 {
            max = n as c_int;
        }
        count = count.wrapping_add(1);
    }
    ffi::lua_settop(l, top);
    Ok(max == count)
}

/// Encodes the value on top of the stack and pops it (`mp_encode_lua_type`).
unsafe fn encode(l: *mut lua_State, buf: &mut Buf, level: c_int) -> Result<(), Fail> {
    let mut t = ffi::lua_type(l, -1);
    if t == ffi::LUA_TTABLE && level == MAX_NESTING {
        t = ffi::LUA_TNIL;
    }
    match t {
        ffi::LUA_TSTRING => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, -1, &mut len);
            buf.extend(l, bytes_head(len).as_slice())?;
            buf.extend(l, std::slice::from_raw_parts(p as *const u8, len))?;
        }
        ffi::LUA_TBOOLEAN => buf.push(
            l,
            if ffi::lua_toboolean(l, -1) != 0 {
                0xc3
            } else {
                0xc2
            },
        )?,
        ffi::LUA_TNUMBER => {
            let n = ffi::lua_tonumber(l, -1);
            let h = if is_int_equivalent(n, 64) {
                int_enc(n as i64)
            } else {
                double_enc(n)
            };
            buf.extend(l, h.as_slice())?;
        }
        ffi::LUA_TTABLE => {
            if table_is_an_array(l)? {
                let len = ffi::lua_objlen(l, -1);
                buf.extend(l, container_head(len as u64, 0x90, 0xdc, 0xdd).as_slice())?;
                check_stack(l, 1, c"in function mp_encode_lua_table_as_array")?;
                for j in 1..=len {
                    ffi::lua_pushnumber(l, j as f64);
                    ffi::lua_gettable(l, -2);
                    encode(l, buf, level + 1)?;
                }
            } else {
                check_stack(l, 3, c"in function mp_encode_lua_table_as_map")?;
                let mut len: u64 = 0;
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, -2) != 0 {
                    ffi::lua_pop(l, 1);
                    len += 1;
                }
                buf.extend(l, container_head(len, 0x80, 0xde, 0xdf).as_slice())?;
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, -2) != 0 {
                    ffi::lua_pushvalue(l, -2);
                    encode(l, buf, level + 1)?; // key
                    encode(l, buf, level + 1)?; // value
                }
            }
        }
        _ => buf.push(l, 0xc0)?,
    }
    ffi::lua_pop(l, 1);
    Ok(())
}

/// `cmsgpack.pack(v1, ...)`: the concatenated encodings of the arguments.
unsafe extern "C-unwind" fn pack(l: *mut lua_State) -> c_int {
    let nargs = ffi::lua_gettop(l);
    if nargs == 0 {
        return ffi::luaL_argerror(l, 0, c"MessagePack pack needs input.".as_ptr());
    }
    if ffi::lua_checkstack(l, nargs) == 0 {
        return ffi::luaL_argerror(l, 0, c"Too many arguments for MessagePack pack.".as_ptr());
    }
    let buf = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *mut Buf;
    if buf.is_null() {
        return ffi::luaL_error(l, c"rfunc: cmsgpack buffer missing".as_ptr());
    }
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), Fail> {
        let buf = &mut *buf;
        // A previous call may have been interrupted by a Lua error.
        buf.len = 0;
        for i in 1..=nargs {
            check_stack(l, 1, c"in function mp_check")?;
            ffi::lua_pushvalue(l, i);
            encode(l, buf, 0)?;
            let b = buf.bytes();
            ffi::lua_pushlstring(l, b.as_ptr() as *const c_char, b.len());
            buf.len = 0;
        }
        if buf.cap > KEEP {
            buf.resize(l, 0)?;
        }
        Ok(())
    }));
    match r {
        Ok(Ok(())) => {}
        Ok(Err(fail)) => {
            let buf = &mut *buf;
            if buf.cap > KEEP {
                // Freeing cannot fail.
                let _ = buf.resize(l, 0);
            }
            ffi::lua_settop(l, nargs);
            raise(l, fail);
        }
        Err(payload) => {
            drop(payload);
            ffi::luaL_error(l, c"rfunc internal error (panic) in cmsgpack".as_ptr());
        }
    }
    ffi::lua_concat(l, nargs);
    1
}

// ----------------------------------------------------------------------------------------------------------
// Decoding

/// The unread input.
struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn need(&self, n: usize) -> Result<(), Fail> {
        if self.s.len() < n {
            return Err(Fail::Eof);
        }
        Ok(())
    }
    fn consume(&mut self, n: usize) {
        self.s = &self.s[n..];
    }
    /// `N` bytes starting at `at` (the caller checked they are there).
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.s[at..at + N]);
        b
    }
}

/// Pushes a string of `len` bytes that follow a header of `hdr` bytes.
unsafe fn decode_str(
    l: *mut lua_State,
    c: &mut Cursor,
    hdr: usize,
    len: usize,
) -> Result<(), Fail> {
    let total = hdr.checked_add(len).ok_or(Fail::Eof)?;
    c.need(total)?;
    let s = &c.s[hdr..total];
    ffi::lua_pushlstring(l, s.as_ptr() as *const c_char, s.len());
    c.consume(total);
    Ok(())
}

unsafe fn decode_array(l: *mut lua_State, c: &mut Cursor, len: usize) -> Result<(), Fail> {
    ffi::lua_createtable(l, 0, 0);
    check_stack(l, 1, c"in function mp_decode_to_lua_array")?;
    let mut index: c_int = 1;
    for _ in 0..len {
        ffi::lua_pushnumber(l, index as f64);
        index = index.wrapping_add(1);
        decode(l, c)?;
        ffi::lua_settable(l, -3);
    }
    Ok(())
}

unsafe fn decode_map(l: *mut lua_State, c: &mut Cursor, len: usize) -> Result<(), Fail> {
    ffi::lua_createtable(l, 0, 0);
    for _ in 0..len {
        decode(l, c)?; // key
        decode(l, c)?; // value
                       // lua_settable would raise these itself.
        match ffi::lua_type(l, -2) {
            ffi::LUA_TNIL => return Err(Fail::Raw(c"table index is nil")),
            ffi::LUA_TNUMBER if ffi::lua_tonumber(l, -2).is_nan() => {
                return Err(Fail::Raw(c"table index is NaN"))
            }
            _ => {}
        }
        ffi::lua_settable(l, -3);
    }
    Ok(())
}

/// Decodes one value and pushes it (`mp_decode_to_lua_type`).
unsafe fn decode(l: *mut lua_State, c: &mut Cursor) -> Result<(), Fail> {
    c.need(1)?;
    // One more slot for the value (the C's way of making room for any number of results).
    check_stack(l, 1, TOO_MANY_VALUES)?;
    let b0 = c.s[0];
    match b0 {
        0xcc => {
            c.need(2)?;
            ffi::lua_pushinteger(l, c.s[1] as ffi::lua_Integer);
            c.consume(2);
        }
        0xd0 => {
            c.need(2)?;
            ffi::lua_pushinteger(l, c.s[1] as i8 as ffi::lua_Integer);
            c.consume(2);
        }
        0xcd => {
            c.need(3)?;
            ffi::lua_pushinteger(l, u16::from_be_bytes(c.bytes(1)) as ffi::lua_Integer);
            c.consume(3);
        }
        0xd1 => {
            c.need(3)?;
            ffi::lua_pushinteger(l, i16::from_be_bytes(c.bytes(1)) as ffi::lua_Integer);
            c.consume(3);
        }
        0xce => {
            c.need(5)?;
            ffi::lua_pushinteger(l, u32::from_be_bytes(c.bytes(1)) as ffi::lua_Integer);
            c.consume(5);
        }
        0xd2 => {
            c.need(5)?;
            ffi::lua_pushinteger(l, i32::from_be_bytes(c.bytes(1)) as ffi::lua_Integer);
            c.consume(5);
        }
        0xcf => {
            c.need(9)?;
            // Pushed as a lua_Integer: values above 2^63-1 wrap to negative numbers.
            ffi::lua_pushinteger(l, u64::from_be_bytes(c.bytes(1)) as i64 as ffi::lua_Integer);
            c.consume(9);
        }
        0xd3 => {
            c.need(9)?;
            ffi::lua_pushnumber(l, i64::from_be_bytes(c.bytes(1)) as f64);
            c.consume(9);
        }
        0xc0 => {
            ffi::lua_pushnil(l);
            c.consume(1);
        }
        0xc3 => {
            ffi::lua_pushboolean(l, 1);
            c.consume(1);
        }
        0xc2 => {
            ffi::lua_pushboolean(l, 0);
            c.consume(1);
        }
        0xca => {
            c.need(5)?;
            ffi::lua_pushnumber(l, f32::from_be_bytes(c.bytes(1)) as f64);
            c.consume(5);
        }
        0xcb => {
            c.need(9)?;
            ffi::lua_pushnumber(l, f64::from_be_bytes(c.bytes(1)));
            c.consume(9);
        }
        0xd9 => {
            c.need(2)?;
            let len = c.s[1] as usize;
            decode_str(l, c, 2, len)?;
        }
        0xda => {
            c.need(3)?;
            let len = u16::from_be_bytes(c.bytes(1)) as usize;
            decode_str(l, c, 3, len)?;
        }
        0xdb => {
            c.need(5)?;
            let len = u32::from_be_bytes(c.bytes(1)) as usize;
            decode_str(l, c, 5, len)?;
        }
        0xdc => {
            c.need(3)?;
            let len = u16::from_be_bytes(c.bytes(1)) as usize;
            c.consume(3);
            decode_array(l, c, len)?;
        }
        0xdd => {
            c.need(5)?;
            let len = u32::from_be_bytes(c.bytes(1)) as usize;
            c.consume(5);
            decode_array(l, c, len)?;
        }
        0xde => {
            c.need(3)?;
            let len = u16::from_be_bytes(c.bytes(1)) as usize;
            c.consume(3);
            decode_map(l, c, len)?;
        }
        0xdf => {
            c.need(5)?;
            let len = u32::from_be_bytes(c.bytes(1)) as usize;
            c.consume(5);
            decode_map(l, c, len)?;
        }
        _ if b0 & 0x80 == 0 => {
            ffi::lua_pushinteger(l, b0 as ffi::lua_Integer);
            c.consume(1);
        }
        _ if b0 & 0xe0 == 0xe0 => {
            ffi::lua_pushinteger(l, b0 as i8 as ffi::lua_Integer);
            c.consume(1);
        }
        _ if b0 & 0xe0 == 0xa0 => decode_str(l, c, 1, (b0 & 0x1f) as usize)?,
        _ if b0 & 0xf0 == 0x90 => {
            c.consume(1);
            decode_array(l, c, (b0 & 0xf) as usize)?;
        }
        _ if b0 & 0xf0 == 0x80 => {
            c.consume(1);
            decode_map(l, c, (b0 & 0xf) as usize)?;
        }
        // 0xc1, bin 8/16/32, ext 8/16/32, fixext 1..16.
        _ => return Err(Fail::BadFormat),
    }
    Ok(())
}

/// `mp_unpack_full`: decodes up to `limit` values from byte `offset` of argument 1 (all of them when both are 0);
/// unless decoding everything, the next offset (-1 at the end) comes first.
unsafe fn unpack_full(
    l: *mut lua_State,
    limit: ffi::lua_Integer,
    offset: ffi::lua_Integer,
) -> c_int {
    let decode_all = limit == 0 && offset == 0;
    let mut len = 0usize;
    let s = ffi::luaL_checklstring(l, 1, &mut len);
    if offset < 0 || limit < 0 {
        // (sic) the C reports the input length as the limit.
        return ffi::luaL_error(
            l,
            c"Invalid request to unpack with offset of %d and limit of %d.".as_ptr(),
            offset as c_int,
            len as c_int,
        );
    } else if offset as u64 > len as u64 {
        return ffi::luaL_error(
            l,
            c"Start offset %d greater than input length %d.".as_ptr(),
            offset as c_int,
            len as c_int,
        );
    }
    let limit = if decode_all {
        c_int::MAX as ffi::lua_Integer
    } else {
        limit
    };
    let offset = offset as usize;
    run(l, || {
        let input = std::slice::from_raw_parts(s as *const u8, len);
        let mut c = Cursor {
            s: &input[offset..],
        };
        let mut cnt: c_int = 0;
        while !c.s.is_empty() && (cnt as ffi::lua_Integer) < limit {
            decode(l, &mut c)?;
            cnt += 1;
        }
        if !decode_all {
            let left = c.s.len();
            check_stack(l, 1, c"in function mp_unpack_full")?;
            let next = if left == 0 {
                -1
            } else {
                (len - left) as ffi::lua_Integer
            };
            ffi::lua_pushinteger(l, next);
            ffi::lua_insert(l, 2);
            cnt += 1;
        }
        Ok(cnt)
    })
}

unsafe extern "C-unwind" fn unpack(l: *mut lua_State) -> c_int {
    unpack_full(l, 0, 0)
}

unsafe extern "C-unwind" fn unpack_one(l: *mut lua_State) -> c_int {
    let offset = ffi::luaL_optinteger(l, 2, 0);
    ffi::lua_pop(l, ffi::lua_gettop(l) - 1);
    unpack_full(l, 1, offset)
}

unsafe extern "C-unwind" fn unpack_limit(l: *mut lua_State) -> c_int {
    let limit = ffi::luaL_checkinteger(l, 2);
    let offset = ffi::luaL_optinteger(l, 3, 0);
    ffi::lua_pop(l, ffi::lua_gettop(l) - 1);
    unpack_full(l, limit, offset)
}

/// Opens `cmsgpack` as the server does (a new table filled in the C's order, then set as a global).
///
/// # Safety
/// `l` must be a valid Lua state, called from a protected context.
pub unsafe fn open(l: *mut lua_State) {
    ffi::lua_createtable(l, 0, 0);
    // pack: a C closure over its buffer.
    let b = ffi::lua_newuserdata(l, std::mem::size_of::<Buf>()) as *mut Buf;
    b.write(Buf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    });
    ffi::lua_createtable(l, 0, 1);
    ffi::lua_pushcfunction(l, buf_gc);
    ffi::lua_setfield(l, -2, c"__gc".as_ptr());
    ffi::lua_setmetatable(l, -2);
    ffi::lua_pushcclosure(l, pack, 1);
    ffi::lua_setfield(l, -2, c"pack".as_ptr());
    let funcs: [(&CStr, ffi::lua_CFunction); 3] = [
        (c"unpack", unpack),
        (c"unpack_one", unpack_one),
        (c"unpack_limit", unpack_limit),
    ];
    for (name, f) in funcs {
        ffi::lua_pushcfunction(l, f);
        ffi::lua_setfield(l, -2, name.as_ptr());
    }
    let meta: [(&CStr, &CStr); 4] = [
        (c"_NAME", c"cmsgpack"),
        (c"_VERSION", c"lua-cmsgpack 0.4.0"),
        (c"_COPYRIGHT", c"Copyright (C) 2012, Redis Ltd."),
        (c"_DESCRIPTION", c"MessagePack C implementation for Lua"),
    ];
    for (field, value) in meta {
        ffi::lua_pushstring(l, value.as_ptr());
        ffi::lua_setfield(l, -2, field.as_ptr());
    }
    ffi::lua_pushvalue(l, -1);
    ffi::lua_setglobal(l, c"cmsgpack".as_ptr());
    ffi::lua_pop(l, 1);
}
