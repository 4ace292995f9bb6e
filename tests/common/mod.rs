//! Test fixture: a real valkey-server with rfunc loaded, on a free loopback port.
//!
//! * `VALKEY_SERVER=/path/valkey-server` picks the server binary (default: the project's Valkey 9.1.2 in
//!   `.cache/servers/9.1.2/`, installed by `scripts/setup.sh`).
//! * `RFUNC_MODULE=/path/librfunc.so` picks the module (default: `target/release/librfunc.so`).
//! * `VALKEY_URL=redis://host:port` runs against a server someone else started (with rfunc loaded); tests that
//!   need to start or restart their own server are skipped there, with the reason printed.
//!
//! The server's log is kept in a temporary directory and printed when a test fails; the server is always stopped.

#![allow(dead_code, unused_imports)]

pub mod resp;
pub mod snippets;
pub mod twin;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use resp::{Conn, Value};
pub use twin::Twin;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn server_binary() -> PathBuf {
    match std::env::var_os("VALKEY_SERVER") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".cache/servers/9.1.2/valkey-server"),
    }
}

pub fn module_path() -> PathBuf {
    match std::env::var_os("RFUNC_MODULE") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("target/release/librfunc.so"),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running server (owned, or external).
pub struct Server {
    pub host: String,
    pub port: u16,
    child: Option<Child>,
    pub dir: PathBuf,
    extra_args: Vec<String>,
    with_module: bool,
    binary: Option<PathBuf>,
    config: Option<PathBuf>,
    module_args: Vec<String>,
}

/// Builder for an owned server.
pub struct ServerBuilder {
    args: Vec<String>,
    with_module: bool,
    dir: Option<PathBuf>,
    binary: Option<PathBuf>,
    config: Option<String>,
    module_args: Vec<String>,
}

impl ServerBuilder {
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_string());
        self
    }
    /// Starts the server without loading rfunc (for tests about RDB files written without the module).
    pub fn without_module(mut self) -> Self {
        self.with_module = false;
        self
    }
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
    /// Another server binary (e.g. Redis 7.0 for payload cross-checks; use `without_module`).
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }
    /// Starts the server with a config file holding `text` (written to `<dir>/server.conf`).
    pub fn config_file(mut self, text: &str) -> Self {
        self.config = Some(text.to_string());
        self
    }
    /// Arguments after the module path on the `--loadmodule` line.
    pub fn module_arg(mut self, a: &str) -> Self {
        self.module_args.push(a.to_string());
        self
    }
    /// Starts the server; panics with the server's log if it does not come up.
    pub fn start(self) -> Server {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
    /// Like `start`, but returns the error (with the server's log) instead of panicking.
    pub fn try_start(self) -> Result<Server, String> {
        let dir = self.dir.unwrap_or_else(new_temp_dir);
        let config = self.config.map(|text| {
            let path = dir.join("server.conf");
            std::fs::write(&path, text).expect("write config file");
            path
        });
        let mut s = Server {
            host: "127.0.0.1".into(),
            port: 0,
            child: None,
            dir,
            extra_args: self.args,
            with_module: self.with_module,
            binary: self.binary,
            config,
            module_args: self.module_args,
        };
        s.spawn()?;
        Ok(s)
    }
}

fn new_temp_dir() -> PathBuf {
    let base = std::env::temp_dir().join(format!(
        "rfunc-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create temp dir");
    base
}

/// Is an external server configured (`VALKEY_URL`)?
pub fn external_url() -> Option<(String, u16)> {
    let url = std::env::var("VALKEY_URL").ok()?;
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("valkey://"))
        .unwrap_or(&url);
    let rest = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "6379"));
    Some((host.to_string(), port.parse().expect("port in VALKEY_URL")))
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            with_module: true,
            dir: None,
            binary: None,
            config: None,
            module_args: Vec::new(),
        }
    }

    /// A server for tests that do not need to restart it: the external one if `VALKEY_URL` is set, else an
    /// owned one with default settings.
    pub fn shared() -> Server {
        if let Some((host, port)) = external_url() {
            return Server {
                host,
                port,
                child: None,
                dir: new_temp_dir(),
                extra_args: vec![],
                with_module: true,
                binary: None,
                config: None,
                module_args: vec![],
            };
        }
        Server::builder().start()
    }

    /// For tests that must own (and maybe restart) their server. Returns None, printing why, in external mode.
    pub fn owned(test: &str) -> Option<ServerBuilder> {
        if external_url().is_some() {
            eprintln!("SKIP {test}: needs its own server (VALKEY_URL is set)");
            return None;
        }
        Some(Server::builder())
    }

    pub fn is_external(&self) -> bool {
        self.child.is_none() && external_url().is_some()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = self.binary.clone().unwrap_or_else(server_binary);
        if !bin.exists() {
            return Err(format!(
                "valkey-server not found at {} (run `bash scripts/setup.sh`, or set VALKEY_SERVER)",
                bin.display()
            ));
        }
        let module = module_path();
        if self.with_module && !module.exists() {
            return Err(format!(
                "module not found at {} (run `cargo build --release`, or set RFUNC_MODULE)",
                module.display()
            ));
        }
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let mut cmd = Command::new(&bin);
            if let Some(conf) = &self.config {
                cmd.arg(conf);
            }
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(&self.dir)
                .arg("--logfile")
                .arg(self.log_path())
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--enable-debug-command")
                .arg("yes");
            if self.with_module {
                cmd.arg("--loadmodule").arg(&module).args(&self.module_args);
            }
            cmd.args(&self.extra_args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_err = e;
                    self.kill();
                    // A port clash shows as "Address already in use": pick another port and retry.
                    if last_err.contains("Address already in use") {
                        self.port = 0;
                        continue;
                    }
                    return Err(last_err);
                }
            }
        }
        Err(last_err)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "valkey-server exited during start-up ({status}); its log:\n{}",
                        self.log()
                    ));
                }
            }
            if let Ok(mut c) = Conn::connect(&self.host, self.port) {
                c.set_timeout(Duration::from_secs(5));
                if let Ok(()) = c.send(&[b"PING"]) {
                    if let Ok((_, v)) = c.read_reply() {
                        if v == Value::Simple("PONG".into()) {
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "valkey-server did not answer PING in time; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(&self.host, self.port).expect("connect to server")
    }

    /// A RESP3 connection (HELLO 3).
    pub fn conn3(&self) -> Conn {
        let mut c = self.conn();
        let v = c.cmd(&["HELLO", "3"]);
        assert!(matches!(v, Value::Map(_)), "HELLO 3 failed: {v:?}");
        c
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SHUTDOWN (SAVE semantics per `save`), waiting for the process to exit.
    pub fn shutdown(&mut self, nosave: bool) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut c) = Conn::connect(&self.host, self.port) {
                let _ = c.send(&[b"SHUTDOWN", if nosave { b"NOSAVE" } else { b"SAVE" }]);
                let _ = c.read_reply();
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process with SIGKILL (no save).
    pub fn kill9(&mut self) {
        self.kill();
    }

    /// Starts the same server again (same dir, port and arguments).
    pub fn restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.spawn()
    }

    /// The server's version (`valkey_version` or `redis_version` from INFO server).
    pub fn version(&self) -> (u32, u32, u32) {
        let info = self.conn().cmd(&["INFO", "server"]).as_str();
        let field = info
            .lines()
            .find_map(|l| l.strip_prefix("valkey_version:"))
            .or_else(|| info.lines().find_map(|l| l.strip_prefix("redis_version:")))
            .expect("version in INFO")
            .trim()
            .to_string();
        let mut it = field.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- server log ({}) ----\n{}\n---- end of server log ----",
                self.log_path().display(),
                self.log()
            );
        }
        self.kill();
        if self.child.is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// CRC-64/Jones as the server computes a payload's checksum (a bit at a time: tests only).
pub fn crc64_jones(data: &[u8]) -> u64 {
    let mut crc = 0u64;
    for &b in data {
        crc ^= b as u64;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One field of an INFO section, "" when absent.
pub fn info_field(c: &mut Conn, section: &str, field: &str) -> String {
    let info = c.cmd(&["INFO", section]).as_str();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
