//! Thin wrappers over the raw module API calls rfunc needs and the crate does not wrap the way we need them
//! (exact replies, RM_Call with hand-built flag strings, call replies). Everything here runs on the main thread.

use std::ffi::{c_char, c_int, CString};
use std::ptr;

use valkey_module::raw;

pub type Ctx = *mut raw::RedisModuleCtx;

macro_rules! api {
    ($name:ident) => {
{
        // SAFETY: the server fills these function pointers in RedisModule_Init, before any of our code runs.
        #[allow(unused_unsafe)]
        let f = unsafe { (*std::ptr::addr_of!(raw::$name)).expect(concat!(stringify!($name), " is not available on this server")) };
        f
    }
    };
}
pub(crate) use api;

pub fn reply_error_bytes(ctx: Ctx, msg: &[u8]) {
    // ReplyWithError wants a C string: a NUL inside the text would cut it, so replace it (the server does the
    // same for CR/LF). The text is sent as `-<msg>`.
    let c = CString::new(
        msg.iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>(),
    )
    .expect("NULs replaced");
    unsafe { api!(RedisModule_ReplyWithError)(ctx, c.as_ptr()) };
}

pub fn reply_error(ctx: Ctx, msg: &str) {
    reply_error_bytes(ctx, msg.as_bytes());
}

pub fn reply_simple(ctx: Ctx, msg: &str) {
    let c = CString::new(msg).unwrap_or_default();
    unsafe { api!(RedisModule_ReplyWithSimpleString)(ctx, c.as_ptr()) };
}

pub fn reply_simple_bytes(ctx: Ctx, msg: &[u8]) {
    let c = CString::new(
        msg.iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>(),
    )
    .expect("NULs replaced");
    unsafe { api!(RedisModule_ReplyWithSimpleString)(ctx, c.as_ptr()) };
}

pub fn reply_ok(ctx: Ctx) {
    reply_simple(ctx, "OK");
}

pub fn reply_bulk(ctx: Ctx, data: &[u8]) {
    unsafe {
        api!(RedisModule_ReplyWithStringBuffer)(ctx, data.as_ptr() as *const c_char, data.len())
    };
}

pub fn reply_int(ctx: Ctx, v: i64) {
    unsafe { api!(RedisModule_ReplyWithLongLong)(ctx, v) };
}

pub fn reply_null(ctx: Ctx) {
    unsafe { api!(RedisModule_ReplyWithNull)(ctx) };
}

pub fn reply_array(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplyWithArray)(ctx, len as _) };
}

pub fn reply_map(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplyWithMap)(ctx, len as _) };
}

pub fn reply_set(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplyWithSet)(ctx, len as _) };
}

pub fn reply_double(ctx: Ctx, v: f64) {
    unsafe { api!(RedisModule_ReplyWithDouble)(ctx, v) };
}

pub fn reply_bool(ctx: Ctx, v: bool) {
    unsafe { api!(RedisModule_ReplyWithBool)(ctx, v as c_int) };
}

pub fn reply_big_number(ctx: Ctx, digits: &[u8]) {
    unsafe {
        api!(RedisModule_ReplyWithBigNumber)(ctx, digits.as_ptr() as *const c_char, digits.len())
    };
}

pub fn reply_verbatim(ctx: Ctx, data: &[u8], format: &[u8; 3]) {
    let mut ext = [0 as c_char; 4];
    for (i, b) in format.iter().enumerate() {
        ext[i] = *b as c_char;
    }
    unsafe {
        api!(RedisModule_ReplyWithVerbatimStringType)(
            ctx,
            data.as_ptr() as *const c_char,
            data.len(),
            ext.as_ptr(),
        )
    };
}

pub fn set_array_len(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplySetArrayLength)(ctx, len as _) };
}
pub fn set_map_len(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplySetMapLength)(ctx, len as _) };
}
pub fn set_set_len(ctx: Ctx, len: i64) {
    unsafe { api!(RedisModule_ReplySetSetLength)(ctx, len as _) };
}

pub fn replicate_verbatim(ctx: Ctx) {
    unsafe { api!(RedisModule_ReplicateVerbatim)(ctx) };
}

/// The server's monotonic clock in microseconds (its TSC clock where it has one: cheaper than a clock_gettime).
pub fn monotonic_us() -> u64 {
    unsafe { api!(RedisModule_MonotonicMicroseconds)() }
}

pub fn context_flags(ctx: Ctx) -> u32 {
    unsafe { api!(RedisModule_GetContextFlags)(ctx) as u32 }
}

pub fn selected_db(ctx: Ctx) -> c_int {
    unsafe { api!(RedisModule_GetSelectedDb)(ctx) }
}

pub fn select_db(ctx: Ctx, db: c_int) {
    unsafe { api!(RedisModule_SelectDb)(ctx, db) };
}

/// Logs at the given level (`debug`, `verbose`, `notice`, `warning`). The server prefixes `<rfunc> `.
pub fn log(ctx: Ctx, level: &str, msg: &[u8]) {
    let level = CString::new(level).unwrap_or_default();
    let msg = CString::new(
        msg.iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>(),
    )
    .expect("NULs replaced");
    // Outside a server (the offline CLI) there is no log: use stderr.
    match unsafe { *std::ptr::addr_of!(raw::RedisModule_Log) } {
        Some(f) => unsafe { f(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) },
        None => eprintln!("{}", msg.to_string_lossy()),
    }
}

/// The bytes of a module string.
///
/// # Safety
/// `s` must be a valid module string that outlives the returned slice.
pub unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    let p = api!(RedisModule_StringPtrLen)(s, &mut len);
    if p.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(p as *const u8, len)
    }
}

/// `s` is a string in the server's embedded encoding (EMBSTR: the bytes live in the object's own allocation).
/// Read from the object's first byte, which holds its `type:4` and `encoding:4` bit-fields (string = 0, EMBSTR
/// = 8) in every Valkey and Redis so far; what follows differs (16-byte header before 9.0, 8 bytes after). A
/// server laid out otherwise gets `false`, which only means its strings are not shared.
///
/// # Safety
/// `s` must be a valid module string.
pub unsafe fn is_embedded_string(s: *const raw::RedisModuleString) -> bool {
    const STRING_EMBSTR: u8 = 8 << 4;
    *(s as *const u8) == STRING_EMBSTR
}

pub fn create_string(ctx: Ctx, data: &[u8]) -> *mut raw::RedisModuleString {
    unsafe { api!(RedisModule_CreateString)(ctx, data.as_ptr() as *const c_char, data.len()) }
}

pub fn free_string(ctx: Ctx, s: *mut raw::RedisModuleString) {
    unsafe { api!(RedisModule_FreeString)(ctx, s) };
}

/// An owned call reply, freed on drop.
pub struct CallReply(pub *mut raw::RedisModuleCallReply);

impl Drop for CallReply {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { api!(RedisModule_FreeCallReply)(self.0) };
        }
    }
}

/// One argument of a call in the mixed form: a buffer (`b`: the server makes the argument object) or a module
/// string the caller already holds (`s`: the server takes a reference, no object is made).
#[derive(Clone, Copy)]
pub enum CallArg<'a> {
    Bytes(&'a [u8]),
    String(*mut raw::RedisModuleString),
}

/// The arguments of a call: module strings (the `v` form), or a mix of buffers and module strings (the `b` and
/// `s` letters: the server makes objects only for the buffers, which spares module strings, their reference
/// counting and the argv reallocation of the `v` form).
#[derive(Clone, Copy)]
pub enum CallArgs<'a> {
    Strings(&'a [*mut raw::RedisModuleString]),
    Mixed(&'a [CallArg<'a>]),
}

/// Most arguments passed in the mixed form; longer calls go through module strings.
const MAX_MIXED_ARGS: usize = 10;

// A mixed call passes each argument as one or two machine words (`s`: the string, `b`: pointer and length),
// which needs pointers and `size_t` to be word-sized.
const _: () = assert!(
    std::mem::size_of::<*const u8>() == std::mem::size_of::<usize>()
        && std::mem::size_of::<libc::size_t>() == std::mem::size_of::<usize>()
);

/// RM_Call with the flag letters in `flags` (NUL-terminated, without an argument letter). The command name goes
/// through a stack buffer when short, so the call path does not allocate for it. Returns the reply (null if
/// the server refused without an error reply) and the errno the server set.
pub fn call_raw(ctx: Ctx, cmd: &[u8], flags: &[u8; 16], args: CallArgs) -> (CallReply, c_int) {
    let mut buf = [0u8; 64];
    let owned;
    let name: *const c_char = if cmd.contains(&0) {
        return (CallReply(ptr::null_mut()), libc::ENOENT);
    } else if cmd.len() < buf.len() {
        buf[..cmd.len()].copy_from_slice(cmd);
        buf.as_ptr() as *const c_char
    } else {
        owned = CString::new(cmd).expect("no NUL");
        owned.as_ptr()
    };
    let letters = &flags[..flags.iter().position(|&b| b == 0).unwrap_or(flags.len())];
    let mut fmt = [0u8; MAX_MIXED_ARGS + 17];
    match args {
        CallArgs::Mixed(a) if a.len() > MAX_MIXED_ARGS => {
            let made: Vec<_> = a
                .iter()
                .map(|arg| match *arg {
                    CallArg::Bytes(b) => (create_string(ptr::null_mut(), b), true),
                    CallArg::String(s) => (s, false),
                })
                .collect();
            let strs: Vec<_> = made.iter().map(|&(s, _)| s).collect();
            let r = call_raw(ctx, cmd, flags, CallArgs::Strings(&strs));
            for (s, ours) in made {
                if ours {
                    free_string(ptr::null_mut(), s);
                }
            }
            r
        }
        CallArgs::Mixed(a) => {
            let mut words = [0usize; 2 * MAX_MIXED_ARGS];
            let mut n = 0;
            for (letter, arg) in fmt.iter_mut().zip(a) {
                match *arg {
                    CallArg::Bytes(b) => {
                        *letter = b'b';
                        words[n] = b.as_ptr() as usize;
                        words[n + 1] = b.len();
                        n += 2;
                    }
                    CallArg::String(s) => {
                        *letter = b's';
                        words[n] = s as usize;
                        n += 1;
                    }
                }
            }
            fmt[a.len()..a.len() + letters.len()].copy_from_slice(letters);
            let fmt = fmt.as_ptr() as *const c_char;
            let f = api!(RedisModule_Call);
            let w = &words;
            macro_rules! call_with {
                ($($i:literal)*) => {
                    f(ctx, name, fmt $(, w[$i])*)
                };
            }
            unsafe {
                *libc::__errno_location() = 0;
                let reply = match n {
                    0 => call_with!(),
                    1 => call_with!(0),
                    2 => call_with!(0 1),
                    3 => call_with!(0 1 2),
                    4 => call_with!(0 1 2 3),
                    5 => call_with!(0 1 2 3 4),
                    6 => call_with!(0 1 2 3 4 5),
                    7 => call_with!(0 1 2 3 4 5 6),
                    8 => call_with!(0 1 2 3 4 5 6 7),
                    9 => call_with!(0 1 2 3 4 5 6 7 8),
                    10 => call_with!(0 1 2 3 4 5 6 7 8 9),
                    11 => call_with!(0 1 2 3 4 5 6 7 8 9 10),
                    12 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11),
                    13 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12),
                    14 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13),
                    15 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
                    16 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15),
                    17 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
                    18 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17),
                    19 => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18),
                    _ => call_with!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19),
                };
                (CallReply(reply), *libc::__errno_location())
            }
        }
        CallArgs::Strings(a) => {
            fmt[0] = b'v';
            fmt[1..1 + letters.len()].copy_from_slice(letters);
            unsafe {
                *libc::__errno_location() = 0;
                let reply = api!(RedisModule_Call)(
                    ctx,
                    name,
                    fmt.as_ptr() as *const c_char,
                    a.as_ptr(),
                    a.len(),
                );
                (CallReply(reply), *libc::__errno_location())
            }
        }
    }
}

/// Calls a command with string arguments and no special flags (used for CONFIG GET / INFO / COMMAND INFO).
pub fn call_simple(ctx: Ctx, cmd: &str, args: &[&[u8]]) -> CallReply {
    let mut flags = [0u8; 16];
    flags[0] = b'E';
    let args: Vec<CallArg> = args.iter().map(|a| CallArg::Bytes(a)).collect();
    call_raw(ctx, cmd.as_bytes(), &flags, CallArgs::Mixed(&args)).0
}

pub mod reply {
    //! Reading call replies.
    use super::*;

    pub const STRING: c_int = raw::REDISMODULE_REPLY_STRING as c_int;
    pub const ERROR: c_int = raw::REDISMODULE_REPLY_ERROR as c_int;
    pub const INTEGER: c_int = raw::REDISMODULE_REPLY_INTEGER as c_int;
    pub const ARRAY: c_int = raw::REDISMODULE_REPLY_ARRAY as c_int;
    pub const NULL: c_int = raw::REDISMODULE_REPLY_NULL as c_int;
    pub const MAP: c_int = raw::REDISMODULE_REPLY_MAP as c_int;
    pub const SET: c_int = raw::REDISMODULE_REPLY_SET as c_int;
    pub const BOOL: c_int = raw::REDISMODULE_REPLY_BOOL as c_int;
    pub const DOUBLE: c_int = raw::REDISMODULE_REPLY_DOUBLE as c_int;
    pub const BIG_NUMBER: c_int = raw::REDISMODULE_REPLY_BIG_NUMBER as c_int;
    pub const VERBATIM: c_int = raw::REDISMODULE_REPLY_VERBATIM_STRING as c_int;

    pub type R = *mut raw::RedisModuleCallReply;

    pub fn kind(r: R) -> c_int {
        unsafe { api!(RedisModule_CallReplyType)(r) }
    }
    /// The string of a STRING, ERROR (without the leading `-`), BIG_NUMBER reply.
    pub fn bytes<'a>(r: R) -> &'a [u8] {
        let mut len = 0usize;
        let p = unsafe { api!(RedisModule_CallReplyStringPtr)(r, &mut len) };
        if p.is_null() {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        }
    }
    pub fn big_number<'a>(r: R) -> &'a [u8] {
        let mut len = 0usize;
        let p = unsafe { api!(RedisModule_CallReplyBigNumber)(r, &mut len) };
        if p.is_null() {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        }
    }
    pub fn verbatim<'a>(r: R) -> (&'a [u8], &'a [u8]) {
        let mut len = 0usize;
        let mut fmt: *const c_char = ptr::null();
        let p = unsafe { api!(RedisModule_CallReplyVerbatim)(r, &mut len, &mut fmt) };
        let s = if p.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(p as *const u8, len) }
        };
        let f = if fmt.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(fmt as *const u8, 3) }
        };
        (s, f)
    }
    /// The raw protocol of the reply: its first byte tells a status (`+`) from a bulk string (`$`).
    pub fn proto_first_byte(r: R) -> u8 {
        let mut len = 0usize;
        let p = unsafe { api!(RedisModule_CallReplyProto)(r, &mut len) };
        if p.is_null() || len == 0 {
            0
        } else {
            unsafe { *(p as *const u8) }
        }
    }
    pub fn integer(r: R) -> i64 {
        unsafe { api!(RedisModule_CallReplyInteger)(r) }
    }
    pub fn double(r: R) -> f64 {
        unsafe { api!(RedisModule_CallReplyDouble)(r) }
    }
    pub fn boolean(r: R) -> bool {
        unsafe { api!(RedisModule_CallReplyBool)(r) != 0 }
    }
    pub fn len(r: R) -> usize {
        unsafe { api!(RedisModule_CallReplyLength)(r) }
    }
    pub fn array_elem(r: R, i: usize) -> R {
        unsafe { api!(RedisModule_CallReplyArrayElement)(r, i) }
    }
    pub fn set_elem(r: R, i: usize) -> R {
        unsafe { api!(RedisModule_CallReplySetElement)(r, i) }
    }
    pub fn map_elem(r: R, i: usize) -> (R, R) {
        let mut k = ptr::null_mut();
        let mut v = ptr::null_mut();
        unsafe { api!(RedisModule_CallReplyMapElement)(r, i, &mut k, &mut v) };
        (k, v)
    }
}

/// Lets the server serve other clients while a function runs (a no-op until `busy-reply-threshold` passed);
/// meanwhile they get `-BUSY <text>` unless their command is flagged `allow-busy`.
pub fn yield_clients(ctx: Ctx, busy_text: &std::ffi::CStr) {
    unsafe {
        api!(RedisModule_Yield)(
            ctx,
            raw::REDISMODULE_YIELD_FLAG_CLIENTS as c_int,
            busy_text.as_ptr(),
        )
    };
}
