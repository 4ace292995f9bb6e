//! `bit`: the LuaBitOp 1.0.2 library the server bundles (32-bit operations on Lua numbers).
//!
//! Semantics follow LuaBitOp on a `double` Lua: an argument is normalised by adding 2^52+2^51 and taking the low
//! 32 bits of the sum, which rounds half to even and reduces modulo 2^32 exactly; results are signed 32-bit
//! numbers. A non-number argument (one `lua_tonumber` turns into 0 and that is not a numeric string) raises
//! `bad argument #n to '<name>' (number expected, got <type>)`, built by Lua itself so the text is the server's.
//! `tohex` has the CVE-2024-31449 fix: a digit count of -2^31 is taken as -(2^31-1).

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua_sys as ffi;
use mlua_sys::lua_State;

/// 2^52 + 2^51: adding it leaves the integer part of the argument, rounded half to even, in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// Why a function fails: the argument that is not a number.
struct NotNumber(c_int);

/// The 32 bits of argument `idx` (LuaBitOp's `barg`).
unsafe fn barg(l: *mut lua_State, idx: c_int) -> Result<u32, NotNumber> {
    let n = ffi::lua_tonumber(l, idx) + MAGIC;
    let b = n.to_bits() as u32;
    if b == 0 && ffi::lua_isnumber(l, idx) == 0 {
        return Err(NotNumber(idx));
    }
    Ok(b)
}

/// Runs a function body and pushes its 32-bit result as a signed number; raises the argument error (once every
/// Rust value is gone) or, for a panic, a plain error instead of unwinding into C.
unsafe fn run(l: *mut lua_State, body: impl FnOnce() -> Result<u32, NotNumber>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(b)) => {
            ffi::lua_pushnumber(l, b as i32 as f64);
            1
        }
        Ok(Err(NotNumber(idx))) => ffi::luaL_typerror(l, idx, c"number".as_ptr()),
        Err(payload) => {
            drop(payload);
            ffi::luaL_error(
                l,
                c"rfunc internal error (panic) in the bit library".as_ptr(),
            )
        }
    }
}

unsafe extern "C-unwind" fn tobit(l: *mut lua_State) -> c_int {
    run(l, || barg(l, 1))
}

unsafe extern "C-unwind" fn bnot(l: *mut lua_State) -> c_int {
    run(l, || Ok(!barg(l, 1)?))
}

/// `band`/`bor`/`bxor`: argument 1 first, then the others from the last one down (LuaBitOp's order, which decides
/// which bad argument is reported).
unsafe fn fold(l: *mut lua_State, op: fn(u32, u32) -> u32) -> c_int {
    run(l, || {
        let mut b = barg(l, 1)?;
        let mut i = ffi::lua_gettop(l);
        while i > 1 {
            b = op(b, barg(l, i)?);
            i -= 1;
        }
        Ok(b)
    })
}

unsafe extern "C-unwind" fn band(l: *mut lua_State) -> c_int {
    fold(l, |a, b| a & b)
}

unsafe extern "C-unwind" fn bor(l: *mut lua_State) -> c_int {
    fold(l, |a, b| a | b)
}

unsafe extern "C-unwind" fn bxor(l: *mut lua_State) -> c_int {
    fold(l, |a, b| a ^ b)
}

/// Shifts and rotations: value, then count (mod 32).
unsafe fn shift(l: *mut lua_State, op: fn(u32, u32) -> u32) -> c_int {
    run(l, || {
        let b = barg(l, 1)?;
        let n = barg(l, 2)? & 31;
        Ok(op(b, n))
    })
}

unsafe extern "C-unwind" fn lshift(l: *mut lua_State) -> c_int {
    shift(l, |b, n| b << n)
}

unsafe extern "C-unwind" fn rshift(l: *mut lua_State) -> c_int {
    shift(l, |b, n| b >> n)
}

unsafe extern "C-unwind" fn arshift(l: *mut lua_State) -> c_int {
    shift(l, |b, n| ((b as i32) >> n) as u32)
}

unsafe extern "C-unwind" fn rol(l: *mut lua_State) -> c_int {
    shift(l, |b, n| b.rotate_left(n))
}

unsafe extern "C-unwind" fn ror(l: *mut lua_State) -> c_int {
    shift(l, |b, n| b.rotate_right(n))
}

unsafe extern "C-unwind" fn bswap(l: *mut lua_State) -> c_int {
    run(l, || Ok(barg(l, 1)?.swap_bytes()))
}

/// `tohex(x [,n])`: n hex digits (default 8), upper case when n < 0, at most 8.
unsafe extern "C-unwind" fn tohex(l: *mut lua_State) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(
        || -> Result<([u8; 8], usize), NotNumber> {
            let mut b = barg(l, 1)?;
            let mut n: i32 = if ffi::lua_isnone(l, 2) != 0 {
                8
            } else {
                barg(l, 2)? as i32
            };
            let mut digits: &[u8; 16] = b"0123456789abcdef";
            if n == i32::MIN {
                n = i32::MIN + 1;
            }
            if n < 0 {
                n = -n;
                digits = b"0123456789ABCDEF";
            }
            let n = n.min(8) as usize;
            let mut buf = [0u8; 8];
            for slot in buf[..n].iter_mut().rev() {
                *slot = digits[(b & 15) as usize];
                b >>= 4;
            }
            Ok((buf, n))
        },
    ));
    match r {
        Ok(Ok((buf, n))) => {
            ffi::lua_pushlstring(l, buf.as_ptr() as *const c_char, n);
            1
        }
        Ok(Err(NotNumber(idx))) => ffi::luaL_typerror(l, idx, c"number".as_ptr()),
        Err(payload) => {
            drop(payload);
            ffi::luaL_error(
                l,
                c"rfunc internal error (panic) in the bit library".as_ptr(),
            )
        }
    }
}

/// A `luaL_Reg` whose terminator can be written (mlua-sys's `func` is not nullable).
#[repr(C)]
struct Reg {
    name: *const c_char,
    func: Option<ffi::lua_CFunction>,
}

const fn reg(name: &'static CStr, func: ffi::lua_CFunction) -> Reg {
    Reg {
        name: name.as_ptr(),
        func: Some(func),
    }
}

/// Opens `bit` as LuaBitOp does (`luaL_register(L, "bit", ...)`, same function order, so the table is built and
/// iterated exactly like the server's).
///
/// # Safety
/// `l` must be a valid Lua state, called from a protected context.
pub unsafe fn open(l: *mut lua_State) {
    let funcs = [
        reg(c"tobit", tobit),
        reg(c"bnot", bnot),
        reg(c"band", band),
        reg(c"bor", bor),
        reg(c"bxor", bxor),
        reg(c"lshift", lshift),
        reg(c"rshift", rshift),
        reg(c"arshift", arshift),
        reg(c"rol", rol),
        reg(c"ror", ror),
        reg(c"bswap", bswap),
        reg(c"tohex", tohex),
        Reg {
            name: std::ptr::null(),
            func: None,
        },
    ];
    ffi::luaL_register(l, c"bit".as_ptr(), funcs.as_ptr() as *const ffi::luaL_Reg);
    ffi::lua_pop(l, 1);
}
