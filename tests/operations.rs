//! The operations toolkit: payloads for other server versions, DRYRUN, INSPECT and the offline CLI, per-function
//! statistics, INFO, configs, COMMAND DOCS and HELP.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, Value};

fn vectors() -> PathBuf {
    common::repo_root().join("core/tests/vectors")
}

fn map_get<'a>(v: &'a Value, key: &str) -> &'a Value {
    let items = v.as_array();
    let i = items
        .iter()
        .step_by(2)
        .position(|k| k.as_str() == key)
        .unwrap_or_else(|| panic!("no {key} in {v:?}"));
    &items[2 * i + 1]
}

// `redis.` rather than `server.`: Redis 7.0 (a restore target below) has no `server` global.
const MYLIB: &str = "#!lua name=mylib\nredis.register_function{function_name='f1', callback=function() return 1 end, flags={'no-writes'}, description='one'}\nredis.register_function('f2', function() return 2 end)";
const OTHER: &str = "#!lua name=other\nredis.register_function('o1', function() return 3 end)";

#[test]
fn dump_version_restores_on_older_servers() {
    let Some(b) = Server::owned("dump_version") else {
        return;
    };
    let server = b.start();
    let mut c = server.conn();
    c.cmd(&["RFUNC.LOAD", MYLIB]);
    c.cmd(&["RFUNC.LOAD", OTHER]);
    let v10 = c.cmd(&["RFUNC.DUMP", "VERSION", "10"]).as_bytes().to_vec();
    let v11 = c
        .cmd(&["RFUNC.DUMP", "VERSION", "11", "LIBRARY", "mylib"])
        .as_bytes()
        .to_vec();
    assert_eq!(&v10[v10.len() - 10..v10.len() - 8], &[10, 0]);
    assert_eq!(
        c.cmd(&["RFUNC.DUMP", "LIBRARY", "nosuch"]),
        Value::Error("ERR Library 'nosuch' not found".into())
    );
    assert_eq!(
        c.cmd(&["RFUNC.DUMP", "VERSION", "0"]),
        Value::Error("ERR VERSION must be an RDB version between 1 and 65535".into())
    );
    let servers = common::repo_root().join(".cache/servers");
    let targets: Vec<(PathBuf, &Vec<u8>, usize)> = vec![
        (PathBuf::from("/usr/bin/redis-server"), &v10, 2),
        (servers.join("8.0.1/valkey-server"), &v11, 1),
        (servers.join("8.1.8/valkey-server"), &v11, 1),
    ];
    for (bin, payload, libs) in targets {
        if !bin.exists() {
            panic!("{} missing: run scripts/setup.sh", bin.display());
        }
        let other = Server::builder().binary(&bin).without_module().start();
        let mut o = other.conn();
        assert_eq!(
            o.call(&[b"FUNCTION", b"RESTORE", payload]),
            Value::Simple("OK".into()),
            "{}",
            bin.display()
        );
        assert_eq!(
            o.cmd(&["FUNCTION", "LIST"]).as_array().len(),
            libs,
            "{}",
            bin.display()
        );
        assert_eq!(
            o.cmd(&["FCALL", "f2", "0"]),
            Value::Int(2),
            "{}",
            bin.display()
        );
    }
}

#[test]
fn restore_dryrun_reports_and_changes_nothing() {
    let server = Server::shared();
    let mut c = server.conn();
    c.cmd(&["RFUNC.FLUSH"]);
    c.cmd(&["RFUNC.LOAD", MYLIB]);
    c.cmd(&["RFUNC.LOAD", OTHER]);
    let both = c.cmd(&["RFUNC.DUMP"]).as_bytes().to_vec();
    let only_mylib = c
        .cmd(&["RFUNC.DUMP", "LIBRARY", "mylib"])
        .as_bytes()
        .to_vec();
    c.cmd(&["RFUNC.DELETE", "other"]);
    let before = c.cmd(&["RFUNC.LIST", "WITHCODE"]);
    let names = |v: &Value| v.as_array().iter().map(|x| x.as_str()).collect::<Vec<_>>();
    let r = c.call(&[b"RFUNC.RESTORE", &both, b"DRYRUN"]);
    assert_eq!(
        map_get(&r, "result").as_str(),
        "ERR Library mylib already exists"
    );
    let r = c.call(&[b"RFUNC.RESTORE", &both, b"REPLACE", b"DRYRUN"]);
    assert_eq!(map_get(&r, "result").as_str(), "OK");
    assert_eq!(names(map_get(&r, "added")), vec!["other"]);
    assert_eq!(names(map_get(&r, "replaced")), vec!["mylib"]);
    let r = c.call(&[b"RFUNC.RESTORE", &only_mylib, b"FLUSH", b"dryrun"]);
    assert_eq!(names(map_get(&r, "removed")), vec!["mylib"]);
    assert_eq!(names(map_get(&r, "added")), vec!["mylib"]);
    let r = c.call(&[b"RFUNC.RESTORE", b"garbage", b"DRYRUN"]);
    assert_eq!(
        map_get(&r, "result").as_str(),
        "ERR DUMP payload version or checksum are wrong"
    );
    assert_eq!(c.cmd(&["RFUNC.LIST", "WITHCODE"]), before);
    // Nothing was propagated or counted as a change either.
    assert_eq!(
        c.call(&[b"RFUNC.RESTORE", &both, b"REPLACE"]),
        Value::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["RFUNC.LIST"]).as_array().len(), 2);
}

/// (library, functions as "name:flags:description", code size) triples, sorted.
fn inspect_summary_from_reply(v: &Value) -> (String, Vec<(String, Vec<String>, i64)>) {
    let restore = map_get(v, "restore").as_str();
    let mut libs: Vec<(String, Vec<String>, i64)> = map_get(v, "libraries")
        .as_array()
        .iter()
        .map(|lib| {
            let name = match map_get(lib, "library_name") {
                Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<no valid header>".into(),
            };
            let mut fns: Vec<String> = map_get(lib, "functions")
                .as_array()
                .iter()
                .map(|f| {
                    let flags: Vec<String> = map_get(f, "flags")
                        .as_array()
                        .iter()
                        .map(|x| x.as_str())
                        .collect();
                    let flags = if flags.is_empty() {
                        "-".to_string()
                    } else {
                        flags.join(",")
                    };
                    format!("{}:{}", map_get(f, "name").as_str(), flags)
                })
                .collect();
            fns.sort();
            (name, fns, map_get(lib, "code_size").as_int())
        })
        .collect();
    libs.sort();
    (restore, libs)
}

fn inspect_summary_from_cli(text: &str) -> (String, Vec<(String, Vec<String>, i64)>) {
    let mut restore = String::new();
    let mut libs: Vec<(String, Vec<String>, i64)> = Vec::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("restore: ") {
            restore = r.to_string();
        } else if let Some(rest) = line.strip_prefix("  library ") {
            let (name, tail) = rest.split_once(" (engine LUA, ").unwrap();
            let size: i64 = tail.split_whitespace().next().unwrap().parse().unwrap();
            libs.push((name.to_string(), vec![], size));
        } else if let Some(rest) = line.strip_prefix("    function ") {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap();
            let flags = parts.next().unwrap().strip_prefix("flags=").unwrap();
            libs.last_mut().unwrap().1.push(format!("{name}:{flags}"));
        }
    }
    for l in &mut libs {
        l.1.sort();
    }
    libs.sort();
    (restore, libs)
}

#[test]
fn inspect_and_the_cli_agree_on_every_vector() {
    let server = Server::shared();
    let mut c = server.conn();
    let cli = env!("CARGO_BIN_EXE_rfunc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(vectors())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 24);
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let reply = c.call(&[b"RFUNC.INSPECT", &data]);
        let out = Command::new(cli)
            .arg("inspect")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let from_reply = inspect_summary_from_reply(&reply);
        let from_cli = inspect_summary_from_cli(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(from_reply, from_cli, "{}", file.display());
        assert_eq!(from_reply.0, "OK", "{}", file.display());
        let expected_libs = if file.to_string_lossy().contains("three-libs") {
            3
        } else {
            1
        };
        assert_eq!(from_reply.1.len(), expected_libs, "{}", file.display());
        let version = map_get(&reply, "version").as_int();
        assert_eq!(
            version as u16,
            u16::from_le_bytes([data[data.len() - 10], data[data.len() - 9]])
        );
        assert_eq!(map_get(&reply, "checksum").as_str(), "ok");
    }
    // A damaged payload: both report the checksum problem and the RESTORE verdict.
    let mut data = std::fs::read(vectors().join("valkey-9.1.2--mylib.bin")).unwrap();
    let n = data.len();
    data[n - 1] ^= 0xff;
    let reply = c.call(&[b"RFUNC.INSPECT", &data]);
    assert_eq!(map_get(&reply, "checksum").as_str(), "mismatch");
    assert_eq!(
        map_get(&reply, "restore").as_str(),
        "ERR DUMP payload version or checksum are wrong"
    );
    let bad = std::env::temp_dir().join(format!("rfunc-bad-{}.bin", std::process::id()));
    std::fs::write(&bad, &data).unwrap();
    let out = Command::new(cli).arg("verify").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_file(bad);
}

#[test]
fn cli_pack_unpack_convert_round_trip() {
    let cli = env!("CARGO_BIN_EXE_rfunc");
    let dir = std::env::temp_dir().join(format!("rfunc-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("mylib.lua");
    let b = dir.join("other.lua");
    std::fs::write(&a, MYLIB).unwrap();
    std::fs::write(&b, OTHER).unwrap();
    let packed = dir.join("p.bin");
    let st = Command::new(cli)
        .args(["pack"])
        .arg(&a)
        .arg(&b)
        .args(["--version", "80", "-o"])
        .arg(&packed)
        .status()
        .unwrap();
    assert!(st.success());
    let out_dir = dir.join("out");
    let st = Command::new(cli)
        .arg("unpack")
        .arg(&packed)
        .arg(&out_dir)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(out_dir.join("mylib.lua")).unwrap(),
        MYLIB
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("other.lua")).unwrap(),
        OTHER
    );
    // convert through a pipe: stdin → stdout
    let out = Command::new(cli)
        .args(["convert", "-", "--version", "10"])
        .stdin(std::fs::File::open(&packed).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v10 = out.stdout;
    assert_eq!(&v10[v10.len() - 10..v10.len() - 8], &[10, 0]);
    // The packed payload restores on a real server, and rfunc agrees with the built-in on it.
    let server = Server::shared();
    let mut c = server.conn();
    let p = std::fs::read(&packed).unwrap();
    c.cmd(&["FUNCTION", "FLUSH"]);
    assert_eq!(
        c.call(&[b"FUNCTION", b"RESTORE", &v10]),
        Value::Simple("OK".into())
    );
    if server.version() >= (9, 0, 0) {
        assert_eq!(
            c.call(&[b"FUNCTION", b"RESTORE", &p, b"REPLACE"]),
            Value::Simple("OK".into())
        );
    }
    c.cmd(&["FUNCTION", "FLUSH"]);
    // Bad library sources are refused with the server's error, exit code 1; usage errors exit 2.
    let bad = dir.join("bad.lua");
    std::fs::write(&bad, "#!lua name=bad\nlocal x = = 1").unwrap();
    let out = Command::new(cli).arg("pack").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error compiling function"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Command::new(cli)
            .arg("frobnicate")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        Command::new(cli)
            .arg("inspect")
            .arg(dir.join("missing"))
            .output()
            .unwrap()
            .status
            .code(),
        Some(3)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn per_function_stats_count_calls_and_errors() {
    let server = Server::shared();
    let mut c = server.conn();
    c.cmd(&["RFUNC.LOAD", "REPLACE", "#!lua name=statlib\nserver.register_function('sok', function() return 1 end)\nserver.register_function('sbad', function() error('no') end)"]);
    c.cmd(&["RFUNC.STATS", "RESET"]);
    for _ in 0..3 {
        c.cmd(&["RFUNC.FCALL", "sok", "0"]);
    }
    for _ in 0..2 {
        c.cmd(&["RFUNC.FCALL", "sbad", "0"]);
    }
    let list = c.cmd(&["RFUNC.LIST", "LIBRARYNAME", "statlib", "WITHSTATS"]);
    let lib = &list.as_array()[0];
    let fns = map_get(lib, "functions").as_array().to_vec();
    let stat = |name: &str, key: &str| {
        let f = fns
            .iter()
            .find(|f| map_get(f, "name").as_str() == name)
            .unwrap();
        map_get(f, key).as_int()
    };
    assert_eq!((stat("sok", "calls"), stat("sok", "errors")), (3, 0));
    assert_eq!((stat("sbad", "calls"), stat("sbad", "errors")), (2, 2));
    assert!(stat("sok", "total_usec") >= stat("sok", "max_usec"));
    assert_eq!(c.cmd(&["RFUNC.STATS", "RESET"]), Value::Simple("OK".into()));
    let list = c.cmd(&["RFUNC.LIST", "LIBRARYNAME", "statlib", "WITHSTATS"]);
    let f0 = &map_get(&list.as_array()[0], "functions").as_array()[0];
    assert_eq!(map_get(f0, "calls").as_int(), 0);
    assert_eq!(
        c.cmd(&["RFUNC.STATS", "x"]),
        Value::Error("ERR wrong number of arguments for 'rfunc.stats' command".into())
    );
}

#[test]
fn info_section_reports_the_registry() {
    let Some(b) = Server::owned("info_section") else {
        return;
    };
    let server = b.start();
    let mut c = server.conn();
    c.cmd(&["RFUNC.LOAD", MYLIB]);
    c.cmd(&["RFUNC.FCALL", "f1", "0"]);
    c.cmd(&["RFUNC.FCALL", "nosuch", "0"]);
    let info = c.cmd(&["INFO", "rfunc"]).as_str();
    for line in [
        "# rfunc",
        "rfunc_libraries:1",
        "rfunc_functions:2",
        "rfunc_calls:1",
        "rfunc_errors:0",
        "rfunc_running_function:",
    ] {
        assert!(
            info.lines().any(|l| l.trim_end() == line),
            "{line} missing in\n{info}"
        );
    }
    assert!(c
        .cmd(&["INFO", "everything"])
        .as_str()
        .contains("rfunc_engine_memory:"));
}

#[test]
fn configs_round_trip_and_survive_a_restart() {
    let Some(b) = Server::owned("configs") else {
        return;
    };
    let conf = format!(
        "loadmodule {} busy-reply-threshold 250\n",
        common::module_path().display()
    );
    let mut server = b.config_file(&conf).without_module().start();
    let mut c = server.conn();
    let get =
        |c: &mut common::Conn, name: &str| c.cmd(&["CONFIG", "GET", name]).as_array()[1].as_str();
    assert_eq!(get(&mut c, "rfunc.busy-reply-threshold"), "250");
    assert_eq!(get(&mut c, "rfunc.max-memory"), "0");
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "rfunc.max-memory", "12345678"]),
        Value::Simple("OK".into())
    );
    assert_eq!(get(&mut c, "rfunc.max-memory"), "12345678");
    assert!(c
        .cmd(&["CONFIG", "SET", "rfunc.max-memory", "-1"])
        .is_error());
    assert!(c
        .cmd(&["CONFIG", "SET", "rfunc.busy-reply-threshold", "-2"])
        .is_error());
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "rfunc.busy-reply-threshold", "-1"]),
        Value::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["CONFIG", "REWRITE"]), Value::Simple("OK".into()));
    let conf = std::fs::read_to_string(server.dir.join("server.conf")).unwrap();
    assert!(conf.contains("rfunc.max-memory"), "{conf}");
    server.shutdown(true);
    server.restart().unwrap();
    let mut c = server.conn();
    assert_eq!(get(&mut c, "rfunc.max-memory"), "12345678");
    assert_eq!(get(&mut c, "rfunc.busy-reply-threshold"), "-1");
}

#[test]
fn command_docs_and_help_cover_every_command() {
    let server = Server::shared();
    let mut c = server.conn();
    let commands = [
        "rfunc.load",
        "rfunc.delete",
        "rfunc.flush",
        "rfunc.list",
        "rfunc.dump",
        "rfunc.restore",
        "rfunc.stats",
        "rfunc.kill",
        "rfunc.help",
        "rfunc.inspect",
        "rfunc.fcall",
        "rfunc.fcall_ro",
    ];
    for name in commands {
        let docs = c.cmd(&["COMMAND", "DOCS", name]);
        let entry = docs.as_array();
        assert_eq!(entry.len(), 2, "{name}: {docs:?}");
        let summary = map_get(&entry[1], "summary").as_str();
        assert!(!summary.is_empty(), "{name}");
    }
    let help: Vec<String> = c
        .cmd(&["RFUNC.HELP"])
        .as_array()
        .iter()
        .map(|l| l.as_str())
        .collect();
    for word in [
        "LOAD",
        "DELETE",
        "LIST",
        "STATS",
        "KILL",
        "FLUSH",
        "DUMP",
        "RESTORE",
        "INSPECT",
        "HELP",
        "RFUNC.FCALL",
    ] {
        assert!(
            help.iter().any(|l| l.starts_with(word) || l.contains(word)),
            "{word} not in help"
        );
    }
    // Key specs: cluster clients route RFUNC.FCALL like FCALL.
    assert_eq!(
        c.cmd(&["COMMAND", "GETKEYS", "RFUNC.FCALL", "f", "2", "a", "b", "x"]),
        Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Bulk(b"b".to_vec())])
    );
    assert_eq!(
        c.cmd(&["COMMAND", "GETKEYS", "RFUNC.FCALL_RO", "f", "1", "a", "b"]),
        Value::Array(vec![Value::Bulk(b"a".to_vec())])
    );
}
