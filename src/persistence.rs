//! Durability: the registry rides in the RDB as module aux data (saved before the keyspace, like the built-in's
//! functions), and the registry is reset whenever the server starts loading a dataset, so the loaded one replaces
//! it (full sync, DEBUG RELOAD, restart).
//!
//! Aux record, encoding version 1: one string holding a FUNCTION DUMP-format payload of every library (the
//! payload codec, with its CRC-64, so corrupted bytes are detected rather than half-loaded). An empty registry
//! writes nothing (aux_save2), so the RDB stays loadable by a server without rfunc.

use std::ffi::{c_int, c_void, CString};

use rfunc_core::payload;
use valkey_module::native_types::ValkeyType;
use valkey_module::raw;

use crate::host;
use crate::registry::RestorePolicy;
use crate::rm::{self as api, Ctx};
use crate::runtime;

/// The data type's name is the only link between saved bytes and this module: it must never change.
pub const TYPE_NAME: &str = "rfunc-reg";
/// Bump when the aux layout changes; `aux_load` keeps reading every older version.
pub const ENCODING_VERSION: i32 = 1;

pub static REGISTRY_TYPE: ValkeyType = ValkeyType::new(
    TYPE_NAME,
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: None,
        rdb_save: None,
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: None,
        aux_load: Some(aux_load),
        aux_save: None,
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as i32,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: Some(aux_save2),
    },
);

fn log_io(io: *mut raw::RedisModuleIO, level: &str, msg: &str) {
    let level = CString::new(level).unwrap_or_default();
    let msg = CString::new(format!("rfunc: {msg}").replace('\0', " ")).unwrap_or_default();
    unsafe { api::api!(RedisModule_LogIOError)(io, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) };
}

extern "C" fn aux_save2(io: *mut raw::RedisModuleIO, _when: c_int) {
    let r = std::panic::catch_unwind(|| {
        // Runs in the fork child for BGSAVE / BGREWRITEAOF / full sync, on the main thread for SAVE: only reads.
        // Saving only reads. A fork for a save can happen while a function holds the runtime (a replica asking for
        // a full sync while the function yields), so read the registry even then: it does not change while saved.
        let bytes = runtime::read(|rt| {
            let libs = rt.registry.libraries();
            if libs.is_empty() {
                return None;
            }
            let codes: Vec<&[u8]> = libs.iter().map(|l| l.code.as_slice()).collect();
            // The aux string is compressed by the server itself if rdbcompression allows; store the payload raw.
            Some(payload::encode(&codes, host::get().rdb_version(), false))
        });
        match bytes {
            Ok(Some(p)) => raw::save_slice(io, &p),
            Ok(None) => {}
            Err(e) => log_io(io, "warning", &format!("cannot save the registry: {e}")),
        }
    });
    if r.is_err() {
        log_io(io, "warning", "panic while saving the registry");
    }
}

extern "C" fn aux_load(io: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    let r = std::panic::catch_unwind(|| load_registry(io, encver));
    match r {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(msg)) => {
            log_io(io, "warning", &msg);
            raw::REDISMODULE_ERR as c_int
        }
        Err(_) => {
            log_io(io, "warning", "panic while loading the registry");
            raw::REDISMODULE_ERR as c_int
        }
    }
}

fn load_registry(io: *mut raw::RedisModuleIO, encver: c_int) -> Result<(), String> {
    if encver > ENCODING_VERSION {
        return Err(format!(
            "the RDB holds registry data of encoding version {encver}, newer than this build understands ({ENCODING_VERSION}); upgrade rfunc"
        ));
    }
    let buf =
        raw::load_string_buffer(io).map_err(|e| format!("cannot read the registry record: {e}"))?;
    let decoded = payload::decode_with(buf.as_ref(), |_| true)
        .map_err(|e| format!("corrupted registry record: {e} ({})", e.detail()))?;
    let ctx: Ctx = unsafe { api::api!(RedisModule_GetContextFromIO)(io) };
    let count = decoded.libraries.len();
    runtime::with(|rt| {
        rt.registry.restore(
            &mut rt.engine,
            ctx,
            decoded.libraries,
            None,
            // The registry is empty here unless the load runs without a flush (DEBUG RELOAD NOFLUSH): merge.
            RestorePolicy::Replace,
            false,
        )
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| {
        format!(
            "cannot load a library of the registry record: {}",
            String::from_utf8_lossy(&e)
        )
    })?;
    log_io(io, "notice", &format!("loaded {count} libraries"));
    Ok(())
}

thread_local! {
    /// When the whole dataset was last emptied outside a load (FLUSHALL, or emptyData right before a load).
    static LAST_FULL_FLUSH: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    /// A dataset load is in progress.
    static LOADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn clear_registry(ctx: Ctx) {
    let _ = std::panic::catch_unwind(|| {
        if runtime::with(|rt| rt.registry.clear(Some(&mut rt.engine))).is_err() {
            api::log(ctx, "warning", b"cannot reset the registry before loading");
        }
    });
}

/// The registry is emptied together with the dataset when the server flushes it to load another one (full
/// sync, DEBUG RELOAD: the built-in's functions go with it), so the loaded registry replaces it and an empty
/// saved registry (no aux record) leaves it empty. It survives FLUSHALL, like the built-in's functions. Servers
/// differ in the order: 9.x flushes inside the load ("Flushing old data"), 8.x right before it.
unsafe extern "C" fn on_flush(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    sub: u64,
    data: *mut c_void,
) {
    if sub != raw::REDISMODULE_SUBEVENT_FLUSHDB_END || data.is_null() {
        return;
    }
    let info = &*(data as *const raw::RedisModuleFlushInfo);
    if info.dbnum != -1 {
        return;
    }
    if LOADING.with(|l| l.get()) {
        clear_registry(ctx);
    } else {
        LAST_FULL_FLUSH.with(|c| c.set(Some(std::time::Instant::now())));
    }
}

/// A dataset is about to be loaded: if the server emptied the dataset right before, empty the registry too.
/// Without a flush (DEBUG RELOAD NOFLUSH) the loaded libraries are merged in, same-name libraries replaced.
unsafe extern "C" fn on_loading(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    sub: u64,
    _data: *mut c_void,
) {
    match sub {
        raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
        | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
        | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START => {
            LOADING.with(|l| l.set(true));
            let flushed_just_before = LAST_FULL_FLUSH
                .with(|c| c.take())
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
            if flushed_just_before {
                clear_registry(ctx);
            }
        }
        _ => LOADING.with(|l| l.set(false)),
    }
}

fn persistence_field(ctx: Ctx, field: &std::ffi::CStr) -> Option<i64> {
    unsafe {
        let info = api::api!(RedisModule_GetServerInfo)(ctx, c"persistence".as_ptr());
        if info.is_null() {
            return None;
        }
        let mut err: c_int = 0;
        let v = api::api!(RedisModule_ServerInfoGetFieldSigned)(info, field.as_ptr(), &mut err);
        api::api!(RedisModule_FreeServerInfo)(ctx, info);
        (err == 0).then_some(v)
    }
}

/// With `aof-use-rdb-preamble no` an AOF rewrite writes a base file with no module data at all, and drops the
/// incremental files holding the RFUNC commands that built the registry (durability.md §1.4). When such a rewrite
/// starts, the server has already opened the incremental file that will follow the new base: write one
/// `RFUNC.RESTORE <payload> FLUSH` with the whole registry into it (AOF only), so a restart rebuilds the registry.
unsafe extern "C" fn on_fork_child(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    sub: u64,
    _data: *mut c_void,
) {
    if sub != raw::REDISMODULE_SUBEVENT_FORK_CHILD_BORN {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        if persistence_field(ctx, c"aof_rewrite_in_progress") != Some(1)
            || host::config_is_yes(ctx, "aof-use-rdb-preamble") != Some(false)
        {
            return;
        }
        let Ok(Some(p)) = runtime::read(|rt| {
            let libs = rt.registry.libraries();
            (!libs.is_empty()).then(|| {
                let codes: Vec<&[u8]> = libs.iter().map(|l| l.code.as_slice()).collect();
                payload::encode(
                    &codes,
                    host::get().rdb_version(),
                    host::config_is_yes(ctx, "rdbcompression") != Some(false),
                )
            })
        }) else {
            return;
        };
        let rc = api::api!(RedisModule_Replicate)(
            ctx,
            c"RFUNC.RESTORE".as_ptr(),
            c"bcR".as_ptr(),
            p.as_ptr(),
            p.len(),
            c"FLUSH".as_ptr(),
        );
        if rc != raw::REDISMODULE_OK as c_int {
            api::log(
                ctx,
                "warning",
                b"cannot write the registry into the AOF after a rewrite without RDB preamble",
            );
        }
    });
}

/// Subscribes to the server events persistence needs. Called from the module's init.
pub fn subscribe(ctx: Ctx) {
    let loading = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_LOADING,
        dataver: 1,
    };
    let fork = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_FORK_CHILD,
        dataver: 1,
    };
    let flush = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_FLUSHDB,
        dataver: 1,
    };
    unsafe {
        api::api!(RedisModule_SubscribeToServerEvent)(ctx, flush, Some(on_flush));
        api::api!(RedisModule_SubscribeToServerEvent)(ctx, loading, Some(on_loading));
        api::api!(RedisModule_SubscribeToServerEvent)(ctx, fork, Some(on_fork_child));
    }
}
