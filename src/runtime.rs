//! The module's one runtime: the registry and the engine its functions live in. Main thread only.
//!
//! Commands that must answer while a function runs (RFUNC.STATS, RFUNC.KILL, served from inside the running
//! function's yield) never borrow the runtime: they read the counters below and the engine's run context.

use std::cell::{Cell, RefCell};

use crate::engine::LuaEngine;
use crate::registry::Registry;

pub struct Runtime {
    pub engine: LuaEngine,
    pub registry: Registry,
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
    static COUNTS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

pub fn init() -> Result<(), String> {
    let engine = LuaEngine::new()?;
    RUNTIME.with(|r| {
        *r.borrow_mut() = Some(Runtime {
            engine,
            registry: Registry::default(),
        })
    });
    Ok(())
}

/// Runs `f` with the runtime. Errors if the runtime is already in use (a re-entrant call).
pub fn with<R>(f: impl FnOnce(&mut Runtime) -> R) -> Result<R, &'static str> {
    with_runtime(true, f)
}

/// `with` for the call path: the registry does not change during a call, so its counts are not refreshed.
pub fn with_call<R>(f: impl FnOnce(&mut Runtime) -> R) -> Result<R, &'static str> {
    with_runtime(false, f)
}

fn with_runtime<R>(
    registry_may_change: bool,
    f: impl FnOnce(&mut Runtime) -> R,
) -> Result<R, &'static str> {
    RUNTIME.with(|r| {
        let mut guard = r
            .try_borrow_mut()
            .map_err(|_| "ERR rfunc is busy running a function")?;
        let rt = guard.as_mut().ok_or("ERR rfunc is not initialised")?;
        let out = f(rt);
        if registry_may_change {
            COUNTS.with(|c| c.set((rt.registry.libraries().len(), rt.registry.function_count())));
        }
        Ok(out)
    })
}

/// Read-only access that also works while a function holds the runtime (saving the registry in a fork child or
/// from a yield). The registry is not changed while a function runs (registry commands are not allowed then).
pub fn read<R>(f: impl FnOnce(&Runtime) -> R) -> Result<R, &'static str> {
    RUNTIME.with(|r| {
        // SAFETY: the only writer is the main thread's command path, which cannot run while we are called
        // (single thread); a held mutable borrow during a yield only reads and calls Lua, never the registry.
        let rt = unsafe { &*r.as_ptr() };
        rt.as_ref().map(f).ok_or("ERR rfunc is not initialised")
    })
}

/// (libraries, functions), readable while a function runs.
pub fn counts() -> (usize, usize) {
    COUNTS.with(|c| c.get())
}

/// Bytes of the Lua heap (readable while a function runs).
pub fn engine_memory() -> usize {
    read(|rt| rt.engine.memory()).unwrap_or(0)
}
