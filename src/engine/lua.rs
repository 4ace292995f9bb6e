//! The Lua engine: one Lua 5.1 state (with the server's patches, see `lua/`) shared by every library, the
//! sandbox, `server.register_function` at load time, and running a function at call time.
//!
//! Everything that touches the Lua stack runs inside a protected call (`lua_pcall` of a C trampoline), so an
//! out-of-memory or any other Lua error can never reach Lua's panic handler (which would exit the server).
//! Functions exposed to Lua are C functions written against the raw API, so they can raise any Lua value as an
//! error (the built-in raises `{err=...}` tables) and be named by Lua's error messages like the built-in's.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::{Duration, Instant};

use mlua_sys as ffi;
use mlua_sys::lua_State;
use rfunc_core::library::{is_valid_name, FunctionFlags};

use crate::host;
use crate::rm as api;

/// The chunk name of library code: Lua's messages read `user_function:<line>: ...`.
const CHUNK_NAME: &CStr = c"@user_function";
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);
const HOOK_EVERY: c_int = 100_000;

/// A function registered by a library body.
pub struct Registered {
    pub name: String,
    /// Reference of the callback in the Lua registry.
    pub callback: c_int,
    pub description: Option<Vec<u8>>,
    pub flags: FunctionFlags,
    pub stats: FunctionStats,
}

/// Per-function call statistics (RFUNC.LIST WITHSTATS, reset by RFUNC.STATS RESET).
#[derive(Default)]
pub struct FunctionStats {
    pub calls: Cell<u64>,
    pub errors: Cell<u64>,
    pub total_us: Cell<u64>,
    pub max_us: Cell<u64>,
}

impl FunctionStats {
    pub fn record(&self, micros: u64, failed: bool) {
        self.calls.set(self.calls.get() + 1);
        if failed {
            self.errors.set(self.errors.get() + 1);
        }
        self.total_us.set(self.total_us.get() + micros);
        self.max_us.set(self.max_us.get().max(micros));
    }
    pub fn reset(&self) {
        self.calls.set(0);
        self.errors.set(0);
        self.total_us.set(0);
        self.max_us.set(0);
    }
}

/// Allocation accounting for the state (bytes currently allocated by Lua).
struct Memory {
    /// The state's registry references (error handler, globals...), kept with the state itself.
    refs: Cell<Refs>,
    used: Cell<usize>,
    /// Set when an allocation was refused because of `rfunc.max-memory`.
    limit_hit: Cell<bool>,
    blocks: super::heap::BlockCache,
    /// The running function's context while this state runs one (what `running_in` reads).
    run: Cell<*mut RunCtx>,
}

pub struct LuaEngine {
    l: *mut lua_State,
    mem: Box<Memory>,
    /// Registry reference of the protected-call trampoline (state set-up, library loading, error reading).
    trampoline: c_int,
    /// Registry reference of `call_entry`, what a function call runs in protected mode.
    call_entry: c_int,
    calls: u32,
}

// The engine is only used on the main thread; FLUSH ASYNC moves a retired engine to a thread to free it.
unsafe impl Send for LuaEngine {}

unsafe extern "C" fn l_alloc(
    ud: *mut c_void,
    p: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    let mem = &*(ud as *const Memory);
    // Lua passes osize = 0 with a null block.
    let old = if p.is_null() { 0 } else { osize };
    if nsize == 0 {
        if !p.is_null() {
            mem.used.set(mem.used.get().saturating_sub(old));
            mem.blocks.free(p, old);
        }
        return ptr::null_mut();
    }
    let limit = crate::config::max_memory();
    if limit > 0 && nsize > old && mem.used.get() + (nsize - old) > limit {
        // Lua turns this into a "not enough memory" error; the call fails, the engine stays usable.
        mem.limit_hit.set(true);
        return ptr::null_mut();
    }
    let np = mem.blocks.realloc(p, old, nsize);
    if !np.is_null() {
        mem.used.set(mem.used.get().saturating_sub(old) + nsize);
    }
    np
}

/// The allocation accounting of a state.
unsafe fn memory_of<'a>(l: *mut lua_State) -> &'a Memory {
    let mut ud: *mut c_void = ptr::null_mut();
    ffi::lua_getallocf(l, &mut ud);
    &*(ud as *const Memory)
}

/// The error text of a Lua memory error: ours when `rfunc.max-memory` refused an allocation.
unsafe fn memory_error(l: *mut lua_State) -> Vec<u8> {
    let mem = memory_of(l);
    if mem.limit_hit.replace(false) {
        format!(
            "ERR the Lua engine reached rfunc.max-memory ({} bytes)",
            crate::config::max_memory()
        )
        .into_bytes()
    } else {
        b"ERR not enough memory".to_vec()
    }
}

// ----------------------------------------------------------------------------------------------------------
// Small stack helpers.

pub(crate) unsafe fn push_bytes(l: *mut lua_State, b: &[u8]) {
    ffi::lua_pushlstring(l, b.as_ptr() as *const c_char, b.len());
}

unsafe fn push_str(l: *mut lua_State, s: &str) {
    push_bytes(l, s.as_bytes());
}

/// The bytes of the string (or number, converted in place) at `idx`.
pub(crate) unsafe fn to_bytes<'a>(l: *mut lua_State, idx: c_int) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    if p.is_null() {
        None
    } else {
        Some(std::slice::from_raw_parts(p as *const u8, len))
    }
}

unsafe fn set_field_str(l: *mut lua_State, table: c_int, key: &CStr, value: &[u8]) {
    let t = ffi::lua_absindex(l, table);
    push_bytes(l, value);
    ffi::lua_setfield(l, t, key.as_ptr());
}

/// Pushes `{err = msg}`, the error object the built-in raises.
pub(crate) unsafe fn push_error_table(l: *mut lua_State, msg: &[u8]) {
    ffi::lua_createtable(l, 0, 1);
    push_str(l, "err");
    push_bytes(l, msg);
    ffi::lua_rawset(l, -3);
}

/// Raises `{err = msg}`. Callers must not hold values with destructors (a Lua error is a longjmp).
unsafe fn raise_error_table(l: *mut lua_State, msg: &[u8]) -> ! {
    push_error_table(l, msg);
    ffi::lua_error(l)
}

/// Runs a C function body, turning a Rust panic into a Lua error instead of unwinding into C.
/// The body returns `Err(())` after pushing an error value, to raise it once every Rust value is dropped.
unsafe fn guarded(l: *mut lua_State, body: impl FnOnce() -> Result<c_int, ()>) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(body));
    match r {
        Ok(Ok(n)) => n,
        Ok(Err(())) => ffi::lua_error(l),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            drop(payload);
            api::log(
                ptr::null_mut(),
                "warning",
                format!("panic in a Lua C function: {what}").as_bytes(),
            );
            drop(what);
            push_error_table(l, b"ERR rfunc internal error (panic), see the server log");
            ffi::lua_error(l)
        }
    }
}

// ----------------------------------------------------------------------------------------------------------
// The state-wide context: what is running now (load or call) and its per-run settings.

/// What a library body being loaded has registered so far.
pub struct LoadCtx {
    pub ctx: api::Ctx,
    pub functions: Vec<Registered>,
    /// 8.0 hosts check names at `register_function` time; later hosts after the body (rfunc checks in-library
    /// duplicates case-insensitively on every host, see SPEC rule 2).
    pub early_checks: bool,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
}

/// Per-call state of a running function.
pub struct RunCtx {
    pub ctx: api::Ctx,
    /// The function's registered name (see `function()`).
    pub function_ptr: *const str,
    /// The caller's command, for RFUNC.STATS (see `argv()`).
    pub argv_ptr: *const &'static [u8],
    pub argv_len: usize,
    /// The caller has no ACL user (the server refused a call as the caller): calls from now on are made without
    /// `C` (see `call::call_as_caller`).
    pub no_user: bool,
    /// Cluster mode: the slot the run's keys belong to (the declared keys', else the first key accessed), and
    /// whether the function may leave it (`allow-cross-slot-keys`).
    pub cluster: bool,
    pub slot: Option<u16>,
    pub allow_cross_slot: bool,
    /// Sent by the primary (or replayed from the AOF): not killable, no load timeout.
    pub from_primary: bool,
    pub read_only: bool,
    pub allow_oom: bool,
    pub resp3: bool,
    /// `server.set_repl` flags: bit 0 AOF, bit 1 replicas.
    pub repl: u8,
    pub wrote: bool,
    pub original_db: c_int,
    /// When the run started, on the server's monotonic clock (`rm::monotonic_us`).
    pub start_us: u64,
    pub busy_reported: bool,
    /// The run armed the KILL command filter (it yielded): it is removed when the run ends.
    pub filter_armed: bool,
    /// The caller's arguments as the server's strings (null when not known or not to be shared), and where the
    /// Lua strings of the first KEYS then ARGV entries live (see `caller_string`).
    pub raw_argv: *const *mut valkey_module::raw::RedisModuleString,
    /// Every argument of a call goes to the server as a string the run holds (`Host::calls_hold_arguments`).
    pub hold_args: bool,
    pub lua_args: [*const u8; LUA_ARGS],
    pub lua_args_len: u8,
}

/// How many KEYS / ARGV entries a run remembers for `RunCtx::caller_string`.
pub const LUA_ARGS: usize = 8;

/// A string the server keeps in the form it arrived in whoever holds it: short enough for the embedded encoding
/// (44 bytes, OBJ_ENCODING_EMBSTR_SIZE_LIMIT: a longer caller's string may carry spare room a fresh copy has
/// not), and unless `held`, not integer-like (those may become integers). Conservative: "007" or "-0" would
/// stay strings, but are not shared either.
fn stored_as_is(bytes: &[u8], held: bool) -> bool {
    const EMBSTR_LIMIT: usize = 44;
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    bytes.len() <= EMBSTR_LIMIT
        && (held || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit))
}

impl RunCtx {
    /// Microseconds since the run started.
    pub fn elapsed_us(&self) -> u64 {
        api::monotonic_us().saturating_sub(self.start_us)
    }

    /// The running function's name. Valid while it runs: the registry does not change during a run.
    pub fn function(&self) -> &str {
        // SAFETY: set from the registry's function entry, which outlives the run.
        unsafe { &*self.function_ptr }
    }

    /// The caller's command. Valid while the function runs: it points into the command's arguments.
    pub fn argv(&self) -> &[&[u8]] {
        // SAFETY: set from the running command's argument slice, which outlives the run.
        unsafe { std::slice::from_raw_parts(self.argv_ptr, self.argv_len) }
    }

    /// `s` is one of the caller's own argument strings (handed out by `caller_string`).
    pub fn is_caller_string(&self, s: *mut valkey_module::raw::RedisModuleString) -> bool {
        // SAFETY: raw_argv holds argv_len strings for the run.
        !self.raw_argv.is_null()
            && unsafe { std::slice::from_raw_parts(self.raw_argv, self.argv_len) }.contains(&s)
    }

    /// The caller's own argument string holding `bytes`, if `bytes` is a Lua string of a KEYS / ARGV entry
    /// (these are passed to the server by reference: no new object per call). The Lua string is recognised by
    /// where it lives: `call_entry` keeps those strings alive for the run, so no other string can live there.
    ///
    /// Only strings the server stores exactly as it would store a fresh copy are shared: it re-encodes an
    /// argument it keeps (an integer-like value becomes an integer, a long one is trimmed) only when nobody else
    /// holds it, and the caller's string is held by the caller. Where calls hold their arguments anyway
    /// (`hold_args`), integer-like strings are shared too. And only strings in the embedded encoding, as a
    /// fresh copy would be: a caller that used the inline protocol has its arguments in the raw encoding, and
    /// a raw string is stored raw.
    pub fn caller_string(
        &self,
        bytes: &[u8],
    ) -> Option<*mut valkey_module::raw::RedisModuleString> {
        if self.raw_argv.is_null() || !stored_as_is(bytes, self.hold_args) {
            return None;
        }
        let at = self.lua_args[..self.lua_args_len as usize]
            .iter()
            .position(|&p| p == bytes.as_ptr())?;
        let pos = 3 + at;
        let theirs = *self.argv().get(pos)?;
        debug_assert_eq!(theirs, bytes);
        // SAFETY: raw_argv holds argv_len strings for the run and pos < argv_len.
        let s = unsafe { *self.raw_argv.add(pos) };
        let shared = theirs.len() == bytes.len() && unsafe { api::is_embedded_string(s) };
        if shared {
            crate::info::count_arg_by_reference();
        }
        shared.then_some(s)
    }
}

enum Mode {
    Idle,
    Loading(*mut LoadCtx),
    Running(*mut RunCtx),
}

thread_local! {
    static MODE: Cell<ModeRaw> = const { Cell::new(ModeRaw::Idle) };
}

#[derive(Clone, Copy)]
enum ModeRaw {
    Idle,
    Loading(*mut LoadCtx),
    Running(*mut RunCtx),
}

fn mode() -> Mode {
    match MODE.with(|m| m.get()) {
        ModeRaw::Idle => Mode::Idle,
        ModeRaw::Loading(p) => Mode::Loading(p),
        ModeRaw::Running(p) => Mode::Running(p),
    }
}

fn set_mode(m: ModeRaw) -> ModeRaw {
    MODE.with(|c| c.replace(m))
}

/// The running function's context, from a Lua C function of state `l`: the same as `running()`, found through
/// the state rather than a thread-local.
pub unsafe fn running_in(l: *mut lua_State) -> Option<&'static mut RunCtx> {
    let p = memory_of(l).run.get();
    // SAFETY: set for the duration of a call on this state and cleared after.
    (!p.is_null()).then(|| &mut *p)
}

/// The running function's context, if a function is running (used by the command layer for STATS / KILL).
pub fn running() -> Option<&'static mut RunCtx> {
    match mode() {
        // SAFETY: the pointer is set for the duration of a call on this thread and cleared after.
        Mode::Running(p) => Some(unsafe { &mut *p }),
        _ => None,
    }
}

// ----------------------------------------------------------------------------------------------------------
// State construction.

/// The jobs the trampoline runs in protected mode.
enum Job<'a> {
    Init(&'a mut InitOut),
    Load {
        body: &'a [u8],
        out: &'a mut Result<(), Vec<u8>>,
    },
    /// Reads the error object of a failed call (the trampoline's second argument) into `out`.
    CallError(&'a mut CallOut),
}

/// What `call_entry` runs.
struct CallJob<'a> {
    run: *mut RunCtx,
    callback: c_int,
    keys: &'a [&'a [u8]],
    args: &'a [&'a [u8]],
}

#[derive(Default)]
struct InitOut {
    error_handler: c_int,
    proxy_meta: c_int,
    real_globals: c_int,
    load_api: c_int,
}

/// What a call produced: Ok (the reply was written) or the error text for the reply.
#[derive(Default)]
pub struct CallOut {
    pub error: Option<Vec<u8>>,
    /// The call ran out of memory: the garbage it left must go before the next call.
    pub out_of_memory: bool,
}

unsafe extern "C-unwind" fn trampoline(l: *mut lua_State) -> c_int {
    match &mut *(ffi::lua_touserdata(l, 1) as *mut Job) {
        Job::Init(out) => {
            ffi::lua_settop(l, 0);
            init_state(l, out)
        }
        Job::Load { body, out } => {
            ffi::lua_settop(l, 0);
            **out = load_body(l, body)
        }
        // The error object is the second argument.
        Job::CallError(out) => call_error(l, 2, out),
    }
    0
}

const BUSY_TEXT: &CStr =
    c"Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

impl LuaEngine {
    pub fn new() -> Result<LuaEngine, String> {
        let h = host::get();
        rfunc_lua_sys::set_hash_mode(if h.murmur_string_hash() {
            rfunc_lua_sys::HashMode::Murmur3
        } else {
            rfunc_lua_sys::HashMode::StockAllBytes
        });
        let mem = Box::new(Memory {
            refs: Cell::new(Refs::default()),
            used: Cell::new(0),
            limit_hit: Cell::new(false),
            blocks: Default::default(),
            run: Cell::new(ptr::null_mut()),
        });
        let l = unsafe { ffi::lua_newstate(l_alloc, &*mem as *const Memory as *mut c_void) };
        if l.is_null() {
            return Err("cannot create the Lua state (out of memory)".into());
        }
        let mut engine = LuaEngine {
            l,
            mem,
            trampoline: 0,
            call_entry: 0,
            calls: 0,
        };
        unsafe {
            // The entry points are created in a cpcall so even their allocations are protected.
            unsafe extern "C-unwind" fn make_entries(l: *mut lua_State) -> c_int {
                let refs = ffi::lua_touserdata(l, 1) as *mut [c_int; 2];
                ffi::lua_pushcfunction(l, trampoline);
                (*refs)[0] = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
                ffi::lua_pushcfunction(l, call_entry);
                (*refs)[1] = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
                0
            }
            let mut r: [c_int; 2] = [0; 2];
            if ffi::lua_cpcall(l, make_entries, &mut r as *mut [c_int; 2] as *mut c_void) != 0 {
                return Err("cannot initialise the Lua state".into());
            }
            engine.trampoline = r[0];
            engine.call_entry = r[1];
        }
        let mut out = InitOut::default();
        engine
            .run(Job::Init(&mut out))
            .map_err(|e| String::from_utf8_lossy(&e).into_owned())?;
        engine.mem.refs.set(Refs {
            proxy_meta: out.proxy_meta,
            real_globals: out.real_globals,
            load_api: out.load_api,
            error_handler: out.error_handler,
        });
        Ok(engine)
    }

    /// Runs a job in protected mode. Returns the Lua error message if the job itself failed (out of memory).
    fn run(&mut self, mut job: Job) -> Result<(), Vec<u8>> {
        let l = self.l;
        unsafe {
            ffi::lua_settop(l, 0);
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, self.trampoline as _);
            ffi::lua_pushlightuserdata(l, &mut job as *mut Job as *mut c_void);
            let status = ffi::lua_pcall(l, 1, 0, 0);
            let r = if status != 0 {
                let msg = if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                    to_bytes(l, -1).unwrap_or_default().to_vec()
                } else {
                    b"unknown Lua error".to_vec()
                };
                Err(msg)
            } else {
                Ok(())
            };
            ffi::lua_settop(l, 0);
            r
        }
    }

    /// Bytes used by the Lua heap.
    pub fn memory(&self) -> usize {
        self.mem.used.get()
    }

    /// Compiles and runs a library body (the code after the header line), collecting what it registers.
    /// `timeout`: apply the 500 ms load timeout (not for commands from the primary or the AOF).
    pub fn load_library(
        &mut self,
        ctx: api::Ctx,
        body: &[u8],
        timeout: bool,
    ) -> Result<Vec<Registered>, Vec<u8>> {
        let mut load = LoadCtx {
            ctx,
            functions: Vec::new(),
            early_checks: !host::get().late_name_checks(),
            deadline: timeout.then(|| Instant::now() + LOAD_TIMEOUT),
            timed_out: false,
        };
        let prev = set_mode(ModeRaw::Loading(&mut load));
        let mut out = Ok(());
        let job_result = self.run(Job::Load {
            body,
            out: &mut out,
        });
        set_mode(prev);
        let result = match (job_result, out) {
            (Err(e), _) => Err([b"Error registering functions: ".as_slice(), &e].concat()),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        };
        match result {
            Ok(()) => Ok(std::mem::take(&mut load.functions)),
            Err(e) => {
                self.release(&load.functions);
                Err(e)
            }
        }
    }

    /// Drops the registry references of functions (a failed load, a deleted or replaced library).
    pub fn release(&mut self, functions: &[Registered]) {
        for f in functions {
            unsafe { ffi::luaL_unref(self.l, ffi::LUA_REGISTRYINDEX, f.callback) };
        }
    }

    /// Runs a function and writes its reply (or error) to the client of `run.ctx`.
    pub fn call(
        &mut self,
        run: &mut RunCtx,
        callback: c_int,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> CallOut {
        let mut out = CallOut::default();
        // A refusal that an earlier run caught with pcall must not colour this run's errors.
        self.mem.limit_hit.set(false);
        let function = run.function_ptr;
        let run_ptr: *mut RunCtx = run;
        let prev = set_mode(ModeRaw::Running(run_ptr));
        self.mem.run.set(run_ptr);
        let l = self.l;
        let mut job = CallJob {
            run: run_ptr,
            callback,
            keys,
            args,
        };
        unsafe {
            ffi::lua_sethook(l, Some(run_hook), ffi::LUA_MASKCOUNT, HOOK_EVERY);
            // One protected call with the error handler: `call_entry` builds KEYS and ARGV, calls the function
            // and writes its reply, all inside it.
            ffi::lua_settop(l, 0);
            ffi::lua_rawgeti(
                l,
                ffi::LUA_REGISTRYINDEX,
                self.mem.refs.get().error_handler as _,
            );
            ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, self.call_entry as _);
            ffi::lua_pushlightuserdata(l, &mut job as *mut CallJob as *mut c_void);
            let status = ffi::lua_pcall(l, 1, 0, 1);
            if status == ffi::LUA_ERRMEM {
                out.out_of_memory = true;
                let mut m = memory_error(l);
                m.extend_from_slice(b" script: ");
                m.extend_from_slice((*function).as_bytes());
                out.error = Some(m);
            } else if status != 0 {
                // Reading the error object allocates: that too runs protected.
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, self.trampoline as _);
                let mut job = Job::CallError(&mut out);
                ffi::lua_pushlightuserdata(l, &mut job as *mut Job as *mut c_void);
                ffi::lua_pushvalue(l, -3);
                if ffi::lua_pcall(l, 2, 0, 0) != 0 {
                    out.error =
                        Some(b"ERR out of memory reading the error of the function".to_vec());
                    out.out_of_memory = true;
                }
            }
            ffi::lua_settop(l, 0);
            ffi::lua_sethook(l, None, 0, 0);
        }
        self.mem.run.set(ptr::null_mut());
        set_mode(prev);
        if out.out_of_memory {
            unsafe { ffi::lua_gc(self.l, ffi::LUA_GCCOLLECT, 0) };
        }
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(50) {
            // The built-in's pacing: a small incremental GC step every 50 calls, never a full collection.
            unsafe { ffi::lua_gc(self.l, ffi::LUA_GCSTEP, 50) };
        }
        out
    }
}

impl Drop for LuaEngine {
    fn drop(&mut self) {
        unsafe { ffi::lua_close(self.l) };
    }
}

/// Builds the globals, the libraries, the `server` API and the sandbox (reference engine §3).
///
/// `pairs()` order over a Lua table depends on the exact sequence of insertions (keys later set to nil stay
/// as dead nodes until a rehash), on the sizes given at creation and on the string hash. So this follows the
/// server's construction step by step (`luaRegisterServerAPI`, the error-handler chunk, the lock and
/// `luaFunctionInitializeLuaState`), with the same table sizes and the same insertions, so every table
/// function code can reach iterates in the built-in's order.
unsafe fn init_state(l: *mut lua_State, out: &mut InitOut) {
    // 1. The allow-list `__newindex` on the globals: names the server denies (print, dofile, loadfile, and
    // getfenv/setfenv/newproxy from 8.1 on) never get a value, but leave the same nil-valued nodes behind.
    ffi::lua_createtable(l, 0, 0);
    ffi::lua_pushcfunction(l, allow_list_newindex);
    ffi::lua_setfield(l, -2, c"__newindex".as_ptr());
    ffi::lua_setmetatable(l, ffi::LUA_GLOBALSINDEX);

    // 2. luaLoadLibraries: base, table, string, math, debug, os, cjson, struct, cmsgpack, bit.
    for (open, name) in [
        (ffi::luaopen_base as ffi::lua_CFunction, c""),
        (ffi::luaopen_table, c"table"),
        (ffi::luaopen_string, c"string"),
        (ffi::luaopen_math, c"math"),
    ] {
        ffi::lua_pushcfunction(l, open);
        ffi::lua_pushstring(l, name.as_ptr());
        ffi::lua_call(l, 1, 0);
    }
    // `debug` is in the server's globals until the error-handler chunk nils it; function code never sees it,
    // but its key stays behind in the globals (a dead node), so the same key is inserted here and nil'ed below.
    ffi::lua_createtable(l, 0, 0);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"debug".as_ptr());
    // The server's `os` library is patched to `os.clock` only: `luaL_register(L, "os", {clock})`.
    ffi::lua_createtable(l, 0, 1);
    ffi::lua_pushvalue(l, -1);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"os".as_ptr());
    ffi::lua_pushcfunction(l, os_clock);
    ffi::lua_setfield(l, -2, c"clock".as_ptr());
    ffi::lua_pop(l, 1);
    super::libs::open_all(l);

    // 3. pcall returns the `err` string of error tables.
    ffi::lua_pushcfunction(l, pcall_wrapper);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"pcall".as_ptr());

    // 4. server / redis (one table under two names), filled in the server's order.
    ffi::lua_createtable(l, 0, 0);
    let server = ffi::lua_gettop(l);
    set_fn(l, server, c"call", server_call);
    set_fn(l, server, c"pcall", server_pcall);
    push_log_fields(l, server);
    push_version_fields(l, server);
    set_fn(l, server, c"setresp", server_setresp);
    set_fn(l, server, c"sha1hex", server_sha1hex);
    set_fn(l, server, c"error_reply", server_error_reply);
    set_fn(l, server, c"status_reply", server_status_reply);
    set_fn(l, server, c"set_repl", server_set_repl);
    for (name, v) in [
        (c"REPL_NONE", 0),
        (c"REPL_AOF", 1),
        (c"REPL_SLAVE", 2),
        (c"REPL_REPLICA", 2),
        (c"REPL_ALL", 3),
    ] {
        set_num(l, server, name, v);
    }
    set_fn(l, server, c"acl_check_cmd", server_acl_check_cmd);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"server".as_ptr());
    ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"server".as_ptr());
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"redis".as_ptr());
    // math.random / randomseed: the server's portable PRNG.
    ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"math".as_ptr());
    set_fn(l, -1, c"random", math_random);
    set_fn(l, -1, c"randomseed", math_randomseed);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"math".as_ptr());

    // 5. The error handler lives in the registry; the server's handler chunk runs `debug = nil`.
    ffi::lua_pushnil(l);
    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"debug".as_ptr());
    // 8.0 still allowed these (later releases deny them); rfunc never exposes them (SPEC rule 2), but their
    // keys stay as dead nodes so every other global sits where the built-in has it. Only where they were
    // inserted: any assignment to a missing key adds a node (Lua's `luaV_settable` creates the key before it
    // looks for `__newindex`), which can move a colliding key to another slot.
    if !host::get().at_least(8, 1) {
        for name in DEPRECATED_BUILTINS {
            ffi::lua_pushnil(l);
            ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, name.as_ptr());
        }
    }
    ffi::lua_pushcfunction(l, error_handler);
    out.error_handler = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);

    // 6. Lock the real globals: reading a missing name raises (this replaces the allow-list metatable), every
    // reachable table becomes read-only.
    ffi::lua_pushvalue(l, ffi::LUA_GLOBALSINDEX);
    let globals = ffi::lua_gettop(l);
    push_error_metatable(l);
    ffi::lua_setmetatable(l, globals);
    make_readonly_deep(l, globals);
    // The metatables of the basic types (string's is the only one set) are read-only too.
    push_str(l, "");
    if ffi::lua_getmetatable(l, -1) != 0 {
        rfunc_lua_sys::enable_readonly_table(l.cast(), -1, true);
        ffi::lua_pop(l, 1);
    }
    ffi::lua_pop(l, 1);
    ffi::lua_pushvalue(l, globals);
    out.real_globals = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);

    // 7. The load-time API: { server = <load api>, redis = <same> }, both with the error metatable.
    ffi::lua_createtable(l, 0, 0);
    let load_api = ffi::lua_gettop(l);
    ffi::lua_createtable(l, 0, 0);
    let load_server = ffi::lua_gettop(l);
    set_fn(l, load_server, c"register_function", register_function);
    push_log_fields(l, load_server);
    push_version_fields(l, load_server);
    push_error_metatable(l);
    ffi::lua_setmetatable(l, load_server);
    rfunc_lua_sys::enable_readonly_table(l.cast(), load_server, true);
    ffi::lua_setfield(l, load_api, c"server".as_ptr());
    ffi::lua_getfield(l, load_api, c"server".as_ptr());
    ffi::lua_setfield(l, load_api, c"redis".as_ptr());
    push_error_metatable(l);
    ffi::lua_setmetatable(l, load_api);
    rfunc_lua_sys::enable_readonly_table(l.cast(), load_api, true);
    out.load_api = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);

    // The globals function code sees: an empty read-only proxy whose metatable's __index is swapped between the
    // load API (while a library body runs) and the real globals (at call time).
    ffi::lua_createtable(l, 0, 0);
    let proxy = ffi::lua_gettop(l);
    ffi::lua_createtable(l, 0, 0);
    let meta = ffi::lua_gettop(l);
    ffi::lua_pushvalue(l, globals);
    ffi::lua_setfield(l, meta, c"__index".as_ptr());
    ffi::lua_pushvalue(l, meta);
    out.proxy_meta = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
    ffi::lua_setmetatable(l, proxy);
    rfunc_lua_sys::enable_readonly_table(l.cast(), proxy, true);
    ffi::lua_pushvalue(l, proxy);
    ffi::lua_replace(l, ffi::LUA_GLOBALSINDEX);
    ffi::lua_settop(l, 0);
}

/// Base-library names the server inserted into the globals before they were put behind
/// `lua-enable-insecure-api` (8.0 and older).
const DEPRECATED_BUILTINS: [&CStr; 3] = [c"newproxy", c"setfenv", c"getfenv"];

/// The globals the server's allow-list `__newindex` lets through while the state is built (`script_lua.c`):
/// libraries, the API names, the builtins and `debug` (nil'ed once the error handler exists).
const ALLOWED_GLOBALS: [&str; 37] = [
    // libraries
    "string",
    "cjson",
    "bit",
    "cmsgpack",
    "math",
    "table",
    "struct",
    "os",
    // API
    "server",
    "redis",
    "__redis__err__handler",
    "__server__err__handler",
    // builtins
    "xpcall",
    "tostring",
    "setmetatable",
    "next",
    "assert",
    "tonumber",
    "rawequal",
    "collectgarbage",
    "getmetatable",
    "rawset",
    "pcall",
    "coroutine",
    "type",
    "_G",
    "select",
    "unpack",
    "gcinfo",
    "pairs",
    "rawget",
    "loadstring",
    "ipairs",
    "_VERSION",
    "load",
    "error",
    // removed after initialisation
    "debug",
];

/// `__newindex(t, k, v)` on the globals while the state is built: sets allowed names, drops the rest (`print`,
/// `dofile`, `loadfile`, ...). As in the server, a dropped name still leaves a nil-valued node behind: Lua
/// creates the key before it calls `__newindex`.
unsafe extern "C-unwind" fn allow_list_newindex(l: *mut lua_State) -> c_int {
    let allowed = match to_bytes(l, 2) {
        Some(name) => {
            ALLOWED_GLOBALS.iter().any(|a| a.as_bytes() == name)
                || (!host::get().at_least(8, 1)
                    && DEPRECATED_BUILTINS.iter().any(|d| d.to_bytes() == name))
        }
        None => false,
    };
    if allowed {
        ffi::lua_settop(l, 3);
        ffi::lua_rawset(l, 1);
    }
    0
}

unsafe fn set_fn(l: *mut lua_State, t: c_int, name: &CStr, f: ffi::lua_CFunction) {
    let t = ffi::lua_absindex(l, t);
    ffi::lua_pushcfunction(l, f);
    ffi::lua_setfield(l, t, name.as_ptr());
}

unsafe fn set_num(l: *mut lua_State, t: c_int, name: &CStr, v: i64) {
    let t = ffi::lua_absindex(l, t);
    ffi::lua_pushnumber(l, v as f64);
    ffi::lua_setfield(l, t, name.as_ptr());
}

/// `luaRegisterLogFunction`: `log` and the `LOG_*` levels (also visible at load time).
unsafe fn push_log_fields(l: *mut lua_State, t: c_int) {
    set_fn(l, t, c"log", server_log);
    for (name, level) in [
        (c"LOG_DEBUG", 0),
        (c"LOG_VERBOSE", 1),
        (c"LOG_NOTICE", 2),
        (c"LOG_WARNING", 3),
    ] {
        set_num(l, t, name, level);
    }
}

/// `luaRegisterVersion`: the version fields (also visible at load time).
unsafe fn push_version_fields(l: *mut lua_State, t: c_int) {
    let h = host::get();
    set_num(l, t, c"REDIS_VERSION_NUM", h.redis_version_num());
    set_field_str(l, t, c"REDIS_VERSION", h.redis_version_text.as_bytes());
    set_num(l, t, c"VALKEY_VERSION_NUM", h.version_num());
    set_field_str(l, t, c"VALKEY_VERSION", h.version_text.as_bytes());
    set_field_str(l, t, c"SERVER_NAME", h.server_name.as_bytes());
}

/// Pushes `{__index = <raise "nonexistent global variable">}`, read-only.
unsafe fn push_error_metatable(l: *mut lua_State) {
    ffi::lua_createtable(l, 0, 1);
    ffi::lua_pushcfunction(l, nonexistent_global);
    ffi::lua_setfield(l, -2, c"__index".as_ptr());
    rfunc_lua_sys::enable_readonly_table(l.cast(), -1, true);
}

unsafe extern "C-unwind" fn nonexistent_global(l: *mut lua_State) -> c_int {
    // (table, key): the message names the key; raised with the caller's position like luaL_error.
    let key = to_bytes(l, 2).map(|b| b.to_vec()).unwrap_or_default();
    ffi::luaL_where(l, 1);
    push_bytes(
        l,
        b"Script attempted to access nonexistent global variable '",
    );
    push_bytes(l, &key);
    push_bytes(l, b"'");
    drop(key);
    ffi::lua_concat(l, 4);
    ffi::lua_error(l)
}

/// Marks the table at `idx` and every table reachable from it (values and metatables) read-only.
unsafe fn make_readonly_deep(l: *mut lua_State, idx: c_int) {
    let idx = ffi::lua_absindex(l, idx);
    if rfunc_lua_sys::is_readonly_table(l.cast(), idx) {
        return;
    }
    rfunc_lua_sys::enable_readonly_table(l.cast(), idx, true);
    if ffi::lua_getmetatable(l, idx) != 0 {
        make_readonly_deep(l, -1);
        ffi::lua_pop(l, 1);
    }
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, idx) != 0 {
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            make_readonly_deep(l, -1);
        }
        ffi::lua_pop(l, 1);
    }
}

// ----------------------------------------------------------------------------------------------------------
// Loading a library.

unsafe fn swap_globals_index(l: *mut lua_State, to_ref: c_int) {
    // proxy_meta.__index = registry[to_ref]; the metatable is writable (only the proxy is read-only).
    let engine_refs = memory_of(l).refs.get();
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, engine_refs.proxy_meta as _);
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, to_ref as _);
    ffi::lua_setfield(l, -2, c"__index".as_ptr());
    ffi::lua_pop(l, 1);
}

#[derive(Clone, Copy, Default)]
struct Refs {
    proxy_meta: c_int,
    real_globals: c_int,
    load_api: c_int,
    error_handler: c_int,
}

unsafe fn load_body(l: *mut lua_State, body: &[u8]) -> Result<(), Vec<u8>> {
    let refs = memory_of(l).refs.get();
    if ffi::luaL_loadbuffer(
        l,
        body.as_ptr() as *const c_char,
        body.len(),
        CHUNK_NAME.as_ptr(),
    ) != 0
    {
        let msg = to_bytes(l, -1).unwrap_or_default().to_vec();
        ffi::lua_pop(l, 1);
        return Err([b"Error compiling function: ".as_slice(), &msg].concat());
    }
    let func = ffi::lua_gettop(l);
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, refs.error_handler as _);
    ffi::lua_insert(l, func);
    swap_globals_index(l, refs.load_api);
    ffi::lua_sethook(l, Some(load_hook), ffi::LUA_MASKCOUNT, HOOK_EVERY);
    let status = ffi::lua_pcall(l, 0, 0, func);
    ffi::lua_sethook(l, None, 0, 0);
    swap_globals_index(l, refs.real_globals);
    if status == ffi::LUA_ERRMEM {
        ffi::lua_settop(l, 0);
        return Err([
            b"Error registering functions: ".as_slice(),
            &memory_error(l),
        ]
        .concat());
    }
    if status != 0 {
        let msg = error_message(l, -1).0;
        ffi::lua_settop(l, 0);
        return Err([b"Error registering functions: ".as_slice(), &msg].concat());
    }
    ffi::lua_settop(l, 0);
    Ok(())
}

unsafe extern "C-unwind" fn load_hook(l: *mut lua_State, _ar: *mut ffi::lua_Debug) {
    let Mode::Loading(p) = mode() else { return };
    let load = &mut *p;
    if let Some(deadline) = load.deadline {
        if load.timed_out || Instant::now() > deadline {
            load.timed_out = true;
            // From now on the hook fires on every line, so a pcall in the body cannot swallow the timeout.
            ffi::lua_sethook(l, Some(load_hook), ffi::LUA_MASKLINE, 0);
            push_bytes(l, b"FUNCTION LOAD timeout");
            ffi::lua_error(l);
        }
    }
}

unsafe extern "C-unwind" fn register_function(l: *mut lua_State) -> c_int {
    guarded(l, || register_function_inner(l))
}

unsafe fn register_function_inner(l: *mut lua_State) -> Result<c_int, ()> {
    let Mode::Loading(p) = mode() else {
        push_error_table(
            l,
            b"ERR server.register_function can only be called on FUNCTION LOAD command",
        );
        return Err(());
    };
    let load = &mut *p;
    let mut callback: Option<c_int> = None;
    let parsed = parse_registration(l, &mut callback);
    let checked = parsed.and_then(|(name, description, flags)| {
        if load.early_checks {
            check_function_name(&load.functions, &name)?;
        }
        Ok((name, description, flags))
    });
    match checked {
        Ok((name, description, flags)) => {
            load.functions.push(Registered {
                name: String::from_utf8_lossy(&name).into_owned(),
                callback: callback.expect("callback referenced"),
                description,
                flags,
                stats: FunctionStats::default(),
            });
            Ok(0)
        }
        Err(msg) => {
            if let Some(r) = callback {
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
            }
            push_error_table(l, format!("ERR {msg}").as_bytes());
            Err(())
        }
    }
}

type Registration = (Vec<u8>, Option<Vec<u8>>, FunctionFlags);

/// Reads `register_function`'s arguments (positional or named). On success `callback` holds a registry
/// reference to the callback.
unsafe fn parse_registration(
    l: *mut lua_State,
    callback: &mut Option<c_int>,
) -> Result<Registration, &'static str> {
    let argc = ffi::lua_gettop(l);
    if argc == 2 {
        if !matches!(ffi::lua_type(l, 1), ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
            return Err("first argument to server.register_function must be a string");
        }
        if ffi::lua_type(l, 2) != ffi::LUA_TFUNCTION {
            return Err("second argument to server.register_function must be a function");
        }
        let name = to_bytes(l, 1).unwrap_or_default().to_vec();
        ffi::lua_pushvalue(l, 2);
        *callback = Some(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
        return Ok((name, None, FunctionFlags::empty()));
    }
    if argc != 1 {
        return Err("wrong number of arguments to server.register_function");
    }
    if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
        return Err("calling server.register_function with a single argument is only applicable to Lua table (representing named arguments).");
    }
    let mut name: Option<Vec<u8>> = None;
    let mut description: Option<Vec<u8>> = None;
    let mut flags = FunctionFlags::empty();
    ffi::lua_pushnil(l);
    while ffi::lua_next(l, 1) != 0 {
        match ffi::lua_type(l, -2) {
            ffi::LUA_TSTRING => {}
            // A number key is a string to Lua's API, just never one of the names.
            ffi::LUA_TNUMBER => return Err("unknown argument given to server.register_function"),
            _ => {
                return Err("named argument key given to server.register_function is not a string")
            }
        }
        let key = to_bytes(l, -2).unwrap_or_default().to_ascii_lowercase();
        match key.as_slice() {
            b"function_name" => {
                if !matches!(ffi::lua_type(l, -1), ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
                    return Err(
                        "function_name argument given to server.register_function must be a string",
                    );
                }
                // Convert a copy: lua_tolstring would turn a number key's value into a string in place and
                // confuse lua_next.
                ffi::lua_pushvalue(l, -1);
                name = Some(to_bytes(l, -1).unwrap_or_default().to_vec());
                ffi::lua_pop(l, 1);
            }
            b"callback" => {
                if ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION {
                    return Err(
                        "callback argument given to server.register_function must be a function",
                    );
                }
                ffi::lua_pushvalue(l, -1);
                let r = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
                if let Some(old) = callback.replace(r) {
                    ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, old);
                }
            }
            b"description" => {
                if !matches!(ffi::lua_type(l, -1), ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
                    return Err(
                        "description argument given to server.register_function must be a string",
                    );
                }
                ffi::lua_pushvalue(l, -1);
                description = Some(to_bytes(l, -1).unwrap_or_default().to_vec());
                ffi::lua_pop(l, 1);
            }
            b"flags" => {
                if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
                    return Err("flags argument to server.register_function must be a table representing function flags");
                }
                let ft = ffi::lua_gettop(l);
                let mut i = 1;
                loop {
                    ffi::lua_rawgeti(l, ft, i);
                    if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
                        ffi::lua_pop(l, 1);
                        break;
                    }
                    let flag = if ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                        to_bytes(l, -1).and_then(FunctionFlags::from_name)
                    } else {
                        None
                    };
                    ffi::lua_pop(l, 1);
                    match flag {
                        Some(f) => flags.insert(f),
                        None => return Err("unknown flag given"),
                    }
                    i += 1;
                }
            }
            _ => return Err("unknown argument given to server.register_function"),
        }
        ffi::lua_pop(l, 1);
    }
    let Some(name) = name else {
        return Err("server.register_function must get a function name argument");
    };
    if callback.is_none() {
        return Err("server.register_function must get a callback argument");
    }
    Ok((name, description, flags))
}

/// The name checks the registry applies to a library's functions, with the server's texts.
pub fn check_function_name(existing: &[Registered], name: &[u8]) -> Result<(), &'static str> {
    if !is_valid_name(name) {
        return Err(
            "Function names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        );
    }
    if existing
        .iter()
        .any(|f| f.name.as_bytes().eq_ignore_ascii_case(name))
    {
        return Err("Function already exists in the library");
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------------------
// Errors.

/// The error handler: turns any error value into `{err=..., source=..., line=...}` (reference engine §2.6).
unsafe extern "C-unwind" fn error_handler(l: *mut lua_State) -> c_int {
    let mut ar: ffi::lua_Debug = std::mem::zeroed();
    let mut have =
        ffi::lua_getstack(l, 1, &mut ar) != 0 && ffi::lua_getinfo(l, c"nSl".as_ptr(), &mut ar) != 0;
    if have && !ar.what.is_null() && CStr::from_ptr(ar.what) == c"C" {
        have = ffi::lua_getstack(l, 2, &mut ar) != 0
            && ffi::lua_getinfo(l, c"nSl".as_ptr(), &mut ar) != 0;
    }
    ffi::lua_createtable(l, 0, 3);
    let t = ffi::lua_gettop(l);
    push_str(l, "err");
    if ffi::lua_type(l, 1) == ffi::LUA_TTABLE {
        push_str(l, "err");
        ffi::lua_rawget(l, 1);
    } else {
        push_str(l, "ERR ");
        push_tostring(l, 1);
        ffi::lua_concat(l, 2);
    }
    ffi::lua_rawset(l, t);
    if have && !ar.source.is_null() {
        set_field_str(l, t, c"source", CStr::from_ptr(ar.source).to_bytes());
        ffi::lua_pushnumber(l, ar.currentline as f64);
        ffi::lua_setfield(l, t, c"line".as_ptr());
    }
    1
}

/// Pushes what Lua's `tostring` gives for the value at `idx`, without calling metamethods.
unsafe fn push_tostring(l: *mut lua_State, idx: c_int) {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TNUMBER | ffi::LUA_TSTRING => {
            ffi::lua_pushvalue(l, idx);
            ffi::lua_tolstring(l, -1, ptr::null_mut());
        }
        ffi::LUA_TNIL => push_str(l, "nil"),
        ffi::LUA_TBOOLEAN => push_str(
            l,
            if ffi::lua_toboolean(l, idx) != 0 {
                "true"
            } else {
                "false"
            },
        ),
        t => {
            let name = CStr::from_ptr(ffi::lua_typename(l, t))
                .to_string_lossy()
                .into_owned();
            let s = format!("{name}: {:p}", ffi::lua_topointer(l, idx));
            push_str(l, &s);
        }
    }
}

/// Reads an error object produced by the error handler: (message, Some((source, line))).
unsafe fn error_message(l: *mut lua_State, idx: c_int) -> (Vec<u8>, Option<(Vec<u8>, i64)>) {
    let idx = ffi::lua_absindex(l, idx);
    if ffi::lua_type(l, idx) != ffi::LUA_TTABLE {
        // The handler itself failed (e.g. out of memory while building the table).
        let text = to_bytes(l, idx).map(|b| b.to_vec()).unwrap_or_default();
        let text = &text[..text.len().min(100)];
        return (
            [b"ERR Error running script, ".as_slice(), text].concat(),
            None,
        );
    }
    push_str(l, "err");
    ffi::lua_rawget(l, idx);
    let msg = if ffi::lua_isstring(l, -1) != 0 {
        to_bytes(l, -1).unwrap_or_default().to_vec()
    } else {
        b"ERR unknown error".to_vec()
    };
    ffi::lua_pop(l, 1);
    push_str(l, "source");
    ffi::lua_rawget(l, idx);
    push_str(l, "line");
    ffi::lua_rawget(l, idx);
    let pos =
        if ffi::lua_type(l, -2) == ffi::LUA_TSTRING && ffi::lua_type(l, -1) == ffi::LUA_TNUMBER {
            Some((
                to_bytes(l, -2).unwrap_or_default().to_vec(),
                ffi::lua_tonumber(l, -1) as i64,
            ))
        } else {
            None
        };
    ffi::lua_pop(l, 2);
    (msg, pos)
}

// ----------------------------------------------------------------------------------------------------------
// Calling a function.

/// A function call, in protected mode with the error handler: builds KEYS and ARGV, calls the function and
/// writes its reply. Only plain data lives in this frame: a Lua error unwinds it with longjmp.
unsafe extern "C-unwind" fn call_entry(l: *mut lua_State) -> c_int {
    let job = &*(ffi::lua_touserdata(l, 1) as *const CallJob);
    ffi::lua_settop(l, 0);
    // The first entries' Lua strings stay in this frame's stack slots for the whole run, out of the function's
    // reach, so where they live identifies them (`RunCtx::caller_string`; entry n is the caller's argv[3 + n]).
    let mut seen = [ptr::null::<u8>(); LUA_ARGS];
    let mut n = 0;
    for v in job.keys.iter().chain(job.args).take(LUA_ARGS) {
        push_bytes(l, v);
        seen[n] = ffi::lua_tolstring(l, -1, ptr::null_mut()) as *const u8;
        n += 1;
    }
    ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, job.callback as _);
    let mut entry = 0;
    for list in [job.keys, job.args] {
        ffi::lua_createtable(l, list.len() as c_int, 0);
        for (i, v) in list.iter().enumerate() {
            if entry < n {
                ffi::lua_pushvalue(l, entry as c_int + 1);
            } else {
                push_bytes(l, v);
            }
            entry += 1;
            ffi::lua_rawseti(l, -2, (i + 1) as _);
        }
    }
    {
        let run = &mut *job.run;
        run.lua_args = seen;
        run.lua_args_len = n as u8;
    }
    ffi::lua_call(l, 2, 1);
    let run = &*job.run;
    super::reply::lua_to_reply(l, run.ctx, ffi::lua_gettop(l), run.resp3, 0);
    0
}

/// The error text of a failed call from the error object at `idx` (the built-in's `script: <name>, on
/// <source>:<line>.` suffix when the handler found the position).
unsafe fn call_error(l: *mut lua_State, idx: c_int, out: &mut CallOut) {
    let run = running().expect("a function is running");
    let (msg, pos) = error_message(l, idx);
    out.error = Some(match pos {
        Some((source, line)) => {
            let mut m = msg;
            m.extend_from_slice(b" script: ");
            m.extend_from_slice(run.function().as_bytes());
            m.extend_from_slice(b", on ");
            m.extend_from_slice(&source);
            m.extend_from_slice(format!(":{line}.").as_bytes());
            m
        }
        None => msg,
    });
}

unsafe extern "C-unwind" fn run_hook(l: *mut lua_State, _ar: *mut ffi::lua_Debug) {
    let Some(run) = running() else { return };
    if super::kill_requested() {
        // Fire on every line from now on, so a pcall cannot swallow the kill.
        ffi::lua_sethook(l, Some(run_hook), ffi::LUA_MASKLINE, 0);
        raise_error_table(l, host::get().killed_message().as_bytes());
    }
    super::on_busy_tick(run);
    api::yield_clients(run.ctx, BUSY_TEXT);
    if super::kill_requested() {
        ffi::lua_sethook(l, Some(run_hook), ffi::LUA_MASKLINE, 0);
        raise_error_table(l, host::get().killed_message().as_bytes());
    }
}

// ----------------------------------------------------------------------------------------------------------
// Base library replacements.

unsafe extern "C-unwind" fn pcall_wrapper(l: *mut lua_State) -> c_int {
    // The server's pcall: like Lua's, but an error table with a string `err` comes back as that string.
    let argc = ffi::lua_gettop(l);
    ffi::lua_pushboolean(l, 1);
    ffi::lua_insert(l, 1);
    if ffi::lua_pcall(l, argc - 1, ffi::LUA_MULTRET, 0) != 0 {
        ffi::lua_remove(l, 1);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_getfield(l, -1, c"err".as_ptr());
            if ffi::lua_isstring(l, -1) != 0 {
                ffi::lua_replace(l, -2);
            } else {
                ffi::lua_pop(l, 1);
            }
        }
        ffi::lua_pushboolean(l, 0);
        ffi::lua_insert(l, 1);
    }
    ffi::lua_gettop(l)
}

unsafe extern "C-unwind" fn os_clock(l: *mut lua_State) -> c_int {
    extern "C" {
        fn clock() -> libc::c_long;
    }
    // POSIX fixes CLOCKS_PER_SEC at one million.
    ffi::lua_pushnumber(l, clock() as f64 / 1_000_000.0);
    1
}

/// The server's `serverLrand48`: the 48-bit LCG of lrand48 with a fixed start state, the same everywhere.
struct Rand48(Cell<u64>);
// SAFETY: only used from the main thread (Lua runs there).
unsafe impl Sync for Rand48 {}
static RAND48: Rand48 = Rand48(Cell::new(0x1234_ABCD_330E));
const LRAND48_MAX: i64 = i32::MAX as i64;

fn lrand48() -> i64 {
    let x = RAND48.0.get().wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB) & 0xFFFF_FFFF_FFFF;
    RAND48.0.set(x);
    (x >> 17) as i64
}

unsafe extern "C-unwind" fn math_random(l: *mut lua_State) -> c_int {
    let r = (lrand48() % LRAND48_MAX) as f64 / LRAND48_MAX as f64;
    match ffi::lua_gettop(l) {
        0 => ffi::lua_pushnumber(l, r),
        1 => {
            let u = ffi::luaL_checkinteger(l, 1) as c_int;
            if u < 1 {
                ffi::luaL_argerror(l, 1, c"interval is empty".as_ptr());
            }
            ffi::lua_pushnumber(l, (r * u as f64).floor() + 1.0);
        }
        2 => {
            let lo = ffi::luaL_checkinteger(l, 1) as c_int;
            let up = ffi::luaL_checkinteger(l, 2) as c_int;
            if lo > up {
                ffi::luaL_argerror(l, 2, c"interval is empty".as_ptr());
            }
            ffi::lua_pushnumber(l, (r * (up as f64 - lo as f64 + 1.0)).floor() + lo as f64);
        }
        _ => {
            ffi::luaL_error(l, c"wrong number of arguments".as_ptr());
        }
    }
    1
}

unsafe extern "C-unwind" fn math_randomseed(l: *mut lua_State) -> c_int {
    let seed = ffi::luaL_checkinteger(l, 1) as i32 as u32 as u64;
    RAND48.0.set((seed << 16) | 0x330E);
    0
}

// ----------------------------------------------------------------------------------------------------------
// server.* functions.

unsafe extern "C-unwind" fn server_call(l: *mut lua_State) -> c_int {
    guarded(l, || super::call::server_call(l, true))
}

unsafe extern "C-unwind" fn server_pcall(l: *mut lua_State) -> c_int {
    guarded(l, || super::call::server_call(l, false))
}

unsafe extern "C-unwind" fn server_acl_check_cmd(l: *mut lua_State) -> c_int {
    guarded(l, || super::call::acl_check_cmd(l))
}

unsafe extern "C-unwind" fn server_log(l: *mut lua_State) -> c_int {
    guarded(l, || {
        let argc = ffi::lua_gettop(l);
        if argc < 2 {
            push_error_table(l, b"ERR server.log() requires two arguments or more.");
            return Err(());
        }
        if ffi::lua_isnumber(l, 1) == 0 {
            push_error_table(l, b"ERR First argument must be a number (log level).");
            return Err(());
        }
        let level = ffi::lua_tonumber(l, 1) as i64;
        if !(0..=3).contains(&level) {
            push_error_table(l, b"ERR Invalid log level.");
            return Err(());
        }
        let mut msg = Vec::new();
        for i in 2..=argc {
            if matches!(ffi::lua_type(l, i), ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
                if !msg.is_empty() {
                    msg.push(b' ');
                }
                ffi::lua_pushvalue(l, i);
                msg.extend_from_slice(to_bytes(l, -1).unwrap_or_default());
                ffi::lua_pop(l, 1);
            }
        }
        let level = ["debug", "verbose", "notice", "warning"][level as usize];
        let ctx = match mode() {
            Mode::Running(r) => (*r).ctx,
            Mode::Loading(ld) => (*ld).ctx,
            Mode::Idle => ptr::null_mut(),
        };
        api::log(ctx, level, &msg);
        Ok(0)
    })
}

unsafe extern "C-unwind" fn server_sha1hex(l: *mut lua_State) -> c_int {
    guarded(l, || {
        if ffi::lua_gettop(l) != 1 {
            push_error_table(l, b"ERR wrong number of arguments");
            return Err(());
        }
        let data = to_bytes(l, 1).map(|b| b.to_vec()).unwrap_or_default();
        let hex = sha1_smol::Sha1::from(&data).digest().to_string();
        push_str(l, &hex);
        Ok(1)
    })
}

/// `server.error_reply` / `status_reply` return (never raise) a table; bad arguments give an error table.
unsafe fn reply_table(l: *mut lua_State, field: &CStr, error: bool) -> c_int {
    if ffi::lua_gettop(l) != 1 || ffi::lua_type(l, 1) != ffi::LUA_TSTRING {
        push_error_table(l, b"ERR wrong number or type of arguments");
        return 1;
    }
    let s = to_bytes(l, 1).unwrap_or_default();
    ffi::lua_createtable(l, 0, 1);
    if error {
        // `-CODE msg` loses its dash; a code-less message is kept as is (the reply adds nothing).
        let s = s.strip_prefix(b"-").unwrap_or(s);
        let v = if s.is_empty() { b"ERR ".as_slice() } else { s };
        push_bytes(l, v);
    } else {
        ffi::lua_pushvalue(l, 1);
    }
    ffi::lua_setfield(l, -2, field.as_ptr());
    1
}

unsafe extern "C-unwind" fn server_error_reply(l: *mut lua_State) -> c_int {
    reply_table(l, c"err", true)
}

unsafe extern "C-unwind" fn server_status_reply(l: *mut lua_State) -> c_int {
    reply_table(l, c"ok", false)
}

unsafe extern "C-unwind" fn server_setresp(l: *mut lua_State) -> c_int {
    guarded(l, || {
        let Some(run) = running() else {
            push_error_table(
                l,
                b"ERR server.setresp() can only be called inside a script invocation",
            );
            return Err(());
        };
        if ffi::lua_gettop(l) != 1 {
            push_error_table(l, b"ERR server.setresp() requires one argument.");
            return Err(());
        }
        let v = ffi::lua_tonumber(l, 1) as i64;
        if v != 2 && v != 3 {
            push_error_table(l, b"ERR RESP version must be 2 or 3.");
            return Err(());
        }
        run.resp3 = v == 3;
        Ok(0)
    })
}

unsafe extern "C-unwind" fn server_set_repl(l: *mut lua_State) -> c_int {
    guarded(l, || {
        let Some(run) = running() else {
            push_error_table(
                l,
                b"ERR server.set_repl() can only be called inside a script invocation",
            );
            return Err(());
        };
        if ffi::lua_gettop(l) != 1 {
            push_error_table(l, b"ERR server.set_repl() requires one argument.");
            return Err(());
        }
        let v = ffi::lua_tonumber(l, 1) as i64;
        if !(0..=3).contains(&v) {
            push_error_table(l, b"ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.");
            return Err(());
        }
        run.repl = v as u8;
        Ok(0)
    })
}

#[cfg(feature = "test-hooks")]
pub unsafe fn guarded_for_tests(
    l: *mut lua_State,
    body: impl FnOnce() -> Result<c_int, ()>,
) -> c_int {
    guarded(l, body)
}

#[cfg(feature = "test-hooks")]
impl LuaEngine {
    /// Calls a C function in protected mode and returns the error message it raised.
    pub fn call_c_function_for_tests(&mut self, _ctx: api::Ctx, f: ffi::lua_CFunction) -> Vec<u8> {
        unsafe {
            let l = self.l;
            ffi::lua_settop(l, 0);
            ffi::lua_pushcfunction(l, f);
            let status = ffi::lua_pcall(l, 0, 0, 0);
            let msg = if status != 0 {
                error_message(l, -1).0
            } else {
                b"no error".to_vec()
            };
            ffi::lua_settop(l, 0);
            msg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stored_as_is;

    #[test]
    fn only_strings_stored_as_they_came_are_shared() {
        // Before 9.1 (the call's client alone holds the arguments): integer-like strings may become integers.
        for s in [
            "abc",
            "",
            "-",
            "4.5",
            "1e3",
            "0x10",
            "k{1}",
            "-a1",
            &"x".repeat(44),
        ] {
            assert!(stored_as_is(s.as_bytes(), false), "{s:?}");
        }
        for s in [
            "0",
            "123",
            "-7",
            "007",
            "-0",
            "12345678901234567890123",
            &"x".repeat(45),
        ] {
            assert!(!stored_as_is(s.as_bytes(), false), "{s:?}");
        }
        // 9.1 (calls hold their arguments): any short string, long ones still get a fresh copy.
        for s in ["123", "-7", "0", "abc", &"y".repeat(44)] {
            assert!(stored_as_is(s.as_bytes(), true), "{s:?}");
        }
        assert!(!stored_as_is("y".repeat(45).as_bytes(), true));
    }
}
