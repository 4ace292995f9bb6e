//! rfunc: Valkey Functions as a loadable module.
//!
//! This file is the module's table of contents: the `valkey_module!` declaration and its init. Commands are
//! registered (with their full metadata) by `commands::register`; everything else lives in the modules below.

pub mod alloc;
mod cluster_sync;
mod commands;
mod config;
mod engine;
mod hash;
mod host;
mod info;
pub mod inspect;
mod persistence;
mod registry;
mod rm;
mod runtime;
#[cfg(feature = "test-hooks")]
mod testhooks;

use persistence::REGISTRY_TYPE;
use valkey_module::configuration::ConfigurationFlags;
use valkey_module::{valkey_module, Context, Status, ValkeyString};

pub const MODULE_NAME: &str = "rfunc";

/// Module version as MODULE LIST reports it: major*10000 + minor*100 + patch of the package version.
pub const MODULE_VERSION: i32 = version_number(env!("CARGO_PKG_VERSION"));

const fn version_number(v: &str) -> i32 {
    let b = v.as_bytes();
    let (mut parts, mut cur, mut i) = ([0i32; 3], 0usize, 0usize);
    while i < b.len() && cur < 3 {
        match b[i] {
            b'.' => cur += 1,
            d @ b'0'..=b'9' => parts[cur] = parts[cur] * 10 + (d - b'0') as i32,
            _ => break,
        }
        i += 1;
    }
    parts[0] * 10000 + parts[1] * 100 + parts[2]
}

fn init(ctx: &Context, _args: &[ValkeyString]) -> Status {
    host::detect(ctx.ctx);
    config::refresh(ctx.ctx);
    if let Err(e) = runtime::init() {
        ctx.log_warning(&format!("cannot start the Lua engine: {e}"));
        return Status::Err;
    }
    if let Err(e) = commands::register(ctx.ctx) {
        ctx.log_warning(&e);
        return Status::Err;
    }
    // Corrupted aux bytes must give rfunc a clean error rather than abort the server, and this keeps diskless
    // replica loading available.
    ctx.set_module_options(valkey_module::ModuleOptions::HANDLE_IO_ERRORS);
    persistence::subscribe(ctx.ctx);
    info::register(ctx.ctx);
    config::subscribe(ctx.ctx);
    engine::call::subscribe(ctx.ctx);
    cluster_sync::init(ctx.ctx);
    Status::Ok
}

valkey_module! {
    name: MODULE_NAME,
    version: MODULE_VERSION,
    allocator: (alloc::RfuncAlloc, alloc::RfuncAlloc),
    data_types: [REGISTRY_TYPE],
    init: init,
    commands: [],
    configurations: [
        i64: [
            ["max-memory", &config::MAX_MEMORY, config::MAX_MEMORY_DEFAULT, 0, i64::MAX, ConfigurationFlags::MEMORY, None],
            ["busy-reply-threshold", &config::BUSY_THRESHOLD, config::BUSY_THRESHOLD_DEFAULT, -1, i64::MAX, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [
            ["cluster-sync", &cluster_sync::ENABLED, false, ConfigurationFlags::DEFAULT, None],
        ],
        enum: [],
        module_args_as_configuration: true,
    ]
}
