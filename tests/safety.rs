//! The server stays up and responsive whatever a function does: busy functions and KILL, load timeout, the
//! memory cap, panics, ACL, and hostile RESTORE payloads over the network.

mod common;

use std::time::{Duration, Instant};

use common::{Conn, Server, Twin, Value};

const BUSY: &str =
    "BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

fn loop_lib(name: &str, body_before_loop: &str) -> String {
    format!("#!lua name={name}\nserver.register_function('{name}', function(keys, args)\n{body_before_loop}\nwhile true do end\nend)")
}

fn killed_text(server: &Server, f: &str) -> String {
    if server.version() >= (8, 1, 0) {
        format!("ERR Script killed by user with FUNCTION KILL. script: {f}, on @user_function:4.")
    } else {
        format!("ERR Script killed by user with SCRIPT KILL... script: {f}, on @user_function:4.")
    }
}

/// Starts `RFUNC.FCALL f 0` on its own connection and waits until the server answers BUSY to others.
fn start_busy(server: &Server, f: &str) -> Conn {
    let mut runner = server.conn();
    runner.send(&[b"RFUNC.FCALL", f.as_bytes(), b"0"]).unwrap();
    let mut probe = server.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if probe.cmd(&["PING"]) == Value::Error(BUSY.into()) {
            return runner;
        }
        assert!(Instant::now() < deadline, "server never became busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_ends_a_runaway_function_and_others_see_busy_meanwhile() {
    let Some(b) = Server::owned("kill_runaway") else {
        return;
    };
    let server = b.arg("busy-reply-threshold", "100").start();
    let mut c = server.conn();
    c.cmd(&["RFUNC.LOAD", &loop_lib("spin", "local x = 1")]);
    let hz = c.cmd(&["CONFIG", "GET", "hz"]).as_array()[1].as_str();
    let mut runner = start_busy(&server, "spin");
    let mut other = server.conn();
    // Other commands are refused with the built-in's BUSY text; allow-busy ones answer.
    assert_eq!(other.cmd(&["GET", "k"]), Value::Error(BUSY.into()));
    assert_eq!(
        other.cmd(&["RFUNC.FCALL", "spin", "0"]),
        Value::Error(BUSY.into())
    );
    let stats = other.cmd(&["RFUNC.STATS"]);
    let fields = stats.as_array();
    let running = fields[1].as_array();
    assert_eq!(running[0], Value::Bulk(b"name".to_vec()));
    assert_eq!(running[1], Value::Bulk(b"spin".to_vec()));
    assert_eq!(
        running[3],
        Value::Array(vec![
            Value::Bulk(b"RFUNC.FCALL".to_vec()),
            Value::Bulk(b"spin".to_vec()),
            Value::Bulk(b"0".to_vec())
        ])
    );
    assert!(running[5].as_int() >= 100, "duration_ms {:?}", running[5]);
    // The built-in's FUNCTION STATS knows nothing of rfunc's functions.
    let builtin_stats = other.cmd(&["FUNCTION", "STATS"]);
    assert_eq!(builtin_stats.as_array()[1], Value::Nil);
    let sent = Instant::now();
    assert_eq!(other.cmd(&["RFUNC.KILL"]), Value::Simple("OK".into()));
    let (_, reply) = runner.read_reply().unwrap();
    let latency = sent.elapsed();
    assert_eq!(reply, Value::Error(killed_text(&server, "spin")));
    // While a function runs the server serves other clients once per 1000/hz ms (RM_Yield's pacing), so the
    // KILL itself may wait that long before it is read; the function then stops at its next hook.
    eprintln!("RFUNC.KILL latency (KILL sent to the killed reply received, hz {hz}): {latency:?}");
    assert!(
        latency < Duration::from_millis(1000),
        "kill took {latency:?}"
    );
    // The server is fully usable afterwards.
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(
        other.cmd(&["RFUNC.KILL"]),
        Value::Error("NOTBUSY No scripts in execution right now.".into())
    );
    assert!(
        server.log().contains("Slow script detected"),
        "{}",
        server.log()
    );
}

#[test]
fn a_function_that_wrote_is_unkillable() {
    let Some(b) = Server::owned("unkillable") else {
        return;
    };
    let server = b.arg("busy-reply-threshold", "100").start();
    let mut c = server.conn();
    c.cmd(&[
        "RFUNC.LOAD",
        &loop_lib("wspin", "server.call('set', 'x', '1')"),
    ]);
    let _runner = start_busy(&server, "wspin");
    let mut other = server.conn();
    assert_eq!(
        other.cmd(&["RFUNC.KILL"]),
        Value::Error("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.".into())
    );
    // SHUTDOWN NOSAVE still works.
    other.send(&[b"SHUTDOWN", b"NOSAVE"]).unwrap();
    let _ = other.read_reply();
}

#[test]
fn a_pcall_cannot_swallow_the_kill() {
    let Some(b) = Server::owned("kill_through_pcall") else {
        return;
    };
    let server = b.arg("busy-reply-threshold", "100").start();
    let mut c = server.conn();
    let code = "#!lua name=stubborn\nserver.register_function('stubborn', function()\nlocal n = 0\nwhile true do pcall(function() while true do n = n + 1 end end) end\nend)";
    c.cmd(&["RFUNC.LOAD", code]);
    let mut runner = start_busy(&server, "stubborn");
    let mut other = server.conn();
    assert_eq!(other.cmd(&["RFUNC.KILL"]), Value::Simple("OK".into()));
    let (_, reply) = runner.read_reply().unwrap();
    assert!(
        matches!(&reply, Value::Error(e) if e.starts_with("ERR Script killed by user")),
        "{reply:?}"
    );
}

#[test]
fn load_time_infinite_loop_times_out_like_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let started = Instant::now();
    t.same_str(&["FUNCTION", "LOAD", "#!lua name=forever\nwhile true do end"]);
    t.same_str(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=forever2\nlocal i = 0 while true do pcall(function() i = i + 1 end) end",
    ]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut c = server.conn();
    assert_eq!(
        c.cmd(&["RFUNC.LIST", "LIBRARYNAME", "forever*"]),
        Value::Array(vec![])
    );
}

#[test]
fn memory_cap_fails_the_function_and_everything_else_keeps_working() {
    let Some(b) = Server::owned("memory_cap") else {
        return;
    };
    let server = b.start();
    let mut c = server.conn();
    let code = "#!lua name=hog\nserver.register_function('hog', function() local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 100) .. i end return #t end)\nserver.register_function('small', function() return 'fine' end)";
    assert_eq!(c.cmd(&["RFUNC.LOAD", code]), Value::Bulk(b"hog".to_vec()));
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "rfunc.max-memory", "8mb"]),
        Value::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "rfunc.max-memory"]),
        Value::Array(vec![
            Value::Bulk(b"rfunc.max-memory".to_vec()),
            Value::Bulk(b"8388608".to_vec())
        ])
    );
    let v = c.cmd(&["RFUNC.FCALL", "hog", "0"]);
    assert_eq!(
        v,
        Value::Error(
            "ERR the Lua engine reached rfunc.max-memory (8388608 bytes) script: hog".into()
        )
    );
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "small", "0"]),
        Value::Bulk(b"fine".to_vec())
    );
    let info = c.cmd(&["INFO", "rfunc"]).as_str();
    let used: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("rfunc_engine_memory:"))
        .expect("rfunc_engine_memory in INFO")
        .trim()
        .parse()
        .unwrap();
    assert!(used > 0 && used <= 8 * 1024 * 1024, "engine memory {used}");
    c.cmd(&["CONFIG", "SET", "rfunc.max-memory", "0"]);
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "small", "0"]),
        Value::Bulk(b"fine".to_vec())
    );
}

#[test]
fn panics_become_error_replies() {
    let server = Server::shared();
    let mut c = server.conn();
    let info = c.cmd(&["COMMAND", "INFO", "rfunc.testpanic"]);
    if matches!(
        info.as_array().first(),
        Some(Value::Nil) | Some(Value::NilArray) | None
    ) {
        eprintln!(
            "SKIP panics_become_error_replies: the module was built without the test-hooks feature"
        );
        return;
    }
    assert_eq!(
        c.cmd(&["RFUNC.TESTPANIC", "command"]),
        Value::Error("ERR internal error in rfunc.testpanic, see the server log".into())
    );
    assert_eq!(
        c.cmd(&["RFUNC.TESTPANIC", "lua"]),
        Value::Error("ERR rfunc internal error (panic), see the server log".into())
    );
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    if !server.is_external() {
        let log = server.log();
        assert!(
            log.contains("panic in rfunc.testpanic: test-hooks: panic in a command handler"),
            "{log}"
        );
        assert!(
            log.contains("panic in a Lua C function: test-hooks: panic inside a Lua C function"),
            "{log}"
        );
    }
}

#[test]
fn acl_applies_inside_functions_like_the_builtin() {
    let server = Server::shared();
    let mut admin = server.conn();
    let mut t = Twin::new(server.conn());
    t.load("#!lua name=acl\nserver.register_function('setter', function(k, a) return server.call('set', k[1], a[1]) end)\nserver.register_function('getter', function(k) return server.call('get', k[1]) end)\nserver.register_function('checker', function(k, a) return {server.acl_check_cmd('set', k[1], 'v'), server.acl_check_cmd('get', k[1])} end)");
    admin.cmd(&[
        "ACL",
        "SETUSER",
        "lim",
        "on",
        ">pw",
        "~allowed*",
        "+@all",
        "-set",
    ]);
    admin.cmd(&[
        "ACL",
        "SETUSER",
        "noscript",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@scripting",
    ]);
    admin.cmd(&[
        "ACL", "SETUSER", "nodanger", "on", ">pw", "~*", "+@all", "-@write",
    ]);
    let mut lim = Twin::new(server.conn());
    assert_eq!(lim.cmd(&["AUTH", "lim", "pw"]), Value::Simple("OK".into()));
    for args in [
        vec!["FCALL", "setter", "1", "allowed1", "v"],
        vec!["FCALL", "getter", "1", "allowed1"],
        vec!["FCALL", "getter", "1", "forbidden"],
        vec!["FCALL", "checker", "1", "allowed1"],
        vec!["FCALL", "checker", "1", "forbidden"],
        vec!["FCALL_RO", "getter", "1", "allowed1"],
    ] {
        lim.check(&args);
    }
    lim.assert_clean();
    let mut ns = Twin::new(server.conn());
    ns.cmd(&["AUTH", "noscript", "pw"]);
    for args in [
        vec!["FCALL", "getter", "1", "k"],
        vec!["FUNCTION", "LIST"],
        vec![
            "FUNCTION",
            "LOAD",
            "#!lua name=x\nserver.register_function('x', function() end)",
        ],
    ] {
        ns.check(&args);
    }
    ns.assert_clean();
    let mut nw = Twin::new(server.conn());
    nw.cmd(&["AUTH", "nodanger", "pw"]);
    for args in [
        vec!["FUNCTION", "DELETE", "acl"],
        vec!["FUNCTION", "FLUSH"],
        vec!["FCALL", "setter", "1", "k", "v"],
        vec!["FCALL", "getter", "1", "k"],
    ] {
        nw.check(&args);
    }
    nw.assert_clean();
}

/// A tiny deterministic PRNG (xorshift64*), so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn fix_crc(p: &mut [u8]) {
    if p.len() >= 10 {
        let n = p.len();
        let crc = common::crc64_jones(&p[..n - 8]);
        p[n - 8..].copy_from_slice(&crc.to_le_bytes());
    }
}

#[test]
fn hostile_restore_payloads_never_hurt_the_server() {
    let server = Server::shared();
    let mut c = server.conn();
    c.cmd(&["RFUNC.FLUSH"]);
    c.cmd(&[
        "RFUNC.LOAD",
        "#!lua name=keep\nserver.register_function('keep', function() return 1 end)",
    ]);
    let before = c.cmd(&["RFUNC.LIST", "WITHCODE"]);
    let vectors = common::repo_root().join("core/tests/vectors");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&vectors)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "bin") && !p.to_string_lossy().contains("big-2000"))
                .then(|| std::fs::read(p).unwrap())
        })
        .collect();
    let hostile_codes = [
        "#!lua name=h1\nfor i = 1, 1e5 do end",
        "#!lua name=h2\nlocal s = string.rep('x', 2^20) server.register_function('h2', function() return #s end)",
        "#!lua name=keep\nserver.register_function('keep2', function() end)",
        "#!lua name=h3\nserver.register_function('keep', function() end)",
        "#!lua name=h4\nreturn (function(...) return ... end)(unpack({}, 1, 1e7))",
    ];
    for code in hostile_codes {
        let mut p = vec![0xF5, 0x80];
        p.extend_from_slice(&(code.len() as u32).to_be_bytes());
        p.extend_from_slice(code.as_bytes());
        p.extend_from_slice(&[80, 0]);
        p.extend_from_slice(&[0; 8]);
        fix_crc(&mut p);
        seeds.push(p);
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut ok, mut errors) = (0u32, 0u32);
    let total = 10_000;
    for i in 0..total {
        let mut p = seeds[rng.below(seeds.len() as u64) as usize].clone();
        match rng.below(6) {
            0 => p.truncate(rng.below(p.len() as u64 + 1) as usize),
            1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(p.len().max(1) as u64) as usize;
                    if at < p.len() {
                        p[at] ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                // Huge or bogus length fields right after an opcode.
                let at = rng.below(p.len().max(1) as u64) as usize;
                let junk: &[&[u8]] = &[
                    &[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    &[0x80, 0xff, 0xff, 0xff, 0xff],
                    &[0xC3, 0x80, 0, 0, 0, 5, 0x80, 0xff, 0xff, 0xff, 0xff],
                    &[0xC4],
                ];
                let j = junk[rng.below(junk.len() as u64) as usize];
                let at = at.min(p.len());
                p.splice(at..at, j.iter().copied());
            }
            3 => {
                let n = rng.below(64) as usize;
                p = (0..n).map(|_| rng.next() as u8).collect();
            }
            _ => {}
        }
        if rng.below(3) != 0 {
            fix_crc(&mut p);
        }
        let policy: &[u8] = [b"APPEND".as_slice(), b"REPLACE", b"FLUSH"][rng.below(3) as usize];
        let v = c.call(&[b"RFUNC.RESTORE", &p, policy]);
        match v {
            Value::Simple(s) if s == "OK" => {
                ok += 1;
                // Put the reference registry back.
                c.cmd(&["RFUNC.FLUSH"]);
                c.cmd(&[
                    "RFUNC.LOAD",
                    "#!lua name=keep\nserver.register_function('keep', function() return 1 end)",
                ]);
            }
            Value::Error(_) => {
                errors += 1;
                if i % 97 == 0 || policy == b"FLUSH" {
                    assert_eq!(
                        c.cmd(&["RFUNC.LIST", "WITHCODE"]),
                        before,
                        "registry changed by a failed RESTORE (case {i})"
                    );
                }
            }
            other => panic!("unexpected reply to RESTORE (case {i}): {other:?}"),
        }
    }
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(c.cmd(&["RFUNC.LIST", "WITHCODE"]), before);
    eprintln!("live RESTORE fuzz: {total} payloads, {ok} OK, {errors} errors, server alive");
}

/// valkey's functions.tcl "script kill not working on function" / "function kill not working on eval", with
/// rfunc: while an rfunc function runs, SCRIPT KILL answers BUSY and FUNCTION KILL kills it; while an EVAL runs,
/// RFUNC.KILL answers BUSY.
#[test]
fn script_kill_and_function_kill_around_rfunc() {
    let Some(b) = Server::owned("kill_interplay") else {
        return;
    };
    let server = b.arg("busy-reply-threshold", "100").start();
    let mut c = server.conn();
    c.cmd(&["RFUNC.LOAD", &loop_lib("spin2", "local y = 1")]);
    let mut runner = start_busy(&server, "spin2");
    let mut other = server.conn();
    assert_eq!(
        other.cmd(&["SCRIPT", "KILL"]),
        Value::Error(
            "BUSY Valkey is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.".into()
        )
    );
    assert_eq!(other.cmd(&["FUNCTION", "KILL"]), Value::Simple("OK".into()));
    let (_, reply) = runner.read_reply().unwrap();
    assert_eq!(reply, Value::Error(killed_text(&server, "spin2")));
    // An EVAL script: RFUNC.KILL is not the way to stop it.
    let mut eval = server.conn();
    eval.send(&[b"EVAL", b"while true do end", b"0"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.cmd(&["PING"]) != Value::Error("BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.".into()) {
        assert!(Instant::now() < deadline, "EVAL never became busy");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        other.cmd(&["RFUNC.KILL"]),
        Value::Error(
            "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.".into()
        )
    );
    assert_eq!(other.cmd(&["SCRIPT", "KILL"]), Value::Simple("OK".into()));
    let _ = eval.read_reply().unwrap();
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
}
