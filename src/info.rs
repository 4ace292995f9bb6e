//! The `# rfunc` section of INFO (also `INFO rfunc` / `INFO everything`).

use std::ffi::{c_int, CString};
use std::sync::atomic::{AtomicU64, Ordering};

use valkey_module::raw;

use crate::engine::lua;
use crate::rm::api;
use crate::runtime;

// Main thread only; atomics rather than thread-locals because they are cheaper to reach from a loaded library.
static CALLS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts one function call and whether it ended in an error.
pub fn count_call(failed: bool) {
    // One writer: a plain load and store, no locked read-modify-write.
    CALLS.store(CALLS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    if failed {
        ERRORS.store(ERRORS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Test builds only: KEYS / ARGV strings handed to calls by reference (see `RunCtx::caller_string`), so the
/// tests see that the sharing they check for invisibility does happen.
#[cfg(feature = "test-hooks")]
static ARGS_BY_REFERENCE: AtomicU64 = AtomicU64::new(0);

#[inline]
pub fn count_arg_by_reference() {
    #[cfg(feature = "test-hooks")]
    ARGS_BY_REFERENCE.store(
        ARGS_BY_REFERENCE.load(Ordering::Relaxed) + 1,
        Ordering::Relaxed,
    );
}

unsafe fn field_i64(ctx: *mut raw::RedisModuleInfoCtx, name: &str, v: i64) {
    let name = CString::new(name).expect("field name");
    api!(RedisModule_InfoAddFieldLongLong)(ctx, name.as_ptr(), v);
}

unsafe fn field_str(ctx: *mut raw::RedisModuleInfoCtx, name: &str, v: &str) {
    let name = CString::new(name).expect("field name");
    let v = CString::new(v.replace(['\r', '\n', '\0'], " ")).expect("no NUL");
    api!(RedisModule_InfoAddFieldCString)(ctx, name.as_ptr(), v.as_ptr());
}

extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let _ = std::panic::catch_unwind(|| unsafe {
        // Section "" is the module's default section: `# rfunc`; the server prefixes field names with `rfunc_`.
        api!(RedisModule_InfoAddSection)(ctx, c"".as_ptr());
        let (libs, fns) = runtime::counts();
        field_str(ctx, "version", env!("CARGO_PKG_VERSION"));
        field_i64(ctx, "libraries", libs as i64);
        field_i64(ctx, "functions", fns as i64);
        field_i64(ctx, "engine_memory", runtime::engine_memory() as i64);
        field_i64(ctx, "calls", CALLS.load(Ordering::Relaxed) as i64);
        field_i64(ctx, "errors", ERRORS.load(Ordering::Relaxed) as i64);
        #[cfg(feature = "test-hooks")]
        field_i64(
            ctx,
            "test_args_by_reference",
            ARGS_BY_REFERENCE.load(Ordering::Relaxed) as i64,
        );
        let running = lua::running()
            .map(|r| r.function().to_owned())
            .unwrap_or_default();
        field_str(ctx, "running_function", &running);
        field_str(
            ctx,
            "registry_fingerprint",
            &crate::cluster_sync::fingerprint(),
        );
        field_i64(
            ctx,
            "registry_stamp",
            crate::cluster_sync::stamp_counter() as i64,
        );
    });
}

pub fn register(ctx: crate::rm::Ctx) {
    raw::register_info_function(ctx, Some(info));
}
