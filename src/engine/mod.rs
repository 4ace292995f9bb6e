//! The engine behind the registry: Lua (the only one the server has). The registry talks to it through
//! `LuaEngine` (load a library's code and collect its registrations, call a function, report memory, free).

pub mod call;
mod heap;
mod libs;
pub mod lua;
pub mod reply;

use std::sync::atomic::{AtomicBool, Ordering};

pub use lua::{LuaEngine, Registered, RunCtx, LUA_ARGS};

static KILL: AtomicBool = AtomicBool::new(false);

/// Asks the running function to stop at its next hook.
pub fn request_kill() {
    KILL.store(true, Ordering::SeqCst);
}

pub fn clear_kill() {
    // Set and read on the main thread only (RFUNC.KILL runs from the function's yield).
    KILL.store(false, Ordering::Relaxed);
}

pub fn kill_requested() -> bool {
    KILL.load(Ordering::Relaxed)
}

/// Called from the run hook, before it yields: arms the KILL command filter, and logs the built-in's "Slow
/// script detected" line once the function passes the busy threshold (the server does not log it for module
/// yields).
pub fn on_busy_tick(run: &mut RunCtx) {
    if !run.filter_armed {
        run.filter_armed = true;
        crate::commands::arm_kill_filter(run.ctx);
    }
    if run.busy_reported {
        return;
    }
    let threshold = crate::config::busy_threshold_ms();
    if threshold > 0 && (run.elapsed_us() / 1000) as i64 >= threshold {
        run.busy_reported = true;
        let msg = format!(
            "Slow script detected: still in execution after {} milliseconds. You can try killing the script using the RFUNC.KILL command. Script name is: {}.",
            run.elapsed_us() / 1000,
            run.function()
        );
        crate::rm::log(run.ctx, "warning", msg.as_bytes());
    }
}
