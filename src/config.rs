//! Server settings rfunc follows, cached so the call path does not ask the server each time.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::host;
use crate::rm::Ctx;

static BUSY_THRESHOLD_MS: AtomicI64 = AtomicI64::new(5000);

/// The server's `busy-reply-threshold` (`lua-time-limit`), in milliseconds.
pub fn busy_threshold_ms() -> i64 {
    BUSY_THRESHOLD_MS.load(Ordering::Relaxed)
}

/// Re-reads the server settings rfunc caches.
pub fn refresh(ctx: Ctx) {
    if let Some(v) = host::config_get(ctx, "busy-reply-threshold") {
        if let Some(ms) = std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()) {
            BUSY_THRESHOLD_MS.store(ms, Ordering::Relaxed);
        }
    }
}
