//! Differential testing: run the same thing through the built-in (FUNCTION / FCALL) and through rfunc
//! (RFUNC.* ) on the same server, and compare the raw reply bytes.

use super::resp::{parse, serialize, Conn, Value};

/// Maps a built-in command to its rfunc twin: `FUNCTION LOAD ...` → `RFUNC.LOAD ...`, `FCALL` → `RFUNC.FCALL`.
pub fn to_rfunc(args: &[&[u8]]) -> Vec<Vec<u8>> {
    let first = args[0].to_ascii_uppercase();
    match first.as_slice() {
        b"FUNCTION" if args.len() > 1 => {
            let mut v = vec![[b"RFUNC.".as_slice(), args[1]].concat()];
            v.extend(args[2..].iter().map(|a| a.to_vec()));
            v
        }
        b"FCALL" | b"FCALL_RO" => {
            let mut v = vec![[b"RFUNC.".as_slice(), args[0]].concat()];
            v.extend(args[1..].iter().map(|a| a.to_vec()));
            v
        }
        _ => args.iter().map(|a| a.to_vec()).collect(),
    }
}

/// Normalises one text: command names inside error texts, and the function name rfunc keeps in error
/// suffixes (SPEC rule 3; 9.1.2 dropped it).
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // ` script: <name>, on @user_function:` → ` script: on @user_function:`
    let mut rest = s;
    while let Some(i) = rest.find(" script: ") {
        out.push_str(&rest[..i + 9]);
        rest = &rest[i + 9..];
        if let Some(j) = rest.find(", on @") {
            if !rest[..j].contains(' ') {
                rest = &rest[j + 2..];
            }
        }
    }
    out.push_str(rest);
    let replacements = [
        ("'function|load'", "'rfunc.load'"),
        ("'function|delete'", "'rfunc.delete'"),
        ("'function|restore'", "'rfunc.restore'"),
        ("'function|flush'", "'rfunc.flush'"),
        ("'function|list'", "'rfunc.list'"),
        ("'function|dump'", "'rfunc.dump'"),
        ("'function|stats'", "'rfunc.stats'"),
        ("'function|kill'", "'rfunc.kill'"),
        ("'function|help'", "'rfunc.help'"),
        ("'fcall'", "'rfunc.fcall'"),
        ("'fcall_ro'", "'rfunc.fcall_ro'"),
        ("Try FUNCTION HELP.", "Try RFUNC.HELP."),
        ("FUNCTION FLUSH only", "RFUNC.FLUSH only"),
        // Deliberate fix (commands.md §7 #6): 7.0 / 8.0 name an invalid *function* name "Library names".
        (
            "Error registering functions: ERR Library names can only",
            "Error registering functions: ERR Function names can only",
        ),
    ];
    for (a, b) in replacements {
        out = out.replace(a, b);
    }
    out
}

fn normalize_value(v: Value) -> Value {
    match v {
        Value::Error(s) => Value::Error(normalize_text(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize_value).collect()),
        other => other,
    }
}

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    serialize(v, &mut out);
    out
}

/// FUNCTION LIST order is the server's hash-table order (unspecified; commands.md §3): sort libraries, and the
/// functions inside each, so two listings compare by content.
pub fn canonical_list(v: Value) -> Value {
    fn sort_functions(lib: Value) -> Value {
        match lib {
            Value::Array(kv) => {
                let mut kv = kv;
                for i in (1..kv.len()).step_by(2) {
                    if kv[i - 1] == Value::Bulk(b"functions".to_vec()) {
                        if let Value::Array(fs) = &mut kv[i] {
                            fs.sort_by_key(bytes_of);
                        }
                    }
                }
                Value::Array(kv)
            }
            Value::Map(mut kv) => {
                for (k, v) in kv.iter_mut() {
                    if *k == Value::Bulk(b"functions".to_vec()) {
                        if let Value::Array(fs) = v {
                            fs.sort_by_key(bytes_of);
                        }
                    }
                }
                Value::Map(kv)
            }
            other => other,
        }
    }
    match v {
        Value::Array(libs) => {
            let mut libs: Vec<Value> = libs.into_iter().map(sort_functions).collect();
            libs.sort_by_key(bytes_of);
            Value::Array(libs)
        }
        other => other,
    }
}

/// A reply with the legitimate differences normalised away, as exact RESP bytes.
pub fn normalize(raw: &[u8]) -> Vec<u8> {
    match parse(raw) {
        Ok(Some((v, _))) => bytes_of(&normalize_value(v)),
        _ => raw.to_vec(),
    }
}

/// `normalize`, plus library and function order made canonical (for FUNCTION LIST replies).
pub fn normalize_list(raw: &[u8]) -> Vec<u8> {
    match parse(raw) {
        Ok(Some((v, _))) => bytes_of(&canonical_list(normalize_value(v))),
        _ => raw.to_vec(),
    }
}

pub struct Twin {
    pub c: Conn,
    /// Commands run before each side of a comparison (e.g. FLUSHALL, so both sides start from the same keys).
    pub reset: Vec<Vec<u8>>,
    /// Differences found by `check` (reported together by `assert_clean`).
    pub failures: Vec<String>,
}

impl Twin {
    pub fn new(c: Conn) -> Twin {
        Twin {
            c,
            reset: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn run_reset(&mut self) {
        for r in self.reset.clone() {
            let _ = self.c.raw(&[&r]);
        }
    }

    /// Like `same`, but records a difference instead of panicking.
    pub fn check(&mut self, builtin: &[&str]) {
        let v: Vec<&[u8]> = builtin.iter().map(|s| s.as_bytes()).collect();
        let (a, b) = self.both(&v);
        if normalize(&a) != normalize(&b) {
            self.failures.push(format!(
                "{:?}\n    built-in: {:?}\n    rfunc:    {:?}",
                builtin,
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ));
        }
    }

    #[track_caller]
    pub fn assert_clean(&self) {
        if !self.failures.is_empty() {
            panic!(
                "{} difference(s) between the built-in and rfunc:\n  {}",
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
    }

    /// Runs the built-in command and its rfunc twin; returns both raw replies.
    pub fn both(&mut self, builtin: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        self.run_reset();
        let a = self.c.raw(builtin);
        let twin = to_rfunc(builtin);
        let refs: Vec<&[u8]> = twin.iter().map(|v| v.as_slice()).collect();
        self.run_reset();
        let b = self.c.raw(&refs);
        (a, b)
    }

    /// Asserts the built-in and rfunc give the same reply (after normalisation); returns rfunc's raw reply.
    #[track_caller]
    pub fn same(&mut self, builtin: &[&[u8]]) -> Vec<u8> {
        let (a, b) = self.both(builtin);
        let is_list = builtin.len() >= 2
            && builtin[0].eq_ignore_ascii_case(b"function")
            && builtin[1].eq_ignore_ascii_case(b"list");
        let norm = if is_list { normalize_list } else { normalize };
        let (na, nb) = (norm(&a), norm(&b));
        if na != nb {
            panic!(
                "built-in and rfunc differ for {:?}\n  built-in: {:?}\n  rfunc:    {:?}",
                builtin
                    .iter()
                    .map(|x| String::from_utf8_lossy(x))
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            );
        }
        b
    }

    #[track_caller]
    pub fn same_str(&mut self, builtin: &[&str]) -> Vec<u8> {
        let v: Vec<&[u8]> = builtin.iter().map(|s| s.as_bytes()).collect();
        self.same(&v)
    }

    /// Loads the same library into both registries and checks the replies agree.
    #[track_caller]
    pub fn load(&mut self, code: &str) -> Vec<u8> {
        self.same(&[b"FUNCTION", b"LOAD", b"REPLACE", code.as_bytes()])
    }

    pub fn flush(&mut self) {
        let _ = self.c.cmd(&["FUNCTION", "FLUSH", "SYNC"]);
        let _ = self.c.cmd(&["RFUNC.FLUSH", "SYNC"]);
    }

    pub fn cmd(&mut self, args: &[&str]) -> Value {
        self.c.cmd(args)
    }
}
