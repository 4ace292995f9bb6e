//! Libraries survive restarts, reloads, replication and the AOF (spec durability.md §6). Real servers, real
//! restarts; run against each supported version with `make test-all`.

mod common;

use std::time::Duration;

use common::{info_field, wait_until, Conn, Server, Value};

fn lib(name: &str, f: &str, ret: i64) -> String {
    format!("#!lua name={name}\nserver.register_function('{f}', function() return {ret} end)")
}

fn load(c: &mut Conn, code: &str) {
    let v = c.cmd(&["RFUNC.LOAD", code]);
    assert!(matches!(v, Value::Bulk(_)), "RFUNC.LOAD failed: {v:?}");
}

/// The registry as a sorted list of (library, code).
fn registry(c: &mut Conn) -> Vec<(String, String)> {
    let v = c.cmd(&["RFUNC.LIST", "WITHCODE"]);
    let mut out: Vec<(String, String)> = v
        .as_array()
        .iter()
        .map(|lib| {
            let f = lib.as_array();
            let get = |k: &str| {
                f.chunks(2)
                    .find(|kv| kv[0].as_str() == k)
                    .map(|kv| kv[1].as_str())
                    .unwrap()
            };
            (get("library_name"), get("library_code"))
        })
        .collect();
    out.sort();
    out
}

fn names(c: &mut Conn) -> Vec<String> {
    registry(c).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn save_and_restart_keeps_the_registry() {
    let Some(b) = Server::owned("save_and_restart") else {
        return;
    };
    let mut s = b.start();
    let mut c = s.conn();
    load(&mut c, &lib("one", "f1", 1));
    load(&mut c, &lib("two", "f2", 2));
    let before = registry(&mut c);
    assert_eq!(c.cmd(&["SAVE"]), Value::Simple("OK".into()));
    s.shutdown(true);
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(registry(&mut c), before);
    assert_eq!(c.cmd(&["RFUNC.FCALL", "f2", "0"]), Value::Int(2));
    assert!(s.log().contains("rfunc: loaded 2 libraries"), "{}", s.log());
}

#[test]
fn bgsave_then_kill9_restores_exactly_the_snapshot() {
    let Some(b) = Server::owned("bgsave_kill9") else {
        return;
    };
    let mut s = b.start();
    let mut c = s.conn();
    load(&mut c, &lib("one", "f1", 1));
    load(&mut c, &lib("two", "f2", 2));
    c.cmd(&["BGSAVE"]);
    wait_until("BGSAVE", Duration::from_secs(20), || {
        info_field(&mut c, "persistence", "rdb_bgsave_in_progress") == "0"
            && info_field(&mut c, "persistence", "rdb_last_bgsave_status") == "ok"
            && info_field(&mut c, "persistence", "rdb_changes_since_last_save") == "0"
    });
    load(&mut c, &lib("three", "f3", 3));
    s.kill9();
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(names(&mut c), vec!["one", "two"]);
}

#[test]
fn debug_reload_keeps_and_nosave_replaces_the_registry() {
    let Some(b) = Server::owned("debug_reload") else {
        return;
    };
    let s = b.start();
    let mut c = s.conn();
    load(&mut c, &lib("one", "f1", 1));
    let before = registry(&mut c);
    assert_eq!(c.cmd(&["DEBUG", "RELOAD"]), Value::Simple("OK".into()));
    assert_eq!(registry(&mut c), before);
    assert_eq!(c.cmd(&["RFUNC.FCALL", "f1", "0"]), Value::Int(1));
    // NOSAVE loads the file saved above: a library added since must not survive (no merge).
    load(&mut c, &lib("later", "fl", 9));
    assert_eq!(
        c.cmd(&["DEBUG", "RELOAD", "NOSAVE"]),
        Value::Simple("OK".into())
    );
    assert_eq!(names(&mut c), vec!["one"]);
    // NOFLUSH keeps what is in memory and merges the file into it (valkey's functions.tcl "debug reload with
    // nosave and noflush").
    load(&mut c, &lib("kept", "fk", 5));
    assert_eq!(
        c.cmd(&["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"]),
        Value::Simple("OK".into())
    );
    assert_eq!(names(&mut c), vec!["kept", "one"]);
    assert_eq!(c.cmd(&["RFUNC.FCALL", "fk", "0"]), Value::Int(5));
    c.cmd(&["RFUNC.DELETE", "kept"]);
    // An RDB saved with an empty registry empties the registry on reload.
    c.cmd(&["RFUNC.FLUSH"]);
    assert_eq!(c.cmd(&["DEBUG", "RELOAD"]), Value::Simple("OK".into()));
    load(&mut c, &lib("again", "fa", 1));
    assert_eq!(
        c.cmd(&["DEBUG", "RELOAD", "NOSAVE"]),
        Value::Simple("OK".into())
    );
    assert_eq!(names(&mut c), Vec::<String>::new());
}

#[test]
fn empty_registry_rdb_loads_without_the_module_and_foreign_rdb_loads_with_it() {
    let Some(b) = Server::owned("empty_registry_rdb") else {
        return;
    };
    let mut s = b.start();
    let mut c = s.conn();
    c.cmd(&["SET", "k", "v"]);
    c.cmd(&["SAVE"]);
    s.shutdown(true);
    // aux_save2 wrote nothing for an empty registry: a server without rfunc starts from this RDB.
    let mut plain = Server::builder().dir(&s.dir).without_module().start();
    let mut p = plain.conn();
    assert_eq!(p.cmd(&["GET", "k"]), Value::Bulk(b"v".to_vec()));
    p.cmd(&["SET", "k2", "v2"]);
    p.cmd(&["SAVE"]);
    plain.shutdown(true);
    // An RDB written by a server without rfunc loads with rfunc: empty registry, keys intact.
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(c.cmd(&["GET", "k2"]), Value::Bulk(b"v2".to_vec()));
    assert_eq!(names(&mut c), Vec::<String>::new());
}

#[test]
fn registry_rdb_without_the_module_is_refused_loudly() {
    let Some(b) = Server::owned("registry_rdb_without_module") else {
        return;
    };
    let mut s = b.start();
    let mut c = s.conn();
    load(&mut c, &lib("one", "f1", 1));
    c.cmd(&["SAVE"]);
    s.shutdown(true);
    let err = match Server::builder().dir(&s.dir).without_module().try_start() {
        Ok(_) => panic!("a server without rfunc loaded an RDB holding rfunc data"),
        Err(e) => e,
    };
    assert!(err.contains("no matching module 'rfunc-reg'"), "{err}");
}

#[test]
fn corrupted_aux_data_fails_the_load_with_an_rfunc_log_line() {
    let Some(b) = Server::owned("corrupted_aux") else {
        return;
    };
    let mut s = b
        .arg("rdbchecksum", "no")
        .arg("rdbcompression", "no")
        .start();
    let mut c = s.conn();
    load(&mut c, &lib("corruptme", "fc", 1));
    c.cmd(&["SAVE"]);
    s.shutdown(true);
    let path = s.dir.join("dump.rdb");
    let mut rdb = std::fs::read(&path).unwrap();
    let at = rdb
        .windows(9)
        .position(|w| w == b"corruptme")
        .expect("library code in the RDB");
    rdb[at] ^= 0x20;
    std::fs::write(&path, &rdb).unwrap();
    let err = match s.restart() {
        Ok(()) => panic!("server loaded a corrupted registry"),
        Err(e) => e,
    };
    assert!(err.contains("rfunc: corrupted registry record"), "{err}");
    assert!(err.contains("not able to load"), "{err}");
}

#[test]
fn flushall_does_not_touch_the_registry() {
    let server = Server::shared();
    let mut c = server.conn();
    load(&mut c, &lib("survivor", "fs", 1));
    c.cmd(&["FLUSHALL"]);
    c.cmd(&["FLUSHDB"]);
    assert!(names(&mut c).contains(&"survivor".to_string()));
}

fn aof_server(b: common::ServerBuilder, preamble: &str) -> Server {
    b.arg("appendonly", "yes")
        .arg("aof-use-rdb-preamble", preamble)
        .start()
}

fn wait_rewrite(c: &mut Conn) {
    wait_until("AOF rewrite", Duration::from_secs(20), || {
        info_field(c, "persistence", "aof_rewrite_in_progress") == "0"
            && info_field(c, "persistence", "aof_rewrite_scheduled") == "0"
            && info_field(c, "persistence", "aof_last_bgrewrite_status") == "ok"
    });
}

#[test]
fn aof_replay_restores_the_registry() {
    let Some(b) = Server::owned("aof_replay") else {
        return;
    };
    let mut s = aof_server(b, "yes");
    let mut c = s.conn();
    wait_rewrite(&mut c);
    load(&mut c, &lib("one", "f1", 1));
    load(&mut c, &lib("two", "f2", 2));
    c.cmd(&["RFUNC.DELETE", "one"]);
    s.shutdown(true);
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(names(&mut c), vec!["two"]);
}

#[test]
fn aof_rewrite_with_preamble_keeps_the_registry() {
    let Some(b) = Server::owned("aof_rewrite_preamble") else {
        return;
    };
    let mut s = aof_server(b, "yes");
    let mut c = s.conn();
    wait_rewrite(&mut c);
    load(&mut c, &lib("one", "f1", 1));
    c.cmd(&["BGREWRITEAOF"]);
    wait_rewrite(&mut c);
    load(&mut c, &lib("two", "f2", 2));
    s.shutdown(true);
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(names(&mut c), vec!["one", "two"]);
}

#[test]
fn aof_rewrite_without_preamble_keeps_the_registry() {
    let Some(b) = Server::owned("aof_rewrite_no_preamble") else {
        return;
    };
    let mut s = aof_server(b, "no");
    let mut c = s.conn();
    wait_rewrite(&mut c);
    load(&mut c, &lib("one", "f1", 1));
    c.cmd(&["BGREWRITEAOF"]);
    wait_rewrite(&mut c);
    load(&mut c, &lib("two", "f2", 2));
    c.cmd(&["BGREWRITEAOF"]);
    wait_rewrite(&mut c);
    // The base file carries no module data; the registry rides in the incremental file instead.
    let dir = s.dir.join("appendonlydir");
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.windows(13).any(|w| w == b"RFUNC.RESTORE")),
        "no RFUNC.RESTORE in {}",
        dir.display()
    );
    s.shutdown(true);
    s.restart().unwrap();
    let mut c = s.conn();
    assert_eq!(names(&mut c), vec!["one", "two"]);
}

fn start_replica(b: common::ServerBuilder, primary: &Server) -> Server {
    let r = b.start();
    let mut c = r.conn();
    c.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]);
    wait_until("replica link up", Duration::from_secs(20), || {
        info_field(&mut c, "replication", "master_link_status") == "up"
    });
    r
}

fn wait_in_sync(p: &mut Conn, r: &mut Conn) {
    let target = info_field(p, "replication", "master_repl_offset");
    wait_until("replica offset", Duration::from_secs(20), || {
        info_field(r, "replication", "slave_repl_offset") >= target
    });
}

#[test]
fn replica_full_sync_replaces_its_registry_and_follows_changes() {
    let Some(b) = Server::owned("replica_full_sync") else {
        return;
    };
    let primary = b.start();
    let mut p = primary.conn();
    load(&mut p, &lib("plib", "pf", 1));
    let rb = Server::owned("replica_full_sync").unwrap();
    let replica_srv = rb.start();
    {
        let mut r = replica_srv.conn();
        load(&mut r, &lib("rlib", "rf", 2));
    }
    let mut r = replica_srv.conn();
    r.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]);
    wait_until("replica link up", Duration::from_secs(20), || {
        info_field(&mut r, "replication", "master_link_status") == "up"
    });
    assert_eq!(names(&mut r), vec!["plib"]);
    // Streaming: every registry change reaches the replica.
    load(&mut p, &lib("second", "sf", 3));
    p.cmd(&["RFUNC.LOAD", "REPLACE", &lib("plib", "pf", 10)]);
    wait_in_sync(&mut p, &mut r);
    assert_eq!(names(&mut r), vec!["plib", "second"]);
    // Like the built-in: FCALL_RO of a write function on a replica answers READONLY, not the *_ro error.
    assert_eq!(
        r.cmd(&["RFUNC.FCALL_RO", "pf", "0"]),
        Value::Error("READONLY You can't write against a read only replica.".into())
    );
    p.cmd(&["RFUNC.DELETE", "second"]);
    wait_in_sync(&mut p, &mut r);
    assert_eq!(names(&mut r), vec!["plib"]);
    let dump = p.cmd(&["RFUNC.DUMP"]).as_bytes().to_vec();
    p.cmd(&["RFUNC.FLUSH"]);
    wait_in_sync(&mut p, &mut r);
    assert_eq!(names(&mut r), Vec::<String>::new());
    assert_eq!(
        p.call(&[b"RFUNC.RESTORE", &dump]),
        Value::Simple("OK".into())
    );
    wait_in_sync(&mut p, &mut r);
    assert_eq!(names(&mut r), vec!["plib"]);
    // Effects of a function that writes are replicated, not the call.
    load(&mut p, "#!lua name=writer\nserver.register_function('w', function(k, a) server.call('set', k[1], a[1]) server.call('incr', 'ctr') return 1 end)");
    load(&mut p, "#!lua name=reader\nserver.register_function{function_name='rd', callback=function(k) return server.call('get', k[1]) end, flags={'no-writes'}}");
    assert_eq!(p.cmd(&["RFUNC.FCALL", "w", "1", "wk", "wv"]), Value::Int(1));
    wait_in_sync(&mut p, &mut r);
    assert_eq!(r.cmd(&["GET", "wk"]), Value::Bulk(b"wv".to_vec()));
    assert_eq!(r.cmd(&["GET", "ctr"]), Value::Bulk(b"1".to_vec()));
    // On the replica: read-only functions run, write functions get the built-in's error.
    assert_eq!(
        r.cmd(&["RFUNC.FCALL_RO", "rd", "1", "wk"]),
        Value::Bulk(b"wv".to_vec())
    );
    assert_eq!(
        r.cmd(&["RFUNC.FCALL", "rd", "1", "wk"]),
        Value::Bulk(b"wv".to_vec())
    );
    assert_eq!(
        r.cmd(&["RFUNC.FCALL", "w", "1", "x", "y"]),
        Value::Error("READONLY You can't write against a read only replica.".into())
    );
    // Failover: the replica becomes a primary with every library.
    r.cmd(&["REPLICAOF", "NO", "ONE"]);
    assert_eq!(names(&mut r), vec!["plib", "reader", "writer"]);
    assert_eq!(r.cmd(&["RFUNC.FCALL", "w", "1", "x", "y"]), Value::Int(1));
}

#[test]
fn replica_of_an_empty_primary_ends_with_an_empty_registry() {
    let Some(b) = Server::owned("replica_empty_primary") else {
        return;
    };
    let primary = b.start();
    let rb = Server::owned("replica_empty_primary").unwrap();
    let replica_srv = rb.start();
    let mut r = replica_srv.conn();
    load(&mut r, &lib("stale", "sf", 1));
    drop(r);
    let replica_srv = {
        let mut r = replica_srv.conn();
        r.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]);
        wait_until("replica link up", Duration::from_secs(20), || {
            info_field(&mut r, "replication", "master_link_status") == "up"
        });
        replica_srv
    };
    let mut r = replica_srv.conn();
    assert_eq!(names(&mut r), Vec::<String>::new());
    let _ = start_replica;
}
