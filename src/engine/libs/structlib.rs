//! `struct`: the struct 0.2 library (Roberto Ierusalimschy's struct.c 1.8 with the Redis fork's hardening) the
//! server bundles: `pack`, `unpack`, `size`.
//!
//! Format: `<` little, `>` big (native, the default, is little endian), `!n` maximum alignment (power of two, default 8),
//! `x` one pad byte, `b/B` 1, `h/H` 2, `l/L` 8, `T` 8, `i/I[n]` n bytes (default 4, at most 32), `f` float, `d`
//! double, `s` zero-terminated string, `c[n]` n characters (`c0`: the whole string when packing, the previous
//! number as length when unpacking), spaces ignored. The Redis fork adds the `integral size overflow` check of
//! the digit counts (CVE-2020-14147), the `size <= ld && pos <= ld - size` bounds check (CVE-2018-11219) and
//! `offset must be 1 or greater`.
//!
//! The arithmetic mirrors the C on x86-64 (size_t wrap-around, out-of-range double → integer conversions, shift
//! counts taken mod 64), so even odd inputs give the server's results. Errors are built by Lua's own auxiliary
//! functions, raised only once every Rust value is gone.

use std::ffi::{c_char, c_int, CStr};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua_sys as ffi;
use mlua_sys::lua_State;

/// Largest `i`/`I` size.
const MAXINTSIZE: i32 = 32;
/// Default `!` alignment: the alignment of a double.
const MAXALIGN: i32 = 8;

// ----------------------------------------------------------------------------------------------------------
// Errors: described by values without destructors, raised by the C function once the Rust work is done.

/// A short error text, NUL-terminated, with no destructor.
struct Msg {
    buf: [u8; 112],
    len: usize,
}

impl Msg {
    fn new() -> Msg {
        Msg {
            buf: [0; 112],
            len: 0,
        }
    }
    fn from(b: &[u8]) -> Msg {
        let mut m = Msg::new();
        m.push(b);
        m
    }
    fn push(&mut self, b: &[u8]) {
        let room = self.buf.len() - 1 - self.len;
        let n = b.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
    fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr() as *const c_char
    }
}

impl std::fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

enum Fail {
    /// `luaL_error(L, "%s", msg)`.
    Error(Msg),
    /// `luaL_argerror(L, narg, msg)`.
    Arg(c_int, Msg),
    /// `luaL_typerror(L, narg, tname)`.
    Type(c_int, &'static CStr),
}

impl Fail {
    fn error(msg: &[u8]) -> Fail {
        Fail::Error(Msg::from(msg))
    }
    fn arg(narg: c_int, msg: &[u8]) -> Fail {
        Fail::Arg(narg, Msg::from(msg))
    }
}

/// Runs a function body; on failure raises the error once the body's values are dropped; a panic becomes a Lua
/// error instead of unwinding into C.
unsafe fn run(l: *mut lua_State, body: impl FnOnce() -> Result<c_int, Fail>) -> c_int {
    let fail = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(n)) => return n,
        Ok(Err(f)) => f,
        Err(payload) => {
            drop(payload);
            Fail::error(b"rfunc internal error (panic) in the struct library")
        }
    };
    match fail {
        Fail::Error(m) => ffi::luaL_error(l, c"%s".as_ptr(), m.as_ptr()),
        Fail::Arg(narg, m) => ffi::luaL_argerror(l, narg, m.as_ptr()),
        Fail::Type(narg, tname) => ffi::luaL_typerror(l, narg, tname.as_ptr()),
    }
}

// ----------------------------------------------------------------------------------------------------------
// C conversions as compiled for x86-64 (cvttsd2si gives the "integer indefinite" 0x8000000000000000 for NaN and
// out-of-range values; double → unsigned long goes through the signed conversion, biased by 2^63 when ≥ 2^63).

const TWO63: f64 = 9_223_372_036_854_775_808.0;

/// `(long)d`.
fn c_to_i64(d: f64) -> i64 {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86"))
        && (d.is_nan() || !(-TWO63..TWO63).contains(&d))
    {
        i64::MIN
    } else {
        d as i64
    }
}

/// `(unsigned long)d` (also `(size_t)d`).
fn c_to_u64(d: f64) -> u64 {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        if d >= TWO63 {
            (c_to_i64(d - TWO63) as u64) ^ (1 << 63)
        } else {
            c_to_i64(d) as u64
        }
    } else {
        d as u64
    }
}

/// `luaL_checknumber` without raising.
unsafe fn check_number(l: *mut lua_State, narg: c_int) -> Result<f64, Fail> {
    let d = ffi::lua_tonumber(l, narg);
    if d == 0.0 && ffi::lua_isnumber(l, narg) == 0 {
        return Err(Fail::Type(narg, c"number"));
    }
    Ok(d)
}

/// `luaL_checklstring` without raising (numbers are converted in place, as Lua does).
unsafe fn check_string<'a>(l: *mut lua_State, narg: c_int) -> Result<&'a [u8], Fail> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, narg, &mut len);
    if p.is_null() {
        return Err(Fail::Type(narg, c"string"));
    }
    Ok(std::slice::from_raw_parts(p as *const u8, len))
}

// ----------------------------------------------------------------------------------------------------------
// Format parsing.

struct Header {
    little: bool,
    align: usize,
}

impl Header {
    fn new() -> Header {
        Header {
            little: true,
            align: 1,
        }
    }
}

/// A format string read like a C string (it ends at the first NUL).
struct Fmt<'a> {
    s: &'a [u8],
    at: usize,
}

impl Fmt<'_> {
    fn peek(&self) -> u8 {
        self.s.get(self.at).copied().unwrap_or(0)
    }
    fn next_opt(&mut self) -> Option<u8> {
        match self.peek() {
            0 => None,
            c => {
                self.at += 1;
                Some(c)
            }
        }
    }
    /// A decimal number, or `df` when none follows.
    fn getnum(&mut self, df: i32) -> Result<i32, Fail> {
        if !self.peek().is_ascii_digit() {
            return Ok(df);
        }
        let mut a: i32 = 0;
        loop {
            let d = (self.peek() - b'0') as i32;
            if a > i32::MAX / 10 || a * 10 > i32::MAX - d {
                return Err(Fail::error(b"integral size overflow"));
            }
            a = a * 10 + d;
            self.at += 1;
            if !self.peek().is_ascii_digit() {
                return Ok(a);
            }
        }
    }
}

/// Size of an option (0 for control options, which need no alignment).
fn optsize(opt: u8, fmt: &mut Fmt) -> Result<usize, Fail> {
    Ok(match opt {
        b'B' | b'b' => 1,
        b'H' | b'h' => 2,
        b'L' | b'l' => 8,
        b'T' => 8,
        b'f' => 4,
        b'd' => 8,
        b'x' => 1,
        b'c' => fmt.getnum(1)? as usize,
        b'i' | b'I' => {
            let sz = fmt.getnum(4)?;
            if sz > MAXINTSIZE {
                let mut m = Msg::new();
                let _ = write!(m, "integral size {sz} is larger than limit of {MAXINTSIZE}");
                return Err(Fail::Error(m));
            }
            sz as usize
        }
        _ => 0,
    })
}

/// Padding needed before an item of `size` bytes at offset `len`.
fn gettoalign(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size.wrapping_sub(len & (size - 1))) & (size - 1)
}

/// Endianness, alignment and spaces; anything else is an invalid option.
fn controloptions(opt: u8, fmt: &mut Fmt, h: &mut Header) -> Result<(), Fail> {
    match opt {
        b' ' => Ok(()),
        b'>' => {
            h.little = false;
            Ok(())
        }
        b'<' => {
            h.little = true;
            Ok(())
        }
        b'!' => {
            let a = fmt.getnum(MAXALIGN)?;
            if !(a > 0 && a & (a - 1) == 0) {
                let mut m = Msg::new();
                let _ = write!(m, "alignment {a} is not a power of 2");
                return Err(Fail::Error(m));
            }
            h.align = a as usize;
            Ok(())
        }
        _ => {
            let mut m = Msg::from(b"invalid format option '");
            m.push(&[opt]);
            m.push(b"'");
            Err(Fail::Arg(1, m))
        }
    }
}

fn is_int_option(opt: u8) -> bool {
    matches!(
        opt,
        b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I'
    )
}

// ----------------------------------------------------------------------------------------------------------
// pack

/// `putinteger`: the number as a 64-bit two's complement value, `size` bytes of it (zeros beyond 8).
fn put_integer(n: f64, little: bool, size: usize) -> [u8; MAXINTSIZE as usize] {
    let mut value: u64 = if n < 0.0 {
        c_to_i64(n) as u64
    } else {
        c_to_u64(n)
    };
    let mut buff = [0u8; MAXINTSIZE as usize];
    if little {
        for b in buff[..size].iter_mut() {
            *b = value as u8;
            value >>= 8;
        }
    } else {
        for b in buff[..size].iter_mut().rev() {
            *b = value as u8;
            value >>= 8;
        }
    }
    buff
}

/// Appends to a `luaL_Buffer` (Lua's memory, so a memory error leaves nothing behind).
unsafe fn add(b: *mut ffi::luaL_Buffer, s: &[u8]) {
    ffi::luaL_addlstring(b, s.as_ptr() as *const c_char, s.len());
}

unsafe extern "C-unwind" fn pack(l: *mut lua_State) -> c_int {
    let mut flen = 0usize;
    let fp = ffi::luaL_checklstring(l, 1, &mut flen);
    // The C pushes a nil "mark" before its buffer: a missing argument right after the last one reads as nil.
    ffi::lua_pushnil(l);
    let mut buffer = std::mem::MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buffer.as_mut_ptr();
    ffi::luaL_buffinit(l, b);
    run(l, || {
        let mut fmt = Fmt {
            s: std::slice::from_raw_parts(fp as *const u8, flen),
            at: 0,
        };
        let mut h = Header::new();
        let mut arg: c_int = 2;
        let mut total: usize = 0;
        while let Some(opt) = fmt.next_opt() {
            let mut size = optsize(opt, &mut fmt)?;
            // Less than the item's size, itself at most MAXINTSIZE ('c' needs no alignment).
            let toalign = gettoalign(total, &h, opt, size);
            total = total.wrapping_add(toalign);
            add(b, &[0u8; MAXINTSIZE as usize][..toalign]);
            match opt {
                _ if is_int_option(opt) => {
                    let n = check_number(l, arg)?;
                    arg += 1;
                    add(b, &put_integer(n, h.little, size)[..size]);
                }
                b'x' => add(b, &[0]),
                b'f' => {
                    let f = check_number(l, arg)? as f32;
                    arg += 1;
                    add(
                        b,
                        &if h.little {
                            f.to_le_bytes()
                        } else {
                            f.to_be_bytes()
                        },
                    );
                }
                b'd' => {
                    let d = check_number(l, arg)?;
                    arg += 1;
                    add(
                        b,
                        &if h.little {
                            d.to_le_bytes()
                        } else {
                            d.to_be_bytes()
                        },
                    );
                }
                b'c' | b's' => {
                    let s = check_string(l, arg)?;
                    arg += 1;
                    if size == 0 {
                        size = s.len();
                    }
                    // The C checks with the argument number already advanced.
                    if s.len() < size {
                        return Err(Fail::arg(arg, b"string too short"));
                    }
                    add(b, &s[..size]);
                    if opt == b's' {
                        add(b, &[0]);
                        size += 1;
                    }
                }
                _ => controloptions(opt, &mut fmt, &mut h)?,
            }
            total = total.wrapping_add(size);
        }
        ffi::luaL_pushresult(b);
        Ok(1)
    })
}

// ----------------------------------------------------------------------------------------------------------
// unpack

/// `getinteger`: the low 8 bytes of the field; signed values sign-extend from bit `size*8-1` (mod 64).
fn get_integer(buf: &[u8], little: bool, signed: bool) -> f64 {
    let size = buf.len();
    let mut v: u64 = 0;
    if little {
        for &b in buf.iter().rev() {
            v = (v << 8) | b as u64;
        }
    } else {
        for &b in buf {
            v = (v << 8) | b as u64;
        }
    }
    if !signed {
        return v as f64;
    }
    let mask = u64::MAX.wrapping_shl((size as i32).wrapping_mul(8).wrapping_sub(1) as u32);
    if v & mask != 0 {
        v |= mask;
    }
    v as i64 as f64
}

unsafe extern "C-unwind" fn unpack(l: *mut lua_State) -> c_int {
    let mut flen = 0usize;
    let fp = ffi::luaL_checklstring(l, 1, &mut flen);
    let mut ld = 0usize;
    let dp = ffi::luaL_checklstring(l, 2, &mut ld);
    let pos = ffi::luaL_optinteger(l, 3, 1) as usize;
    if pos == 0 {
        ffi::luaL_argerror(l, 3, c"offset must be 1 or greater".as_ptr());
    }
    run(l, || {
        let mut fmt = Fmt {
            s: std::slice::from_raw_parts(fp as *const u8, flen),
            at: 0,
        };
        let data = std::slice::from_raw_parts(dp as *const u8, ld);
        let mut pos = pos - 1;
        let mut h = Header::new();
        let mut n: c_int = 0;
        while let Some(opt) = fmt.next_opt() {
            let mut size = optsize(opt, &mut fmt)?;
            pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
            if !(size <= ld && pos <= ld - size) {
                return Err(Fail::arg(2, b"data string too short"));
            }
            if ffi::lua_checkstack(l, 2) == 0 {
                return Err(Fail::error(b"stack overflow (too many results)"));
            }
            match opt {
                _ if is_int_option(opt) => {
                    let res =
                        get_integer(&data[pos..pos + size], h.little, opt.is_ascii_lowercase());
                    ffi::lua_pushnumber(l, res);
                    n += 1;
                }
                b'x' => {}
                b'f' => {
                    let b: [u8; 4] = data[pos..pos + 4].try_into().unwrap_or_default();
                    let f = if h.little {
                        f32::from_le_bytes(b)
                    } else {
                        f32::from_be_bytes(b)
                    };
                    ffi::lua_pushnumber(l, f as f64);
                    n += 1;
                }
                b'd' => {
                    let b: [u8; 8] = data[pos..pos + 8].try_into().unwrap_or_default();
                    let d = if h.little {
                        f64::from_le_bytes(b)
                    } else {
                        f64::from_be_bytes(b)
                    };
                    ffi::lua_pushnumber(l, d);
                    n += 1;
                }
                b'c' => {
                    if size == 0 {
                        if n == 0 || ffi::lua_isnumber(l, -1) == 0 {
                            return Err(Fail::error(b"format 'c0' needs a previous size"));
                        }
                        size = c_to_u64(ffi::lua_tonumber(l, -1)) as usize;
                        ffi::lua_pop(l, 1);
                        n -= 1;
                        if !(size <= ld && pos <= ld - size) {
                            return Err(Fail::arg(2, b"data string too short"));
                        }
                    }
                    let s = &data[pos..pos + size];
                    ffi::lua_pushlstring(l, s.as_ptr() as *const c_char, s.len());
                    n += 1;
                }
                b's' => {
                    let rest = &data[pos..];
                    let Some(z) = rest.iter().position(|&b| b == 0) else {
                        return Err(Fail::error(b"unfinished string in data"));
                    };
                    size = z + 1;
                    ffi::lua_pushlstring(l, rest.as_ptr() as *const c_char, z);
                    n += 1;
                }
                _ => controloptions(opt, &mut fmt, &mut h)?,
            }
            pos = pos.wrapping_add(size);
        }
        ffi::lua_pushinteger(l, pos.wrapping_add(1) as ffi::lua_Integer);
        Ok(n + 1)
    })
}

// ----------------------------------------------------------------------------------------------------------
// size

unsafe extern "C-unwind" fn size(l: *mut lua_State) -> c_int {
    let mut flen = 0usize;
    let fp = ffi::luaL_checklstring(l, 1, &mut flen);
    run(l, || {
        let mut fmt = Fmt {
            s: std::slice::from_raw_parts(fp as *const u8, flen),
            at: 0,
        };
        let mut h = Header::new();
        let mut pos: usize = 0;
        while let Some(opt) = fmt.next_opt() {
            let size = optsize(opt, &mut fmt)?;
            pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
            if opt == b's' {
                return Err(Fail::arg(1, b"option 's' has no fixed size"));
            } else if opt == b'c' && size == 0 {
                return Err(Fail::arg(1, b"option 'c0' has no fixed size"));
            }
            // Letters and digits that are not options are skipped here (the C only checks non-alphanumerics).
            if !opt.is_ascii_alphanumeric() {
                controloptions(opt, &mut fmt, &mut h)?;
            }
            pos = pos.wrapping_add(size);
        }
        ffi::lua_pushinteger(l, pos as ffi::lua_Integer);
        Ok(1)
    })
}

// ----------------------------------------------------------------------------------------------------------

/// A `luaL_Reg` whose terminator can be written (mlua-sys's `func` is not nullable).
#[repr(C)]
struct Reg {
    name: *const c_char,
    func: Option<ffi::lua_CFunction>,
}

/// Opens `struct` as the server does (`luaL_register(L, "struct", ...)`, same function order).
///
/// # Safety
/// `l` must be a valid Lua state, called from a protected context.
pub unsafe fn open(l: *mut lua_State) {
    let funcs = [
        Reg {
            name: c"pack".as_ptr(),
            func: Some(pack),
        },
        Reg {
            name: c"unpack".as_ptr(),
            func: Some(unpack),
        },
        Reg {
            name: c"size".as_ptr(),
            func: Some(size),
        },
        Reg {
            name: std::ptr::null(),
            func: None,
        },
    ];
    ffi::luaL_register(
        l,
        c"struct".as_ptr(),
        funcs.as_ptr() as *const ffi::luaL_Reg,
    );
    ffi::lua_pop(l, 1);
}
