//! RFUNC.LOAD / DELETE / FLUSH / LIST / DUMP / RESTORE / STATS / KILL / HELP: parse, call the registry, reply.

use rfunc_core::library::{glob_match, ENGINE_NAME};
use rfunc_core::payload;

use crate::cluster_sync;
use crate::engine::{self, lua};
use crate::host;
use crate::registry::{compile_payload, RestorePlan, RestorePolicy};
use crate::rm::{self as api, Ctx};
use crate::runtime;

/// `ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try RFUNC.HELP.` — the built-in's text for
/// a subcommand given too many arguments, naming the command as typed.
fn too_many_args(ctx: Ctx, argv0: &[u8]) {
    let typed = String::from_utf8_lossy(argv0);
    let sub = typed.split_once('.').map(|(_, s)| s).unwrap_or(&typed);
    api::reply_error(
        ctx,
        &format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try RFUNC.HELP."
        ),
    );
}

fn reply_runtime_error(ctx: Ctx, e: &str) {
    api::reply_error(ctx, e);
}

fn err_bytes(ctx: Ctx, msg: &[u8]) {
    api::reply_error_bytes(ctx, &[b"ERR ".as_slice(), msg].concat());
}

/// Commands from the primary or the AOF replay run without the load timeout (like the built-in).
fn load_timeout_applies(ctx: Ctx) -> bool {
    let flags = api::context_flags(ctx);
    flags
        & (valkey_module::raw::REDISMODULE_CTX_FLAGS_REPLICATED
            | valkey_module::raw::REDISMODULE_CTX_FLAGS_LOADING)
        == 0
}

pub fn load(ctx: Ctx, argv: &[&[u8]]) {
    let (code, options) = argv[1..].split_last().expect("arity");
    for opt in options {
        if !opt.eq_ignore_ascii_case(b"replace") {
            api::reply_error_bytes(
                ctx,
                &[b"ERR Unknown option given: ".as_slice(), opt].concat(),
            );
            return;
        }
    }
    let replace = !options.is_empty();
    let timeout = load_timeout_applies(ctx);
    match runtime::with(|rt| {
        rt.registry
            .load(&mut rt.engine, ctx, code, replace, timeout)
    }) {
        Ok(Ok(name)) => {
            api::reply_bulk(ctx, name.as_bytes());
            api::replicate_verbatim(ctx);
            cluster_sync::library_loaded(ctx, code);
        }
        Ok(Err(msg)) => err_bytes(ctx, &msg),
        Err(e) => reply_runtime_error(ctx, e),
    }
}

pub fn delete(ctx: Ctx, argv: &[&[u8]]) {
    let name = String::from_utf8_lossy(argv[1]).into_owned();
    // Valid library names are ASCII: a lossy conversion cannot turn an unknown name into a known one.
    match runtime::with(|rt| rt.registry.delete(&mut rt.engine, &name)) {
        Ok(Ok(())) => {
            api::reply_ok(ctx);
            api::replicate_verbatim(ctx);
            cluster_sync::library_deleted(ctx, &name);
        }
        Ok(Err(msg)) => api::reply_error(ctx, &format!("ERR {msg}")),
        Err(e) => reply_runtime_error(ctx, e),
    }
}

pub fn flush(ctx: Ctx, argv: &[&[u8]]) {
    if argv.len() > 2 {
        too_many_args(ctx, argv[0]);
        return;
    }
    let asynchronous = match argv.get(1) {
        Some(m) if m.eq_ignore_ascii_case(b"async") => true,
        Some(m) if m.eq_ignore_ascii_case(b"sync") => false,
        Some(_) => {
            api::reply_error(ctx, "ERR RFUNC.FLUSH only supports SYNC|ASYNC option");
            return;
        }
        None => host::config_is_yes(ctx, "lazyfree-lazy-user-flush").unwrap_or(false),
    };
    let r = runtime::with(|rt| -> Result<(), String> {
        // A fresh engine, like the built-in's FUNCTION FLUSH (shared Lua state such as cjson settings resets).
        let fresh = engine::LuaEngine::new()?;
        rt.registry.clear(None);
        let old = std::mem::replace(&mut rt.engine, fresh);
        if asynchronous {
            std::thread::Builder::new()
                .name("rfunc-flush".into())
                .spawn(move || drop(old))
                .map_err(|e| e.to_string())?;
        } else {
            drop(old);
        }
        Ok(())
    });
    match r {
        Ok(Ok(())) => {
            api::reply_ok(ctx);
            api::replicate_verbatim(ctx);
            cluster_sync::flushed(ctx);
        }
        Ok(Err(e)) => api::reply_error(ctx, &format!("ERR {e}")),
        Err(e) => reply_runtime_error(ctx, e),
    }
}

pub fn list(ctx: Ctx, argv: &[&[u8]]) {
    let mut with_code = false;
    let mut with_stats = false;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"withcode") && !with_code {
            with_code = true;
        } else if a.eq_ignore_ascii_case(b"withstats") && !with_stats {
            // rfunc's addition: per-function statistics in each function's entry.
            with_stats = true;
        } else if a.eq_ignore_ascii_case(b"libraryname") && pattern.is_none() {
            if i + 1 >= argv.len() {
                api::reply_error(ctx, "ERR library name argument was not given");
                return;
            }
            pattern = Some(argv[i + 1]);
            i += 1;
        } else {
            api::reply_error_bytes(ctx, &[b"ERR Unknown argument ".as_slice(), a].concat());
            return;
        }
        i += 1;
    }
    let r = runtime::with(|rt| {
        let libs: Vec<_> = rt
            .registry
            .libraries()
            .iter()
            .filter(|l| pattern.is_none_or(|p| glob_match(p, l.name.as_bytes(), true)))
            .collect();
        api::reply_array(ctx, libs.len() as i64);
        for lib in libs {
            api::reply_map(ctx, if with_code { 4 } else { 3 });
            api::reply_bulk(ctx, b"library_name");
            api::reply_bulk(ctx, lib.name.as_bytes());
            api::reply_bulk(ctx, b"engine");
            api::reply_bulk(ctx, ENGINE_NAME.as_bytes());
            api::reply_bulk(ctx, b"functions");
            api::reply_array(ctx, lib.functions.len() as i64);
            for f in &lib.functions {
                api::reply_map(ctx, if with_stats { 7 } else { 3 });
                let flags: Vec<_> = f.flags.names().collect();
                reply_function_fields(ctx, &f.name, f.description.as_deref(), &flags);
                if with_stats {
                    for (k, v) in [
                        ("calls", &f.stats.calls),
                        ("errors", &f.stats.errors),
                        ("total_usec", &f.stats.total_us),
                        ("max_usec", &f.stats.max_us),
                    ] {
                        api::reply_bulk(ctx, k.as_bytes());
                        api::reply_int(ctx, v.get() as i64);
                    }
                }
            }
            if with_code {
                api::reply_bulk(ctx, b"library_code");
                api::reply_bulk(ctx, &lib.code);
            }
        }
    });
    if let Err(e) = r {
        reply_runtime_error(ctx, e);
    }
}

/// `RFUNC.DUMP [VERSION <n>] [LIBRARY <name> ...]`: the host's payload by default; VERSION stamps it for
/// another server's RESTORE; LIBRARY keeps only the named libraries (in the order given).
pub fn dump(ctx: Ctx, argv: &[&[u8]]) {
    let mut version = host::get().rdb_version();
    let mut only: Option<Vec<String>> = None;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"version") && i + 1 < argv.len() {
            match std::str::from_utf8(argv[i + 1])
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
            {
                Some(v) if v > 0 => version = v,
                _ => {
                    api::reply_error(
                        ctx,
                        "ERR VERSION must be an RDB version between 1 and 65535",
                    );
                    return;
                }
            }
            i += 2;
        } else if a.eq_ignore_ascii_case(b"library") && i + 1 < argv.len() {
            let names = only.get_or_insert_with(Vec::new);
            i += 1;
            while i < argv.len() && !argv[i].eq_ignore_ascii_case(b"version") {
                names.push(String::from_utf8_lossy(argv[i]).into_owned());
                i += 1;
            }
        } else {
            // What FUNCTION DUMP answers to any argument.
            api::reply_error(
                ctx,
                "ERR wrong number of arguments for 'rfunc.dump' command",
            );
            return;
        }
    }
    let compress = host::config_is_yes(ctx, "rdbcompression").unwrap_or(true);
    let r = runtime::with(|rt| -> Result<Vec<u8>, String> {
        // Each library's entry is built once and kept: DUMP does not compress unchanged code again.
        let entries: Vec<std::rc::Rc<[u8]>> = match &only {
            None => rt
                .registry
                .libraries()
                .iter()
                .map(|l| l.dump_entry(compress))
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    rt.registry
                        .library(n)
                        .map(|l| l.dump_entry(compress))
                        .ok_or_else(|| format!("ERR Library '{n}' not found"))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(payload::encode_entries(&entries, version))
    });
    match r {
        Ok(Ok(p)) => api::reply_bulk(ctx, &p),
        Ok(Err(e)) => api::reply_error(ctx, &e),
        Err(e) => reply_runtime_error(ctx, e),
    }
}

/// `RFUNC.RESTORE <payload> [FLUSH|APPEND|REPLACE] [DRYRUN]`.
pub fn restore(ctx: Ctx, argv: &[&[u8]]) {
    let mut args = &argv[1..];
    // rfunc's addition: a trailing DRYRUN validates and reports, changing nothing.
    let dry_run = args.len() >= 2 && args[args.len() - 1].eq_ignore_ascii_case(b"dryrun");
    if dry_run {
        args = &args[..args.len() - 1];
    }
    if args.len() > 2 {
        too_many_args(ctx, argv[0]);
        return;
    }
    let policy = match args.get(1) {
        None => RestorePolicy::Append,
        Some(p) if p.eq_ignore_ascii_case(b"append") => RestorePolicy::Append,
        Some(p) if p.eq_ignore_ascii_case(b"replace") => RestorePolicy::Replace,
        Some(p) if p.eq_ignore_ascii_case(b"flush") => RestorePolicy::Flush,
        Some(_) => {
            api::reply_error(
                ctx,
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            );
            return;
        }
    };
    let accept = restore_version_rule(ctx);
    let entries = match payload::entries_with(args[0], accept) {
        Ok((_, entries)) => entries,
        Err(e) if dry_run => {
            reply_dry_run(ctx, Err(format!("{e}").into_bytes()));
            return;
        }
        Err(e) => {
            api::reply_error(ctx, &format!("ERR {e}"));
            return;
        }
    };
    // The server compiles each library as it parses the payload: a library that fails to compile is reported
    // before a malformed entry that follows it.
    let mut codes = Vec::new();
    let mut trailing = None;
    for entry in entries {
        match entry {
            Ok(code) => codes.push(code.into_owned()),
            Err(e) => {
                trailing = Some(format!("{e}").into_bytes());
                break;
            }
        }
    }
    let timeout = load_timeout_applies(ctx);
    if dry_run {
        dry_run_restore(ctx, codes, trailing, policy, timeout);
        return;
    }
    match runtime::with(|rt| {
        rt.registry
            .restore(&mut rt.engine, ctx, codes, trailing, policy, timeout)
    }) {
        Ok(Ok(_)) => {
            api::reply_ok(ctx);
            api::replicate_verbatim(ctx);
            cluster_sync::restored(ctx, args[0], policy == RestorePolicy::Flush);
        }
        Ok(Err(msg)) => err_bytes(ctx, &msg),
        Err(e) => reply_runtime_error(ctx, e),
    }
}

/// SPEC rule 5: RESTORE accepts every version a real server writes for this format, plus what the host accepts.
fn restore_version_rule(ctx: Ctx) -> impl Fn(u16) -> bool {
    let relaxed = host::get().at_least(8, 1)
        && host::config_get(ctx, "rdb-version-check")
            .is_some_and(|m| m.eq_ignore_ascii_case(b"relaxed"));
    let host_kind = host::get().payload_host();
    move |v| payload::rfunc_accepts(host_kind, relaxed, v)
}

/// `RFUNC.INSPECT <payload>`: what is inside a payload, without touching the registry.
pub fn inspect(ctx: Ctx, argv: &[&[u8]]) {
    let accept = restore_version_rule(ctx);
    let report = match crate::inspect::inspect(ctx, argv[1], &accept) {
        Ok(r) => r,
        Err(e) => {
            api::reply_error(ctx, &format!("ERR {e}"));
            return;
        }
    };
    api::reply_map(ctx, 5);
    api::reply_bulk(ctx, b"size");
    api::reply_int(ctx, report.size as i64);
    api::reply_bulk(ctx, b"version");
    match report.version {
        Some(v) => api::reply_int(ctx, v as i64),
        None => api::reply_null(ctx),
    }
    api::reply_bulk(ctx, b"checksum");
    api::reply_bulk(
        ctx,
        if report.checksum_ok {
            b"ok"
        } else {
            b"mismatch"
        },
    );
    api::reply_bulk(ctx, b"restore");
    api::reply_bulk(
        ctx,
        report.restore_error.as_deref().unwrap_or("OK").as_bytes(),
    );
    api::reply_bulk(ctx, b"libraries");
    api::reply_array(ctx, report.libraries.len() as i64);
    for lib in &report.libraries {
        api::reply_map(ctx, 5);
        api::reply_bulk(ctx, b"library_name");
        match &lib.name {
            Some(n) => api::reply_bulk(ctx, n.as_bytes()),
            None => api::reply_null(ctx),
        }
        api::reply_bulk(ctx, b"engine");
        api::reply_bulk(ctx, ENGINE_NAME.as_bytes());
        api::reply_bulk(ctx, b"code_size");
        api::reply_int(ctx, lib.code.len() as i64);
        api::reply_bulk(ctx, b"functions");
        api::reply_array(ctx, lib.functions.len() as i64);
        for f in &lib.functions {
            api::reply_map(ctx, 3);
            reply_function_fields(ctx, &f.name, f.description.as_deref(), &f.flags);
        }
        api::reply_bulk(ctx, b"error");
        match &lib.error {
            Some(e) => api::reply_bulk(ctx, e.as_bytes()),
            None => api::reply_null(ctx),
        }
    }
}

/// The `name`, `description` and `flags` fields of one function's map, shared by LIST and INSPECT.
fn reply_function_fields(ctx: Ctx, name: &str, description: Option<&[u8]>, flags: &[&str]) {
    api::reply_bulk(ctx, b"name");
    api::reply_bulk(ctx, name.as_bytes());
    api::reply_bulk(ctx, b"description");
    match description {
        Some(d) => api::reply_bulk(ctx, d),
        None => api::reply_null(ctx),
    }
    api::reply_bulk(ctx, b"flags");
    api::reply_set(ctx, flags.len() as i64);
    for fl in flags {
        api::reply_simple(ctx, fl);
    }
}

/// Compiles the payload in a scratch engine (the live one, its libraries and settings stay untouched) and
/// reports what RESTORE would do: `result` (OK or the error it would give), `added`, `replaced`, `removed`.
fn dry_run_restore(
    ctx: Ctx,
    codes: Vec<Vec<u8>>,
    trailing: Option<Vec<u8>>,
    policy: RestorePolicy,
    timeout: bool,
) {
    let mut scratch = match engine::LuaEngine::new() {
        Ok(e) => e,
        Err(e) => {
            api::reply_error(ctx, &format!("ERR {e}"));
            return;
        }
    };
    let outcome = match compile_payload(&mut scratch, ctx, codes, trailing, timeout) {
        Err(e) => Err(e),
        Ok(new) => match runtime::with(|rt| rt.registry.plan_restore(&new, policy)) {
            Ok(plan) => plan,
            Err(e) => Err(e.as_bytes().to_vec()),
        },
    };
    drop(scratch);
    reply_dry_run(ctx, outcome);
}

fn reply_dry_run(ctx: Ctx, outcome: Result<RestorePlan, Vec<u8>>) {
    let (result, plan) = match outcome {
        Ok(plan) => (b"OK".to_vec(), plan),
        Err(e) => ([b"ERR ".as_slice(), &e].concat(), RestorePlan::default()),
    };
    api::reply_map(ctx, 4);
    api::reply_bulk(ctx, b"result");
    api::reply_bulk(ctx, &result);
    for (k, names) in [
        ("added", &plan.added),
        ("replaced", &plan.replaced),
        ("removed", &plan.removed),
    ] {
        api::reply_bulk(ctx, k.as_bytes());
        api::reply_array(ctx, names.len() as i64);
        for n in names {
            api::reply_bulk(ctx, n.as_bytes());
        }
    }
}

pub fn stats(ctx: Ctx, argv: &[&[u8]]) {
    match argv.get(1) {
        None => {}
        // rfunc's addition: RFUNC.STATS RESET zeroes the per-function statistics (RFUNC.LIST WITHSTATS).
        Some(a) if argv.len() == 2 && a.eq_ignore_ascii_case(b"reset") => {
            match runtime::with(|rt| rt.registry.reset_stats()) {
                Ok(()) => api::reply_ok(ctx),
                Err(e) => reply_runtime_error(ctx, e),
            }
            return;
        }
        Some(_) => {
            api::reply_error(
                ctx,
                "ERR wrong number of arguments for 'rfunc.stats' command",
            );
            return;
        }
    }
    let (libs, fns) = runtime::counts();
    api::reply_map(ctx, 2);
    api::reply_bulk(ctx, b"running_script");
    match lua::running() {
        Some(run) => {
            api::reply_map(ctx, 3);
            api::reply_bulk(ctx, b"name");
            api::reply_bulk(ctx, run.function().as_bytes());
            api::reply_bulk(ctx, b"command");
            let argv = run.argv();
            api::reply_array(ctx, argv.len() as i64);
            for a in argv {
                api::reply_bulk(ctx, a);
            }
            api::reply_bulk(ctx, b"duration_ms");
            api::reply_int(ctx, (run.elapsed_us() / 1000) as i64);
        }
        None => api::reply_null(ctx),
    }
    api::reply_bulk(ctx, b"engines");
    api::reply_map(ctx, 1);
    api::reply_bulk(ctx, ENGINE_NAME.as_bytes());
    api::reply_map(ctx, 2);
    api::reply_bulk(ctx, b"libraries_count");
    api::reply_int(ctx, libs as i64);
    api::reply_bulk(ctx, b"functions_count");
    api::reply_int(ctx, fns as i64);
}

/// What is the server busy with, when no rfunc function runs? The built-in's FUNCTION STATS tells: it answers
/// BUSY while an EVAL script runs, and names a running built-in function.
fn builtin_busy(ctx: Ctx) -> Option<&'static str> {
    let r = crate::rm::call_simple(ctx, "FUNCTION", &[b"STATS"]);
    if r.0.is_null() {
        return None;
    }
    use crate::rm::reply;
    match reply::kind(r.0) {
        reply::ERROR if reply::bytes(r.0).starts_with(b"BUSY") => {
            Some("BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.")
        }
        reply::ARRAY | reply::MAP if reply::len(r.0) >= 1 => {
            let running = if reply::kind(r.0) == reply::MAP {
                reply::map_elem(r.0, 0).1
            } else {
                reply::array_elem(r.0, 1)
            };
            (reply::kind(running) != reply::NULL)
                .then_some("BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.")
        }
        _ => None,
    }
}

pub fn kill(ctx: Ctx, _argv: &[&[u8]]) {
    match lua::running() {
        None => match builtin_busy(ctx) {
            Some(busy) => api::reply_error(ctx, busy),
            None => api::reply_error(ctx, "NOTBUSY No scripts in execution right now."),
        },
        Some(run) if run.from_primary => api::reply_error(
            ctx,
            "UNKILLABLE The busy script was sent by a master instance in the context of replication and cannot be killed.",
        ),
        Some(run) if run.wrote => api::reply_error(
            ctx,
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        ),
        Some(_) => {
            engine::request_kill();
            api::reply_ok(ctx);
        }
    }
}

const HELP: &[&str] = &[
    "RFUNC.<subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using RFUNC.RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Print this help.",
    "rfunc additions:",
    "DUMP [VERSION <n>] [LIBRARY <name> ...]",
    "    Dump for another server version's RESTORE (10: Redis 7.0, 11: Valkey 7.2-8.x, 80: Valkey 9.x) and/or only",
    "    the named libraries.",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE] DRYRUN",
    "    Validate the payload and report what RESTORE would do (result, added, replaced, removed); change nothing.",
    "INSPECT <PAYLOAD>",
    "    Show a payload's version, checksum status and libraries (functions, flags, code size).",
    "LIST ... WITHSTATS",
    "    Add per-function calls, errors, total_usec and max_usec.",
    "STATS RESET",
    "    Zero the per-function statistics.",
    "RFUNC.FCALL <FUNCTION NAME> <NUMKEYS> [KEY ...] [ARG ...]",
    "    Invoke a function (RFUNC.FCALL_RO: a function flagged no-writes, read-only).",
];

pub fn help(ctx: Ctx, _argv: &[&[u8]]) {
    api::reply_array(ctx, HELP.len() as i64);
    for line in HELP {
        api::reply_simple(ctx, line);
    }
}
