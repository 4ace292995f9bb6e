//! rfunc's own configs (CONFIG GET/SET `rfunc.*`, `loadmodule ... <name> <value>`, valkey.conf) and the server
//! settings rfunc follows, cached so the call path does not ask the server each time.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI64, Ordering};

use valkey_module::raw;

use crate::host;
use crate::rm::{self as api, Ctx};

/// `rfunc.max-memory`: bytes the Lua engine may allocate; 0 = unlimited.
pub static MAX_MEMORY: AtomicI64 = AtomicI64::new(0);
pub const MAX_MEMORY_DEFAULT: i64 = 0;
/// `rfunc.busy-reply-threshold`: milliseconds after which a running function lets other clients in (they get
/// BUSY) and can be killed; -1 = follow the server's `busy-reply-threshold`.
pub static BUSY_THRESHOLD: AtomicI64 = AtomicI64::new(-1);
pub const BUSY_THRESHOLD_DEFAULT: i64 = -1;

static SERVER_BUSY_THRESHOLD_MS: AtomicI64 = AtomicI64::new(5000);

/// The busy threshold in effect, in milliseconds.
pub fn busy_threshold_ms() -> i64 {
    match BUSY_THRESHOLD.load(Ordering::Relaxed) {
        v if v >= 0 => v,
        _ => SERVER_BUSY_THRESHOLD_MS.load(Ordering::Relaxed),
    }
}

pub fn max_memory() -> usize {
    MAX_MEMORY.load(Ordering::Relaxed).max(0) as usize
}

/// Re-reads the server settings rfunc caches.
pub fn refresh(ctx: Ctx) {
    if let Some(v) = host::config_get(ctx, "busy-reply-threshold") {
        if let Some(ms) = std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            SERVER_BUSY_THRESHOLD_MS.store(ms, Ordering::Relaxed);
        }
    }
}

unsafe extern "C" fn on_config_change(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _sub: u64,
    _data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| refresh(ctx));
}

pub fn subscribe(ctx: Ctx) {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_CONFIG,
        dataver: 1,
    };
    unsafe { api::api!(RedisModule_SubscribeToServerEvent)(ctx, event, Some(on_config_change)) };
}
