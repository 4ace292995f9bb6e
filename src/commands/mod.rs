//! The RFUNC command family: registration with full command metadata (flags, ACL categories, arity, key specs,
//! COMMAND DOCS) and the panic-safe dispatch into the handlers.

mod fcall;
mod functions;
mod killfilter;

pub use killfilter::{arm as arm_kill_filter, disarm as disarm_kill_filter};

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use valkey_module::raw;

use crate::rm::{self as api, Ctx};

/// Calls a handler (it gets the context and the arguments, argv[0] being the command name, and writes its own
/// reply) with a panic guard: a panic becomes an error reply and a log line, never an unwind into the
/// server.
fn dispatch(
    ctx: Ctx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    name: &str,
    handler: impl FnOnce(Ctx, &[&[u8]]),
) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let raw_args = unsafe { std::slice::from_raw_parts(argv, argc as usize) };
        // The common case (a handful of arguments) stays on the stack: no allocation per command.
        const INLINE: usize = 16;
        if raw_args.len() <= INLINE {
            let mut buf: [&[u8]; INLINE] = [&[]; INLINE];
            for (slot, s) in buf.iter_mut().zip(raw_args) {
                *slot = unsafe { api::string_bytes(*s) };
            }
            handler(ctx, &buf[..raw_args.len()]);
        } else {
            let args: Vec<&[u8]> = raw_args
                .iter()
                .map(|s| unsafe { api::string_bytes(*s) })
                .collect();
            handler(ctx, &args);
        }
    }));
    if let Err(payload) = r {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        api::log(
            ctx,
            "warning",
            format!("panic in {name}: {what}").as_bytes(),
        );
        api::reply_error(
            ctx,
            &format!("ERR internal error in {name}, see the server log"),
        );
    }
    raw::REDISMODULE_OK as c_int
}

macro_rules! entry {
    ($fname:ident, $name:expr, $handler:path) => {
        unsafe extern "C" fn $fname(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            dispatch(ctx, argv, argc, $name, $handler)
        }
    };
}

entry!(cmd_load, "rfunc.load", functions::load);
entry!(cmd_delete, "rfunc.delete", functions::delete);
entry!(cmd_flush, "rfunc.flush", functions::flush);
entry!(cmd_list, "rfunc.list", functions::list);
entry!(cmd_dump, "rfunc.dump", functions::dump);
entry!(cmd_restore, "rfunc.restore", functions::restore);
entry!(cmd_stats, "rfunc.stats", functions::stats);
entry!(cmd_kill, "rfunc.kill", functions::kill);
entry!(cmd_help, "rfunc.help", functions::help);
entry!(cmd_inspect, "rfunc.inspect", functions::inspect);
entry!(
    cmd_script_kill,
    "rfunc.script-kill",
    killfilter::script_kill
);
/// The commands were declared with the key-position callback (cluster mode, see `register`).
static KEYS_API: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// RFUNC.FCALL / FCALL_RO: in a cluster the server asks for the key positions (getkeys-api) before most calls;
/// answer that without building the argument list.
macro_rules! fcall_entry {
    ($fname:ident, $name:expr, $handler:path) => {
        unsafe extern "C" fn $fname(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            if KEYS_API.load(std::sync::atomic::Ordering::Relaxed)
                && api::api!(RedisModule_IsKeysPositionRequest)(ctx) != 0
            {
                let _ = catch_unwind(|| fcall::declare_keys(ctx, argv, argc));
                return raw::REDISMODULE_OK as c_int;
            }
            dispatch(ctx, argv, argc, $name, |ctx, args| {
                $handler(ctx, argv, args)
            })
        }
    };
}

fcall_entry!(cmd_fcall, "rfunc.fcall", fcall::fcall);
fcall_entry!(cmd_fcall_ro, "rfunc.fcall_ro", fcall::fcall_ro);
#[cfg(feature = "test-hooks")]
entry!(
    cmd_testpanic,
    "rfunc.testpanic",
    crate::testhooks::testpanic
);

/// One argument of COMMAND DOCS.
struct Arg {
    name: &'static str,
    kind: raw::RedisModuleCommandArgType,
    token: Option<&'static str>,
    flags: u32,
    key_spec: i32,
    subargs: Vec<Arg>,
}

fn arg(name: &'static str, kind: raw::RedisModuleCommandArgType) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        flags: 0,
        key_spec: -1,
        subargs: Vec::new(),
    }
}

impl Arg {
    fn token(mut self, t: &'static str) -> Arg {
        self.token = Some(t);
        self
    }
    fn optional(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        self
    }
    fn multiple(mut self) -> Arg {
        self.flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        self
    }
    fn key_spec(mut self, i: i32) -> Arg {
        self.key_spec = i;
        self
    }
    fn subargs(mut self, a: Vec<Arg>) -> Arg {
        self.subargs = a;
        self
    }
}

const STRING: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING;
const INTEGER: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER;
const KEY: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;
const PATTERN: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PATTERN;
const TOKEN: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN;
const ONEOF: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF;

/// The numkeys key spec of FCALL / FCALL_RO.
struct KeySpec {
    notes: &'static str,
    flags: u32,
}

struct Spec {
    name: &'static str,
    func: unsafe extern "C" fn(
        *mut raw::RedisModuleCtx,
        *mut *mut raw::RedisModuleString,
        c_int,
    ) -> c_int,
    flags: &'static str,
    acl: &'static str,
    arity: i32,
    summary: &'static str,
    complexity: &'static str,
    tips: Option<&'static str>,
    key_spec: Option<KeySpec>,
    args: Vec<Arg>,
}

fn specs() -> Vec<Spec> {
    let fcall_args = || {
        vec![
            arg("function", STRING),
            arg("numkeys", INTEGER),
            arg("key", KEY).key_spec(0).optional().multiple(),
            arg("arg", STRING).optional().multiple(),
        ]
    };
    vec![
        Spec {
            name: "rfunc.load",
            func: cmd_load,
            flags: "write deny-oom deny-script",
            acl: "write slow scripting",
            arity: -2,
            summary: "Creates a library.",
            complexity: "O(1) (considering compilation time is redundant)",
            tips: Some("request_policy:all_shards,response_policy:all_succeeded"),
            key_spec: None,
            args: vec![
                arg("replace", TOKEN).token("REPLACE").optional(),
                arg("function-code", STRING),
            ],
        },
        Spec {
            name: "rfunc.delete",
            func: cmd_delete,
            flags: "write deny-script",
            acl: "write slow scripting",
            arity: 2,
            summary: "Deletes a library and its functions.",
            complexity: "O(1)",
            tips: Some("request_policy:all_shards,response_policy:all_succeeded"),
            key_spec: None,
            args: vec![arg("library-name", STRING)],
        },
        Spec {
            name: "rfunc.flush",
            func: cmd_flush,
            flags: "write deny-script",
            acl: "write slow scripting",
            arity: -1,
            summary: "Deletes all libraries and functions.",
            complexity: "O(N) where N is the number of functions deleted",
            tips: Some("request_policy:all_shards,response_policy:all_succeeded"),
            key_spec: None,
            args: vec![arg("flush-type", ONEOF).optional().subargs(vec![
                arg("async", TOKEN).token("ASYNC"),
                arg("sync", TOKEN).token("SYNC"),
            ])],
        },
        Spec {
            name: "rfunc.list",
            func: cmd_list,
            flags: "deny-script",
            acl: "slow scripting",
            arity: -1,
            summary: "Returns information about all libraries.",
            complexity: "O(N) where N is the number of functions",
            tips: Some("nondeterministic_output_order"),
            key_spec: None,
            args: vec![
                arg("library-name-pattern", PATTERN)
                    .token("LIBRARYNAME")
                    .optional(),
                arg("withcode", TOKEN).token("WITHCODE").optional(),
                arg("withstats", TOKEN).token("WITHSTATS").optional(),
            ],
        },
        Spec {
            name: "rfunc.dump",
            func: cmd_dump,
            flags: "deny-script",
            acl: "slow scripting",
            arity: -1,
            summary: "Dumps all libraries (or the named ones) into a serialized binary payload.",
            complexity: "O(N) where N is the number of functions",
            tips: None,
            key_spec: None,
            args: vec![
                arg("version", INTEGER).token("VERSION").optional(),
                arg("library", STRING).token("LIBRARY").optional().multiple(),
            ],
        },
        Spec {
            name: "rfunc.restore",
            func: cmd_restore,
            flags: "write deny-oom deny-script",
            acl: "write slow scripting",
            arity: -2,
            summary: "Restores all libraries from a payload.",
            complexity: "O(N) where N is the number of functions on the payload",
            tips: Some("request_policy:all_shards,response_policy:all_succeeded"),
            key_spec: None,
            args: vec![
                arg("serialized-value", STRING),
                arg("policy", ONEOF).optional().subargs(vec![
                    arg("flush", TOKEN).token("FLUSH"),
                    arg("append", TOKEN).token("APPEND"),
                    arg("replace", TOKEN).token("REPLACE"),
                ]),
                arg("dryrun", TOKEN).token("DRYRUN").optional(),
            ],
        },
        Spec {
            name: "rfunc.stats",
            func: cmd_stats,
            flags: "deny-script allow-busy",
            acl: "slow scripting",
            arity: -1,
            summary: "Returns information about a function during execution; RESET zeroes per-function statistics.",
            complexity: "O(1)",
            tips: Some("nondeterministic_output,request_policy:all_shards,response_policy:special"),
            key_spec: None,
            args: vec![arg("reset", TOKEN).token("RESET").optional()],
        },
        Spec {
            name: "rfunc.kill",
            func: cmd_kill,
            flags: "deny-script allow-busy",
            acl: "slow scripting",
            arity: 1,
            summary: "Terminates a function during execution.",
            complexity: "O(1)",
            tips: Some("request_policy:all_shards,response_policy:one_succeeded"),
            key_spec: None,
            args: vec![],
        },
        Spec {
            name: "rfunc.help",
            func: cmd_help,
            flags: "allow-loading allow-stale",
            acl: "slow scripting",
            arity: 1,
            summary: "Returns helpful text about the different subcommands.",
            complexity: "O(1)",
            tips: None,
            key_spec: None,
            args: vec![],
        },
        Spec {
            name: "rfunc.inspect",
            func: cmd_inspect,
            flags: "deny-script",
            acl: "slow scripting",
            arity: 2,
            summary: "Shows what a serialized payload holds (version, checksum, libraries) without restoring it.",
            complexity: "O(N) where N is the number of functions on the payload",
            tips: None,
            key_spec: None,
            args: vec![arg("serialized-value", STRING)],
        },
        Spec {
            name: "rfunc.script-kill",
            func: cmd_script_kill,
            flags: "deny-script allow-busy",
            acl: "slow scripting",
            arity: 1,
            summary: "Internal: what SCRIPT KILL answers while an rfunc function runs (the module rewrites it).",
            complexity: "O(1)",
            tips: None,
            key_spec: None,
            args: vec![],
        },
        Spec {
            name: "rfunc.fcall",
            func: cmd_fcall,
            flags: "may-replicate deny-script no-monitor allow-stale no-mandatory-keys getkeys-api",
            acl: "slow scripting",
            arity: -3,
            summary: "Invokes a function.",
            complexity: "Depends on the function that is executed.",
            tips: None,
            key_spec: Some(KeySpec {
                notes:
                    "We cannot tell how the keys will be used so we assume the worst, RW and UPDATE",
                flags: raw::REDISMODULE_CMD_KEY_RW
                    | raw::REDISMODULE_CMD_KEY_ACCESS
                    | raw::REDISMODULE_CMD_KEY_UPDATE,
            }),
            args: fcall_args(),
        },
        Spec {
            name: "rfunc.fcall_ro",
            func: cmd_fcall_ro,
            flags: "readonly deny-script no-monitor allow-stale no-mandatory-keys getkeys-api",
            acl: "slow scripting",
            arity: -3,
            summary: "Invokes a read-only function.",
            complexity: "Depends on the function that is executed.",
            tips: None,
            key_spec: Some(KeySpec {
                notes:
                    "We cannot tell how the keys will be used so we assume the worst, RO and ACCESS",
                flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
            }),
            args: fcall_args(),
        },
        #[cfg(feature = "test-hooks")]
        Spec {
            name: "rfunc.testpanic",
            func: cmd_testpanic,
            flags: "deny-script",
            acl: "slow dangerous",
            arity: 2,
            summary: "Test builds only: panics in the given place (command, lua).",
            complexity: "O(1)",
            tips: None,
            key_spec: None,
            args: vec![arg("where", STRING)],
        },
    ]
}

/// Keeps C strings alive until the server copied them (SetCommandInfo copies what it keeps).
struct Strings(Vec<CString>);

impl Strings {
    fn add(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s).expect("no NUL in command metadata");
        let p = c.as_ptr();
        self.0.push(c);
        p
    }
}

fn build_args(
    args: &[Arg],
    strings: &mut Strings,
    arrays: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> *mut raw::RedisModuleCommandArg {
    let mut out: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
    for a in args {
        // SAFETY: a plain C struct; all-zero is "no value" for each field.
        let mut c: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
        c.name = strings.add(a.name);
        c.type_ = a.kind;
        c.key_spec_index = a.key_spec;
        c.flags = a.flags as c_int;
        if let Some(t) = a.token {
            c.token = strings.add(t);
        }
        if !a.subargs.is_empty() {
            c.subargs = build_args(&a.subargs, strings, arrays);
        }
        out.push(c);
    }
    // The list ends with an all-zero entry.
    out.push(unsafe { std::mem::zeroed() });
    let p = out.as_mut_ptr();
    arrays.push(out);
    p
}

/// Registers every RFUNC command with its metadata, and the KILL filter. Called from the module's init.
pub fn register(ctx: Ctx) -> Result<(), String> {
    // The key-position callback (getkeys-api) is what makes a cluster route RFUNC.FCALL by its keys (MOVED,
    // CROSSSLOT): the key specs alone do not. Outside a cluster the key specs answer every key question (ACL,
    // COMMAND GETKEYS, tracking), in C, while the callback would cost a module call before every command.
    let cluster = api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0;
    KEYS_API.store(cluster, std::sync::atomic::Ordering::Relaxed);
    for spec in specs() {
        let name = CString::new(spec.name).expect("command name");
        let flags = if cluster {
            spec.flags.to_owned()
        } else {
            spec.flags.replace(" getkeys-api", "")
        };
        let flags = CString::new(flags).expect("flags");
        let rc = unsafe {
            api::api!(RedisModule_CreateCommand)(
                ctx,
                name.as_ptr(),
                Some(spec.func),
                flags.as_ptr(),
                0,
                0,
                0,
            )
        };
        if rc != raw::REDISMODULE_OK as c_int {
            return Err(format!("cannot create command {}", spec.name));
        }
        let cmd = unsafe { api::api!(RedisModule_GetCommand)(ctx, name.as_ptr()) };
        if cmd.is_null() {
            return Err(format!("cannot find command {}", spec.name));
        }
        let acl = CString::new(spec.acl).expect("acl");
        if unsafe { api::api!(RedisModule_SetCommandACLCategories)(cmd, acl.as_ptr()) }
            != raw::REDISMODULE_OK as c_int
        {
            return Err(format!("cannot set the ACL categories of {}", spec.name));
        }
        let mut strings = Strings(Vec::new());
        let mut arrays = Vec::new();
        let version = raw::RedisModuleCommandInfoVersion {
            version: 1,
            sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
            sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
            sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
        };
        let mut key_specs: Vec<raw::RedisModuleCommandKeySpec> = Vec::new();
        if let Some(ks) = &spec.key_spec {
            let mut k: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
            k.notes = strings.add(ks.notes);
            k.flags = ks.flags as u64;
            k.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
            k.bs.index.pos = 2;
            k.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_KEYNUM;
            k.fk.keynum.keynumidx = 0;
            k.fk.keynum.firstkey = 1;
            k.fk.keynum.keystep = 1;
            key_specs.push(k);
            key_specs.push(unsafe { std::mem::zeroed() });
        }
        let mut info: raw::RedisModuleCommandInfo = unsafe { std::mem::zeroed() };
        info.version = &version;
        info.summary = strings.add(spec.summary);
        info.complexity = strings.add(spec.complexity);
        info.since = strings.add("1.0.0");
        info.arity = spec.arity;
        if let Some(t) = spec.tips {
            info.tips = strings.add(t);
        }
        info.key_specs = if key_specs.is_empty() {
            ptr::null_mut()
        } else {
            key_specs.as_mut_ptr()
        };
        info.args = if spec.args.is_empty() {
            ptr::null_mut()
        } else {
            build_args(&spec.args, &mut strings, &mut arrays)
        };
        if unsafe { api::api!(RedisModule_SetCommandInfo)(cmd, &info) }
            != raw::REDISMODULE_OK as c_int
        {
            return Err(format!("cannot set the command info of {}", spec.name));
        }
    }
    Ok(())
}
