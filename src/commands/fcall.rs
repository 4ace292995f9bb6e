//! RFUNC.FCALL / RFUNC.FCALL_RO: the built-in's argument checks and, since a module command's flags are static,
//! the per-function checks processCommand makes for FCALL (spec commands.md §4.1, SPEC rule 6).

use std::ptr;

use rfunc_core::library::FunctionFlags;
use valkey_module::raw;

use crate::engine::{self, RunCtx};
use crate::host;
use crate::rm::{self as api, Ctx};
use crate::runtime;

/// The server's argument strings of the command as it came (`raw`) and as byte strings (`argv`).
type Raw = *mut *mut raw::RedisModuleString;

pub fn fcall(ctx: Ctx, raw: Raw, argv: &[&[u8]]) {
    run(ctx, raw, argv, false);
}

pub fn fcall_ro(ctx: Ctx, raw: Raw, argv: &[&[u8]]) {
    run(ctx, raw, argv, true);
}

fn parse_numkeys(s: &[u8]) -> Option<i64> {
    // string2ll: a canonical 64-bit integer.
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty()
        || t.starts_with('+')
        || (t.len() > 1 && t.starts_with('0'))
        || t.starts_with("-0")
    {
        return None;
    }
    t.parse::<i64>().ok()
}

/// Answers the server's key-position request (getkeys-api): the numkeys keys after argv[2].
pub fn declare_keys(
    ctx: Ctx,
    argv: *mut *mut valkey_module::raw::RedisModuleString,
    argc: std::ffi::c_int,
) {
    if argc < 3 {
        return;
    }
    unsafe {
        let numkeys = api::string_bytes(*argv.add(2));
        if let Some(n) = parse_numkeys(numkeys) {
            if n > 0 && n <= (argc - 3) as i64 {
                for pos in 3..3 + n as std::ffi::c_int {
                    api::api!(RedisModule_KeyAtPos)(ctx, pos);
                }
            }
        }
    }
}

fn run(ctx: Ctx, raw_argv: Raw, argv: &[&[u8]], read_only_cmd: bool) {
    let r = runtime::with_call(|rt| {
        let Some(found) = rt.registry.function(argv[1]) else {
            api::reply_error(ctx, "ERR Function not found");
            return;
        };
        let flags = found.function.flags;
        let ctx_flags = api::context_flags(ctx);
        let no_writes = flags.contains(FunctionFlags::NO_WRITES);
        let from_primary = ctx_flags & raw::REDISMODULE_CTX_FLAGS_REPLICATED != 0;
        // What processCommand checks first for FCALL, from the function's flags.
        if !from_primary {
            if !no_writes
                && !flags.contains(FunctionFlags::ALLOW_OOM)
                && ctx_flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0
            {
                api::reply_error(
                    ctx,
                    "OOM command not allowed when used memory > 'maxmemory'.",
                );
                return;
            }
            if !no_writes
                && ctx_flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0
                && ctx_flags & raw::REDISMODULE_CTX_FLAGS_READONLY != 0
            {
                api::reply_error(ctx, "READONLY You can't write against a read only replica.");
                return;
            }
            if !flags.contains(FunctionFlags::ALLOW_STALE)
                && ctx_flags & raw::REDISMODULE_CTX_FLAGS_REPLICA_IS_STALE != 0
                && host::config_is_yes(ctx, "replica-serve-stale-data") == Some(false)
            {
                api::reply_error(ctx, "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.");
                return;
            }
        }
        let Some(numkeys) = parse_numkeys(argv[2]) else {
            api::reply_error(ctx, "ERR Bad number of keys provided");
            return;
        };
        let rest = &argv[3..];
        if numkeys > rest.len() as i64 {
            api::reply_error(
                ctx,
                "ERR Number of keys can't be greater than number of args",
            );
            return;
        }
        if numkeys < 0 {
            api::reply_error(ctx, "ERR Number of keys can't be negative");
            return;
        }
        if flags.contains(FunctionFlags::NO_CLUSTER)
            && ctx_flags & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
        {
            api::reply_error(
                ctx,
                "ERR Can not run script on cluster, 'no-cluster' flag is set.",
            );
            return;
        }
        if read_only_cmd && !no_writes {
            api::reply_error(
                ctx,
                "ERR Can not execute a script with write flag using *_ro command.",
            );
            return;
        }
        let (keys, args) = rest.split_at(numkeys as usize);
        let callback = found.function.callback;
        let cluster = ctx_flags & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0;
        let host = host::get();
        let mut run = RunCtx {
            ctx,
            function_ptr: found.function.name.as_str(),
            argv_ptr: argv.as_ptr().cast(),
            argv_len: argv.len(),
            no_user: false,
            cluster,
            // The run's slot matters only in a cluster (a CRC16 of the first key otherwise spent on every call).
            slot: if cluster {
                keys.first().map(|k| rfunc_core::cluster::key_hash_slot(k))
            } else {
                None
            },
            allow_cross_slot: flags.contains(FunctionFlags::ALLOW_CROSS_SLOT_KEYS),
            read_only: read_only_cmd || no_writes,
            allow_oom: flags.contains(FunctionFlags::ALLOW_OOM),
            resp3: false,
            repl: 3,
            wrote: false,
            from_primary,
            original_db: api::selected_db(ctx),
            start_us: api::monotonic_us(),
            busy_reported: false,
            filter_armed: false,
            // The caller's strings go to calls by reference only where that is invisible (see caller_string).
            raw_argv: if host.stores_copies_of_arguments() {
                raw_argv
            } else {
                ptr::null_mut()
            },
            hold_args: host.calls_hold_arguments(),
            lua_args: [ptr::null(); engine::LUA_ARGS],
            lua_args_len: 0,
        };
        engine::clear_kill();
        let out = rt.engine.call(&mut run, callback, keys, args);
        if run.filter_armed {
            crate::commands::disarm_kill_filter(ctx);
        }
        engine::clear_kill();
        if api::selected_db(ctx) != run.original_db {
            api::select_db(ctx, run.original_db);
        }
        let failed = out.error.is_some();
        found.function.stats.record(run.elapsed_us(), failed);
        crate::info::count_call(failed);
        if let Some(e) = out.error {
            api::reply_error_bytes(ctx, &e);
        }
    });
    if let Err(e) = r {
        api::reply_error(ctx, e);
    }
}
