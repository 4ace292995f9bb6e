//! Cluster-wide libraries (`rfunc.cluster-sync yes`): registry changes made on one primary reach every other
//! primary through the cluster bus; each primary replicates them to its own replicas and AOF.
//!
//! Model:
//! * Every change a user makes on a primary (LOAD, DELETE, FLUSH, RESTORE) is broadcast as an operation and
//!   applied idempotently by the other primaries: upsert libraries (RESTORE REPLACE semantics), delete a library
//!   (missing is fine), or replace the whole registry (FLUSH, RESTORE FLUSH).
//! * Each primary keeps a stamp `(counter, node id)` naming the state its registry is in. A local change moves
//!   it to `(counter + 1, my id)` and is broadcast with the stamp it was made on; a peer applies the operation
//!   only if it is in exactly that state, and then takes the new stamp.
//! * Anti-entropy: every second each primary broadcasts a heartbeat with its stamp and registry fingerprint.
//!   A node that hears a different fingerprint compares `(stamp, fingerprint)`; the greater side sends its whole
//!   registry, which the other adopts with the stamp. So a node that missed operations (it was down, or a
//!   replica that was just promoted) adopts the cluster's registry instead of mixing old and new, and a node that
//!   joins or restarts catches up.
//! * Two nodes changing the registry at the same moment (both from the same state) make two states with equal
//!   counters: neither applies the other's operation, and anti-entropy settles on the higher stamp (node id breaks
//!   the tie). The whole registry of that node wins everywhere; the other change is dropped, also on the node
//!   that made it (its client already got OK). Changes made one after another, with a heartbeat in between, all
//!   apply.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_uchar, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use rfunc_core::payload;
use valkey_module::raw;

use crate::host;
use crate::registry::RestorePolicy;
use crate::rm::{self as api, Ctx};
use crate::runtime;

/// `rfunc.cluster-sync`: deliver registry changes to every node of the cluster.
pub static ENABLED: AtomicBool = AtomicBool::new(false);

const MSG_UPSERT: u8 = 1;
const MSG_DELETE: u8 = 2;
const MSG_REPLACE_ALL: u8 = 3;
const MSG_HEARTBEAT: u8 = 4;
const MSG_SNAPSHOT: u8 = 5;
/// Message types are per module on the cluster bus; these are rfunc's.
const TYPES: [u8; 5] = [
    MSG_UPSERT,
    MSG_DELETE,
    MSG_REPLACE_ALL,
    MSG_HEARTBEAT,
    MSG_SNAPSHOT,
];
const NODE_ID_LEN: usize = 40;
const HEARTBEAT_MS: i64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Stamp {
    counter: u64,
    node: [u8; NODE_ID_LEN],
}

thread_local! {
    static STAMP: Cell<Stamp> = const { Cell::new(Stamp { counter: 0, node: [0; NODE_ID_LEN] }) };
    /// Messages that arrived while a function ran (the registry was busy): applied by the next heartbeat.
    static PENDING: RefCell<Vec<(u8, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

fn enabled(ctx: Ctx) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
        && api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

fn my_id() -> [u8; NODE_ID_LEN] {
    let mut id = [0u8; NODE_ID_LEN];
    unsafe {
        let p = api::api!(RedisModule_GetMyClusterID)();
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(p as *const u8, id.as_mut_ptr(), NODE_ID_LEN);
        }
    }
    id
}

/// SHA-1 over `(name, code)` pairs in name order: the same libraries give the same value on every node.
fn fingerprint_of<'a>(mut libs: Vec<(&'a str, &'a [u8])>) -> String {
    libs.sort();
    let mut h = sha1_smol::Sha1::new();
    for (name, code) in libs {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(code.len() as u64).to_le_bytes());
        h.update(code);
    }
    h.digest().to_string()
}

/// The registry fingerprint (`rfunc_registry_fingerprint` in INFO).
pub fn fingerprint() -> String {
    runtime::read(|rt| {
        fingerprint_of(
            rt.registry
                .libraries()
                .iter()
                .map(|l| (l.name.as_str(), l.code.as_slice()))
                .collect(),
        )
    })
    .unwrap_or_default()
}

pub fn stamp_counter() -> u64 {
    STAMP.with(|s| s.get().counter)
}

fn encode(stamp: Stamp, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + NODE_ID_LEN + data.len());
    m.extend_from_slice(&stamp.counter.to_le_bytes());
    m.extend_from_slice(&stamp.node);
    m.extend_from_slice(data);
    m
}

fn decode(msg: &[u8]) -> Option<(Stamp, &[u8])> {
    if msg.len() < 8 + NODE_ID_LEN {
        return None;
    }
    let counter = u64::from_le_bytes(msg[..8].try_into().ok()?);
    let mut node = [0u8; NODE_ID_LEN];
    node.copy_from_slice(&msg[8..8 + NODE_ID_LEN]);
    Some((Stamp { counter, node }, &msg[8 + NODE_ID_LEN..]))
}

fn send(ctx: Ctx, target: Option<&[u8; NODE_ID_LEN]>, kind: u8, msg: &[u8]) {
    // The server looks the target up as a C string.
    let mut id = [0u8; NODE_ID_LEN + 1];
    let target_ptr = match target {
        Some(t) => {
            id[..NODE_ID_LEN].copy_from_slice(t);
            id.as_ptr() as *const c_char
        }
        None => std::ptr::null(),
    };
    unsafe {
        api::api!(RedisModule_SendClusterMessage)(
            ctx,
            target_ptr,
            kind,
            msg.as_ptr() as *const c_char,
            msg.len() as u32,
        )
    };
}

fn whole_registry() -> Vec<u8> {
    runtime::read(|rt| {
        let codes: Vec<&[u8]> = rt
            .registry
            .libraries()
            .iter()
            .map(|l| l.code.as_slice())
            .collect();
        payload::encode(&codes, host::get().rdb_version(), true)
    })
    .unwrap_or_default()
}

/// A user changed the registry on this node: tell the others. `kind` is the operation, `data` its argument
/// (a payload for upserts and replace-all, a library name for delete).
fn broadcast_change(ctx: Ctx, kind: u8, data: &[u8]) {
    if !enabled(ctx)
        || api::context_flags(ctx)
            & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
            != 0
    {
        return;
    }
    // The operation carries the stamp of the state it was made on: a peer applies it only if it holds that very
    // state, otherwise it waits for the anti-entropy snapshot (so a lagging node never mixes old and new).
    let (prev, stamp) = STAMP.with(|s| {
        let prev = s.get();
        let next = Stamp {
            counter: prev.counter + 1,
            node: my_id(),
        };
        s.set(next);
        (prev, next)
    });
    send(ctx, None, kind, &encode(stamp, &encode(prev, data)));
}

pub fn library_loaded(ctx: Ctx, code: &[u8]) {
    if enabled(ctx) {
        broadcast_change(
            ctx,
            MSG_UPSERT,
            &payload::encode(&[code], host::get().rdb_version(), true),
        );
    }
}

pub fn library_deleted(ctx: Ctx, name: &str) {
    broadcast_change(ctx, MSG_DELETE, name.as_bytes());
}

pub fn flushed(ctx: Ctx) {
    if enabled(ctx) {
        broadcast_change(
            ctx,
            MSG_REPLACE_ALL,
            &payload::encode::<&[u8]>(&[], host::get().rdb_version(), true),
        );
    }
}

pub fn restored(ctx: Ctx, payload_bytes: &[u8], flush: bool) {
    broadcast_change(
        ctx,
        if flush { MSG_REPLACE_ALL } else { MSG_UPSERT },
        payload_bytes,
    );
}

/// Applies an operation from another node and replicates it to this node's replicas and AOF.
fn apply(ctx: Ctx, kind: u8, data: &[u8]) -> Result<(), String> {
    let r = match kind {
        MSG_UPSERT | MSG_REPLACE_ALL => {
            let decoded = payload::decode(data).map_err(|e| e.to_string())?;
            let policy = if kind == MSG_REPLACE_ALL {
                RestorePolicy::Flush
            } else {
                RestorePolicy::Replace
            };
            runtime::with(|rt| {
                rt.registry
                    .restore(&mut rt.engine, ctx, decoded.libraries, None, policy, false)
                    .map(|_| ())
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| String::from_utf8_lossy(&e).into_owned())?;
            let policy_word: &std::ffi::CStr = if kind == MSG_REPLACE_ALL {
                c"FLUSH"
            } else {
                c"REPLACE"
            };
            unsafe {
                api::api!(RedisModule_Replicate)(
                    ctx,
                    c"RFUNC.RESTORE".as_ptr(),
                    c"bc".as_ptr(),
                    data.as_ptr(),
                    data.len(),
                    policy_word.as_ptr(),
                )
            };
            Ok(())
        }
        MSG_DELETE => {
            let name = String::from_utf8_lossy(data).into_owned();
            let existed = runtime::with(|rt| rt.registry.delete(&mut rt.engine, &name).is_ok())
                .map_err(|e| e.to_string())?;
            if existed {
                unsafe {
                    api::api!(RedisModule_Replicate)(
                        ctx,
                        c"RFUNC.DELETE".as_ptr(),
                        c"b".as_ptr(),
                        data.as_ptr(),
                        data.len(),
                    )
                };
            }
            Ok(())
        }
        _ => Ok(()),
    };
    r
}

/// The fingerprint of a registry payload (what `fingerprint` gives once it is restored).
fn payload_fingerprint(data: &[u8]) -> Option<String> {
    let decoded = payload::decode(data).ok()?;
    let mut names = Vec::with_capacity(decoded.libraries.len());
    for code in &decoded.libraries {
        names.push(rfunc_core::library::parse_header(code).ok()?.name);
    }
    Some(fingerprint_of(
        names
            .iter()
            .map(String::as_str)
            .zip(decoded.libraries.iter().map(Vec::as_slice))
            .collect(),
    ))
}

fn handle(ctx: Ctx, sender: [u8; NODE_ID_LEN], kind: u8, msg: &[u8]) {
    let Some((stamp, data)) = decode(msg) else {
        return;
    };
    let mine = STAMP.with(|s| s.get());
    let (apply_kind, data) = match kind {
        MSG_HEARTBEAT => {
            let theirs = String::from_utf8_lossy(data);
            let ours = fingerprint();
            // The greater (stamp, fingerprint) side sends its whole registry; the other adopts it.
            if theirs != ours && (mine, ours.as_str()) > (stamp, theirs.as_ref()) {
                let full = encode(mine, &whole_registry());
                send(ctx, Some(&sender), MSG_SNAPSHOT, &full);
            }
            return;
        }
        MSG_SNAPSHOT => {
            let Some(theirs) = payload_fingerprint(data) else {
                return;
            };
            if (stamp, theirs.as_str()) <= (mine, fingerprint().as_str()) {
                return;
            }
            (MSG_REPLACE_ALL, data)
        }
        _ => {
            // An operation applies only on the state it was made on.
            let Some((prev, op)) = decode(data) else {
                return;
            };
            if prev != mine {
                return;
            }
            (kind, op)
        }
    };
    match apply(ctx, apply_kind, data) {
        Ok(()) => STAMP.with(|s| s.set(stamp)),
        Err(e) => api::log(
            ctx,
            "warning",
            format!("cluster-sync: cannot apply a change from a peer: {e}").as_bytes(),
        ),
    }
}

unsafe extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender: *const c_char,
    kind: u8,
    payload: *const c_uchar,
    len: u32,
) {
    let _ = std::panic::catch_unwind(|| {
        if !ENABLED.load(Ordering::Relaxed)
            || api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_MASTER == 0
        {
            // Replicas follow their primary through replication.
            return;
        }
        let mut id = [0u8; NODE_ID_LEN];
        std::ptr::copy_nonoverlapping(sender as *const u8, id.as_mut_ptr(), NODE_ID_LEN);
        let msg = std::slice::from_raw_parts(payload, len as usize);
        if crate::engine::lua::running().is_some() {
            let mut m = id.to_vec();
            m.extend_from_slice(msg);
            PENDING.with(|p| p.borrow_mut().push((kind, m)));
            return;
        }
        handle(ctx, id, kind, msg);
    });
}

unsafe extern "C" fn heartbeat(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        if enabled(ctx) {
            let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
            for (kind, m) in pending {
                let mut id = [0u8; NODE_ID_LEN];
                id.copy_from_slice(&m[..NODE_ID_LEN]);
                handle(ctx, id, kind, &m[NODE_ID_LEN..]);
            }
            let stamp = STAMP.with(|s| s.get());
            send(
                ctx,
                None,
                MSG_HEARTBEAT,
                &encode(stamp, fingerprint().as_bytes()),
            );
        }
    });
    arm(ctx);
}

fn arm(ctx: Ctx) {
    unsafe {
        api::api!(RedisModule_CreateTimer)(ctx, HEARTBEAT_MS, Some(heartbeat), std::ptr::null_mut())
    };
}

/// Registers the cluster message receivers and starts the heartbeat. Called from the module's init.
pub fn init(ctx: Ctx) {
    for t in TYPES {
        unsafe { api::api!(RedisModule_RegisterClusterMessageReceiver)(ctx, t, Some(on_message)) };
    }
    arm(ctx);
}
