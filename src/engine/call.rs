//! `server.call` / `server.pcall` / `server.acl_check_cmd`: commands called from a function, with the script
//! semantics the server gives its own engine and a module must rebuild (SPEC rule 6): ACL as the caller,
//! read-only runs, "already wrote" tracking, OOM after the first write, a SELECT that sticks for the run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;

use mlua_sys as ffi;
use mlua_sys::lua_State;
use rfunc_core::fpconv::lua_number_arg;
use valkey_module::raw;

use super::lua::{push_bytes, push_error_table, running, running_in, to_bytes as lua_bytes};
use crate::hash::{fnv1a, FnvBuild};
use crate::host;
use crate::rm::{self as api, reply, CallArg, CallArgs};

/// What rfunc needs to know about a command (from `COMMAND INFO`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandFlags {
    pub write: bool,
    pub may_replicate: bool,
    pub container: bool,
}

/// Command flags by lower-cased name, and in front of it a small memo of the names exactly as functions spell
/// them (`'get'`, `'GET'`), so a call that names the same command as a recent one skips lower-casing and
/// hashing.
#[derive(Default)]
struct Commands {
    by_name: HashMap<Vec<u8>, Option<CommandFlags>, FnvBuild>,
    memo: [MemoEntry; MEMO_SLOTS],
}

const MEMO_SLOTS: usize = 16;
const MEMO_NAME: usize = 22;

#[derive(Clone, Copy, Default)]
struct MemoEntry {
    len: u8,
    name: [u8; MEMO_NAME],
    flags: Option<CommandFlags>,
}

fn memo_slot(name: &[u8]) -> usize {
    fnv1a(None, name.iter().copied()) as usize % MEMO_SLOTS
}

impl Commands {
    fn memo_get(&self, name: &[u8]) -> Option<Option<CommandFlags>> {
        if name.is_empty() || name.len() > MEMO_NAME {
            return None;
        }
        let e = &self.memo[memo_slot(name)];
        (e.len as usize == name.len() && &e.name[..name.len()] == name).then_some(e.flags)
    }

    fn memo_put(&mut self, name: &[u8], flags: Option<CommandFlags>) {
        if name.is_empty() || name.len() > MEMO_NAME {
            return;
        }
        let e = &mut self.memo[memo_slot(name)];
        e.len = name.len() as u8;
        e.name[..name.len()].copy_from_slice(name);
        e.flags = flags;
    }
}

thread_local! {
    static COMMANDS: RefCell<Commands> = RefCell::new(Commands::default());
}

/// Forgets cached command flags: after MODULE LOAD / UNLOAD the command table may have changed.
unsafe extern "C" fn on_module_change(
    _ctx: api::Ctx,
    _eid: raw::RedisModuleEvent,
    _sub: u64,
    _data: *mut std::ffi::c_void,
) {
    COMMANDS.with(|c| {
        if let Ok(mut m) = c.try_borrow_mut() {
            *m = Commands::default();
        }
    });
}

pub fn subscribe(ctx: api::Ctx) {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_MODULE_CHANGE,
        dataver: 1,
    };
    unsafe { api::api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_module_change)) };
}

/// Lower-cases `name` into `buf` when it fits (no allocation on the call path), else into `owned`.
fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; 64], owned: &'a mut Vec<u8>) -> &'a [u8] {
    if name.len() <= buf.len() {
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        &buf[..name.len()]
    } else {
        *owned = name.to_ascii_lowercase();
        owned
    }
}

fn command_info(ctx: api::Ctx, name: &[u8]) -> Option<CommandFlags> {
    let (mut buf, mut owned) = ([0u8; 64], Vec::new());
    let key = lowercase(name, &mut buf, &mut owned);
    if let Some(hit) = COMMANDS.with(|c| c.borrow().by_name.get(key).copied()) {
        return hit;
    }
    let r = api::call_simple(ctx, "COMMAND", &[b"INFO", key]);
    let mut found = None;
    if !r.0.is_null() && reply::kind(r.0) == reply::ARRAY && reply::len(r.0) == 1 {
        let info = reply::array_elem(r.0, 0);
        if reply::kind(info) == reply::ARRAY && reply::len(info) >= 3 {
            let mut f = CommandFlags::default();
            let flags = reply::array_elem(info, 2);
            for i in 0..reply::len(flags) {
                match reply::bytes(reply::array_elem(flags, i)) {
                    b"write" => f.write = true,
                    b"may_replicate" => f.may_replicate = true,
                    _ => {}
                }
            }
            if reply::len(info) >= 10 {
                let subs = reply::array_elem(info, 9);
                f.container = reply::kind(subs) == reply::ARRAY && reply::len(subs) > 0;
            }
            found = Some(f);
        }
    }
    drop(r);
    COMMANDS.with(|c| c.borrow_mut().by_name.insert(key.to_vec(), found));
    found
}

/// Flags of a command (a container command's flags come from its subcommand, which `sub` gives).
pub fn flags_of(
    ctx: api::Ctx,
    name: &[u8],
    sub: impl FnOnce() -> Option<Vec<u8>>,
) -> Option<CommandFlags> {
    if let Some(hit) = COMMANDS.with(|c| c.borrow().memo_get(name)) {
        return hit;
    }
    let top = command_info(ctx, name);
    // Only what does not depend on a subcommand is memoised.
    if !top.is_some_and(|t| t.container) {
        COMMANDS.with(|c| c.borrow_mut().memo_put(name, top));
    }
    let top = top?;
    if !top.container {
        return Some(top);
    }
    match sub() {
        Some(sub) => {
            let full = [name, b"|", &sub].concat();
            command_info(ctx, &full).or(Some(top))
        }
        None => Some(top),
    }
}

/// One argument of a call: a Lua string (borrowed from the stack) or a number formatted the server's way.
enum Arg<'a> {
    Borrowed(&'a [u8]),
    Number(String),
}

impl Arg<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Arg::Borrowed(b) => b,
            Arg::Number(s) => s.as_bytes(),
        }
    }
}

/// Argument `i` of the Lua call (valid while the value stays on the stack); None if not a string or number.
unsafe fn lua_arg<'a>(l: *mut lua_State, i: c_int) -> Option<Arg<'a>> {
    match ffi::lua_type(l, i) {
        ffi::LUA_TSTRING => Some(Arg::Borrowed(lua_bytes(l, i).unwrap_or_default())),
        ffi::LUA_TNUMBER => Some(Arg::Number(lua_number_arg(ffi::lua_tonumber(l, i)))),
        _ => None,
    }
}

/// Checks the argument types of a call: the built-in's errors for none and for a bad one. Returns the argument
/// count and whether any argument is a number.
unsafe fn check_args(l: *mut lua_State) -> Result<(c_int, bool), &'static [u8]> {
    let argc = ffi::lua_gettop(l);
    if argc == 0 {
        return Err(b"ERR Please specify at least one argument for this call");
    }
    let mut numbers = false;
    for i in 1..=argc {
        match ffi::lua_type(l, i) {
            ffi::LUA_TSTRING => {}
            ffi::LUA_TNUMBER => numbers = true,
            _ => return Err(b"ERR Command arguments must be strings or integers"),
        }
    }
    Ok((argc, numbers))
}

/// Normalises an error text from a called command the way the built-in does, mapping the module API's
/// refusal texts (told apart by errno) to the script texts the built-in gives.
#[cold]
fn script_error_text(msg: &[u8], errno: c_int) -> Vec<u8> {
    let msg = msg.strip_prefix(b"-").unwrap_or(msg);
    let mut end = msg.len();
    while end > 0 && (msg[end - 1] == b'\r' || msg[end - 1] == b'\n') {
        end -= 1;
    }
    let msg = &msg[..end];
    match errno {
        libc::ESPIPE if msg.starts_with(b"ERR command ") => {
            return format!(
                "ERR This {} command is not allowed from script",
                host::get().product_name_in_errors()
            )
            .into_bytes();
        }
        libc::ESPIPE if msg.starts_with(b"MASTERDOWN ") => {
            return b"ERR Can not execute the command on a stale replica".to_vec();
        }
        libc::EINVAL if msg.starts_with(b"ERR wrong number of arguments for") => {
            return b"ERR Wrong number of args calling command from script".to_vec();
        }
        libc::ENOENT if msg.starts_with(b"ERR unknown command") => {
            return b"ERR Unknown command called from script".to_vec();
        }
        _ if msg
            .windows(35)
            .any(|w| w == b"Attempted to access a non local key") =>
        {
            // 9.x scripts run through the module API and pass its text on; 8.x scripts have their own.
            if host::get().at_least(9, 0) {
                return b"ERR Attempted to access a non local key in a cluster node".to_vec();
            }
            return b"ERR Script attempted to access a non local key in a cluster node".to_vec();
        }
        libc::ENETDOWN => {
            return b"ERR Script attempted to execute a command while the cluster is down".to_vec();
        }
        libc::EROFS => {
            return b"ERR Script attempted to execute a write command while the cluster is down and readonly".to_vec();
        }
        libc::EACCES if msg.starts_with(b"NOPERM ") => {
            return [b"ERR ACL failure in script: ".as_slice(), &msg[7..]].concat();
        }
        _ => {}
    }
    if !msg.contains(&b' ') {
        return [b"ERR ".as_slice(), msg].concat();
    }
    msg.to_vec()
}

/// Pushes the error object of a failed call: `{err=..., ignore_error_stats_update=true}`.
#[cold]
unsafe fn push_call_error(l: *mut lua_State, msg: &[u8]) {
    push_error_table(l, msg);
    ffi::lua_pushboolean(l, 1);
    ffi::lua_setfield(l, -2, c"ignore_error_stats_update".as_ptr());
}

thread_local! {
    /// Module strings of the arguments being passed to RM_Call, reused from call to call.
    static ARGV: std::cell::Cell<Vec<*mut raw::RedisModuleString>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The RM_Call flag letters of a call from a function, NUL-terminated, built on the stack; `dry`: all the
/// server's checks, nothing run (`D`).
fn call_flags(run: &super::RunCtx, dry: bool, out: &mut [u8; 16]) {
    let mut n = 0;
    let mut push = |c: u8| {
        out[n] = c;
        n += 1;
    };
    // Errors as replies, script mode.
    push(b'E');
    push(b'S');
    if !run.no_user {
        // ACL checks as the calling user (see `call_as_caller` for callers without one).
        push(b'C');
    }
    if !run.allow_oom && !run.wrote {
        // deny-oom commands are refused under OOM until the function has written.
        push(b'M');
    }
    match run.repl {
        3 => push(b'!'),
        1 => {
            push(b'!');
            push(b'R');
        }
        2 => {
            push(b'!');
            push(b'A');
        }
        _ => {}
    }
    if run.resp3 {
        push(b'3');
    }
    if dry {
        push(b'D');
    }
    out[n] = 0;
}

/// RM_Call with the run's flags. A caller without an ACL user (the primary, the AOF, a module's RM_Call without
/// `C`) makes RM_Call refuse `C` with ENOTSUP before it checks or runs anything: the run then calls without it.
/// Asking up front (RM_GetCurrentUserName) would cost an allocation on every run. `dry`: checks only (`D`).
unsafe fn call_as_caller(
    run: &mut super::RunCtx,
    name: &[u8],
    dry: bool,
    args: CallArgs,
) -> (api::CallReply, c_int) {
    let mut fmt = [0u8; 16];
    call_flags(run, dry, &mut fmt);
    let (r, errno) = api::call_raw(run.ctx, name, &fmt, args);
    if !run.no_user && refused_for_no_user(&r, errno) {
        drop(r);
        run.no_user = true;
        call_flags(run, dry, &mut fmt);
        return api::call_raw(run.ctx, name, &fmt, args);
    }
    (r, errno)
}

/// RM_Call refused `C` because the caller has no ACL user (ENOTSUP and the server's own text, so no other
/// refusal can make a run drop its ACL checks).
#[cold]
fn refused_for_no_user(r: &api::CallReply, errno: c_int) -> bool {
    const TEXT: &[u8] = b"no user directly attached";
    errno == libc::ENOTSUP
        && !r.0.is_null()
        && reply::kind(r.0) == reply::ERROR
        && reply::bytes(r.0).windows(TEXT.len()).any(|w| w == TEXT)
}

/// Runs `f` with the arguments of the Lua call after the command name: the caller's own string for a KEYS /
/// ARGV entry (see `RunCtx::caller_string`), else the bytes borrowed from the Lua stack (numbers formatted the
/// server's way first), or where calls hold their arguments (`RunCtx::hold_args`) a string made for the call
/// and freed after it; kept on the stack for the usual handful.
unsafe fn with_call_args<R>(
    l: *mut lua_State,
    (argc, any_number): (c_int, bool),
    run: &mut super::RunCtx,
    f: impl FnOnce(&mut super::RunCtx, &[CallArg]) -> R,
) -> R {
    const INLINE: usize = 16;
    // Numbers first (no allocation when there are none), so the strings can borrow them.
    let mut numbers: Vec<String> = Vec::new();
    if any_number {
        for i in 2..=argc {
            if ffi::lua_type(l, i) == ffi::LUA_TNUMBER {
                numbers.push(lua_number_arg(ffi::lua_tonumber(l, i)));
            }
        }
    }
    let mut numbers_left = numbers.iter();
    let caller = &*run;
    let mut arg = |i: c_int| -> CallArg {
        if any_number && ffi::lua_type(l, i) == ffi::LUA_TNUMBER {
            CallArg::Bytes(numbers_left.next().expect("counted").as_bytes())
        } else {
            let b = lua_bytes(l, i).unwrap_or_default();
            caller
                .caller_string(b)
                .map_or(CallArg::Bytes(b), CallArg::String)
        }
    };
    let n = (argc - 1) as usize;
    let mut inline = [CallArg::Bytes(&[]); INLINE];
    let mut spilled: Vec<CallArg>;
    let args: &mut [CallArg] = if n <= INLINE {
        for (k, b) in inline.iter_mut().take(n).enumerate() {
            *b = arg(k as c_int + 2);
        }
        &mut inline[..n]
    } else {
        spilled = (2..=argc).map(arg).collect();
        &mut spilled
    };
    if !run.hold_args || !args.iter().any(|a| matches!(a, CallArg::Bytes(_))) {
        return f(run, args);
    }
    for a in args.iter_mut() {
        if let CallArg::Bytes(b) = *a {
            *a = CallArg::String(api::create_string(std::ptr::null_mut(), b));
        }
    }
    let out = f(run, args);
    // The strings made here are the ones that are not the caller's.
    for a in args.iter() {
        if let CallArg::String(s) = *a {
            if !run.is_caller_string(s) {
                api::free_string(std::ptr::null_mut(), s);
            }
        }
    }
    out
}

/// `server.call` (raise = true) and `server.pcall` (raise = false).
pub unsafe fn server_call(l: *mut lua_State, raise: bool) -> Result<c_int, ()> {
    let fail = |msg: &[u8]| {
        push_call_error(l, msg);
        if raise {
            Err(())
        } else {
            Ok(1)
        }
    };
    let Some(run) = running_in(l) else {
        return fail(b"ERR server.call can only be called inside a script invocation");
    };
    let (argc, any_number) = match check_args(l) {
        Ok(checked) => checked,
        Err(msg) => return fail(msg),
    };
    let ctx = run.ctx;
    let name = lua_arg(l, 1).expect("checked");
    let flags = flags_of(ctx, name.bytes(), || {
        if argc >= 2 {
            lua_arg(l, 2).map(|s| s.bytes().to_vec())
        } else {
            None
        }
    });
    if run.read_only && flags.is_some_and(|f| f.write || f.may_replicate) {
        return fail(b"ERR Write commands are not allowed from read-only scripts.");
    }
    let is_select = name.bytes().eq_ignore_ascii_case(b"select");
    let result = if run.cluster {
        call_in_cluster(l, run, argc, name.bytes())
    } else {
        Ok(with_call_args(l, (argc, any_number), run, |run, args| {
            call_as_caller(run, name.bytes(), false, CallArgs::Mixed(args))
        }))
    };
    drop(name);
    let (r, errno) = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if r.0.is_null() {
        let msg = script_error_text(b"ERR Unknown command called from script", errno);
        return fail(&msg);
    }
    if reply::kind(r.0) == reply::ERROR {
        let msg = script_error_text(reply::bytes(r.0), errno);
        drop(r);
        return fail(&msg);
    }
    if flags.is_some_and(|f| f.write) {
        run.wrote = true;
    }
    if is_select {
        keep_select(l, ctx);
    }
    ffi::lua_settop(l, 0);
    push_reply(l, r.0, run.resp3, 0);
    Ok(1)
}

/// The call in cluster mode: the cluster rules first (they need the arguments as module strings, the command
/// name first), then the call. Kept out of line: most servers are not clusters.
#[cold]
#[inline(never)]
unsafe fn call_in_cluster(
    l: *mut lua_State,
    run: &mut super::RunCtx,
    argc: c_int,
    name: &[u8],
) -> Result<(api::CallReply, c_int), Vec<u8>> {
    let ctx = run.ctx;
    let mut strs = ARGV.with(|a| a.take());
    strs.push(api::create_string(ctx, name));
    for i in 2..=argc {
        let a = lua_arg(l, i).expect("checked");
        strs.push(api::create_string(ctx, a.bytes()));
    }
    let slot_error = cluster_slot_check(run, name, &mut strs).map(|(ours, ask_server)| {
        if !ask_server {
            return ours;
        }
        // The server reports a key this node does not serve before any slot rule: ask it with a dry run.
        let (r, errno) = call_as_caller(run, name, true, CallArgs::Strings(&strs[1..]));
        if !r.0.is_null() && reply::kind(r.0) == reply::ERROR {
            script_error_text(reply::bytes(r.0), errno)
        } else {
            ours
        }
    });
    let result = match slot_error {
        Some(e) => Err(e),
        // Strings this run holds, where calls hold their arguments; else buffers, so the server owns the objects
        // it makes and may re-encode what it stores, as before 9.1 (`Host::calls_hold_arguments`).
        None if run.hold_args => Ok(call_as_caller(
            run,
            name,
            false,
            CallArgs::Strings(&strs[1..]),
        )),
        None => {
            let bufs: Vec<CallArg> = strs[1..]
                .iter()
                .map(|&s| CallArg::Bytes(api::string_bytes(s)))
                .collect();
            Ok(call_as_caller(run, name, false, CallArgs::Mixed(&bufs)))
        }
    };
    for s in strs.drain(..) {
        api::free_string(ctx, s);
    }
    ARGV.with(|a| a.set(strs));
    result
}

/// The server's own scripts keep a SELECT for the rest of the run; RM_Call's client does not: select the db of
/// the successful SELECT (argument 2) in the caller's context.
#[cold]
#[inline(never)]
unsafe fn keep_select(l: *mut lua_State, ctx: api::Ctx) {
    let db = lua_arg(l, 2).and_then(|a| std::str::from_utf8(a.bytes()).ok()?.parse::<c_int>().ok());
    if let Some(db) = db {
        api::select_db(ctx, db);
    }
}

/// Cluster rules for the keys of a call, as the server checks them for its own scripts: one command's keys in
/// one slot, and (unless the function has `allow-cross-slot-keys`) every key of the run in the slot of the
/// declared keys or of the first key accessed. `argv` holds the command name then its arguments.
/// Returns the error, and whether the server must first be asked (with a dry run) for an error it reports
/// before this one.
unsafe fn cluster_slot_check(
    run: &mut super::RunCtx,
    name: &[u8],
    argv: &mut [*mut raw::RedisModuleString],
) -> Option<(Vec<u8>, bool)> {
    let mut num: c_int = 0;
    let positions = api::api!(RedisModule_GetCommandKeysWithFlags)(
        run.ctx,
        argv.as_mut_ptr(),
        argv.len() as c_int,
        &mut num,
        std::ptr::null_mut(),
    );
    if positions.is_null() {
        return None;
    }
    let mut slot: Option<u16> = None;
    let mut cross = false;
    for i in 0..num as usize {
        let pos = *positions.add(i) as usize;
        if let Some(&key) = argv.get(pos) {
            let s = rfunc_core::cluster::key_hash_slot(api::string_bytes(key));
            match slot {
                None => slot = Some(s),
                Some(prev) if prev != s => cross = true,
                _ => {}
            }
        }
    }
    api::api!(RedisModule_Free)(positions as *mut std::ffi::c_void);
    if cross {
        // 9.x scripts run through the module API, which reports any key it cannot serve as non-local.
        if host::get().at_least(9, 0) {
            return Some((
                b"ERR Attempted to access a non local key in a cluster node".to_vec(),
                false,
            ));
        }
        return Some((
            [
                b"ERR Command '".as_slice(),
                &name.to_ascii_lowercase(),
                b"' in script attempted to access keys that don't hash to the same slot",
            ]
            .concat(),
            false,
        ));
    }
    match (slot, run.slot, run.allow_cross_slot) {
        (Some(s), None, false) => run.slot = Some(s),
        (Some(s), Some(current), false) if s != current => {
            return Some((
                b"ERR Script attempted to access keys that do not hash to the same slot".to_vec(),
                true,
            ));
        }
        _ => {}
    }
    None
}

/// A call reply → Lua value (spec lua.md §4.2).
unsafe fn push_reply(l: *mut lua_State, r: reply::R, resp3: bool, depth: u32) {
    if ffi::lua_checkstack(l, 5) == 0 || depth > 1000 {
        push_call_error(l, b"ERR reached lua stack limit");
        return;
    }
    match reply::kind(r) {
        reply::STRING => {
            if reply::proto_first_byte(r) == b'+' {
                ffi::lua_createtable(l, 0, 1);
                push_bytes(l, reply::bytes(r));
                ffi::lua_setfield(l, -2, c"ok".as_ptr());
            } else {
                push_bytes(l, reply::bytes(r));
            }
        }
        reply::ERROR => push_call_error(l, &script_error_text(reply::bytes(r), 0)),
        reply::INTEGER => ffi::lua_pushnumber(l, reply::integer(r) as f64),
        reply::NULL => {
            if resp3 {
                ffi::lua_pushnil(l);
            } else {
                ffi::lua_pushboolean(l, 0);
            }
        }
        reply::ARRAY => {
            let n = reply::len(r);
            ffi::lua_createtable(l, n as c_int, 0);
            for i in 0..n {
                push_reply(l, reply::array_elem(r, i), resp3, depth + 1);
                ffi::lua_rawseti(l, -2, (i + 1) as _);
            }
        }
        reply::MAP => {
            let n = reply::len(r);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_createtable(l, 0, n as c_int);
            for i in 0..n {
                let (k, v) = reply::map_elem(r, i);
                push_reply(l, k, resp3, depth + 1);
                push_reply(l, v, resp3, depth + 1);
                ffi::lua_rawset(l, -3);
            }
            ffi::lua_setfield(l, -2, c"map".as_ptr());
        }
        reply::SET => {
            let n = reply::len(r);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_createtable(l, 0, n as c_int);
            for i in 0..n {
                push_reply(l, reply::set_elem(r, i), resp3, depth + 1);
                ffi::lua_pushboolean(l, 1);
                ffi::lua_rawset(l, -3);
            }
            ffi::lua_setfield(l, -2, c"set".as_ptr());
        }
        reply::BOOL => ffi::lua_pushboolean(l, reply::boolean(r) as c_int),
        reply::DOUBLE => {
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushnumber(l, reply::double(r));
            ffi::lua_setfield(l, -2, c"double".as_ptr());
        }
        reply::BIG_NUMBER => {
            ffi::lua_createtable(l, 0, 1);
            push_bytes(l, reply::big_number(r));
            ffi::lua_setfield(l, -2, c"big_number".as_ptr());
        }
        reply::VERBATIM => {
            let (s, format) = reply::verbatim(r);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_createtable(l, 0, 2);
            push_bytes(l, s);
            ffi::lua_setfield(l, -2, c"string".as_ptr());
            push_bytes(l, format);
            ffi::lua_setfield(l, -2, c"format".as_ptr());
            ffi::lua_setfield(l, -2, c"verbatim_string".as_ptr());
        }
        _ => ffi::lua_pushnil(l),
    }
}

/// `server.acl_check_cmd(cmd, ...)`: may the calling user run this command with these arguments?
pub unsafe fn acl_check_cmd(l: *mut lua_State) -> Result<c_int, ()> {
    let Some(run) = running() else {
        push_error_table(
            l,
            b"ERR server.acl_check_cmd can only be called inside a script invocation",
        );
        return Err(());
    };
    let argc = match check_args(l) {
        Ok((n, _)) => n,
        Err(msg) => {
            push_error_table(l, msg);
            return Err(());
        }
    };
    let argv: Vec<Vec<u8>> = (1..=argc)
        .map(|i| lua_arg(l, i).expect("checked").bytes().to_vec())
        .collect();
    let ctx = run.ctx;
    if flags_of(ctx, &argv[0], || argv.get(1).cloned()).is_none() {
        push_error_table(l, b"ERR Invalid command passed to server.acl_check_cmd()");
        return Err(());
    }
    let allowed = {
        let name = api::api!(RedisModule_GetCurrentUserName)(ctx);
        if name.is_null() {
            // No user behind the call (a module's RM_Call): nothing restricts it.
            true
        } else {
            let user = api::api!(RedisModule_GetModuleUserFromUserName)(name);
            api::free_string(ctx, name);
            if user.is_null() {
                false
            } else {
                let mut strs: Vec<*mut raw::RedisModuleString> =
                    argv.iter().map(|a| api::create_string(ctx, a)).collect();
                let ok = api::api!(RedisModule_ACLCheckCommandPermissions)(
                    user,
                    strs.as_mut_ptr(),
                    strs.len() as c_int,
                ) == raw::REDISMODULE_OK as c_int;
                for s in strs {
                    api::free_string(ctx, s);
                }
                api::api!(RedisModule_FreeModuleUser)(user);
                ok
            }
        }
    };
    ffi::lua_pushboolean(l, allowed as c_int);
    Ok(1)
}
