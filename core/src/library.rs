//! The library model's pure parts: the `#!<engine> name=<lib>` header, name rules, function flags and the
//! glob matcher `LIST LIBRARYNAME` uses. Error texts are the server's, without the `ERR ` prefix.

use std::fmt;

/// Why a library header was refused. `Display` gives the server's exact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    MissingMetadata,
    InvalidMetadata,
    InvalidValue(Vec<u8>),
    NameGivenTwice,
    NameNotGiven,
    InvalidLibraryName,
    EngineNotFound(Vec<u8>),
}

impl HeaderError {
    /// The server's error text as bytes (tokens and engine names may be arbitrary bytes).
    pub fn message(&self) -> Vec<u8> {
        match self {
            HeaderError::InvalidValue(tok) => {
                [b"Invalid metadata value given: ".as_slice(), tok].concat()
            }
            HeaderError::EngineNotFound(e) => [b"Engine '".as_slice(), e, b"' not found"].concat(),
            other => other.to_string().into_bytes(),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::MissingMetadata => f.write_str("Missing library metadata"),
            HeaderError::InvalidMetadata => f.write_str("Invalid library metadata"),
            HeaderError::InvalidValue(t) => {
                write!(f, "Invalid metadata value given: {}", String::from_utf8_lossy(t))
            }
            HeaderError::NameGivenTwice => {
                f.write_str("Invalid metadata value, name argument was given multiple times")
            }
            HeaderError::NameNotGiven => f.write_str("Library name was not given"),
            HeaderError::InvalidLibraryName => f.write_str(
                "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
            ),
            HeaderError::EngineNotFound(e) => write!(f, "Engine '{}' not found", String::from_utf8_lossy(e)),
        }
    }
}

impl std::error::Error for HeaderError {}

/// A parsed library header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The library name (validated: `[A-Za-z0-9_]+`).
    pub name: String,
    /// Byte offset of the header's terminating `\n`: the code handed to the engine starts there, so the
    /// engine's line numbers count the header as line 1.
    pub body_offset: usize,
}

/// The only engine there is. Engine names are matched case-insensitively; LIST always says `LUA`.
pub const ENGINE_NAME: &str = "LUA";

/// Parses and validates `#!<engine> name=<lib>` with the server's checks, in the server's order:
/// metadata present and well-formed, tokens, name given, name valid, engine known.
pub fn parse_header(code: &[u8]) -> Result<Header, HeaderError> {
    if !code.starts_with(b"#!") {
        return Err(HeaderError::MissingMetadata);
    }
    let nl = code
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(HeaderError::InvalidMetadata)?;
    // A NUL in the header line makes the server's splitter fail (verified on 8.0.1, 8.1.8, 9.1.2).
    if code[..nl].contains(&0) {
        return Err(HeaderError::InvalidMetadata);
    }
    let tokens = split_args(&code[..nl]).ok_or(HeaderError::InvalidMetadata)?;
    // The first token always starts with `#!` (the code does); what follows is the engine name.
    let engine = tokens
        .first()
        .map(|t| t[2.min(t.len())..].to_vec())
        .unwrap_or_default();
    let mut name: Option<Vec<u8>> = None;
    for tok in tokens.iter().skip(1) {
        if tok.len() >= 5 && tok[..5].eq_ignore_ascii_case(b"name=") {
            if name.is_some() {
                return Err(HeaderError::NameGivenTwice);
            }
            name = Some(tok[5..].to_vec());
        } else {
            return Err(HeaderError::InvalidValue(tok.clone()));
        }
    }
    let name = name.ok_or(HeaderError::NameNotGiven)?;
    if !is_valid_name(&name) {
        return Err(HeaderError::InvalidLibraryName);
    }
    if !engine.eq_ignore_ascii_case(b"lua") {
        return Err(HeaderError::EngineNotFound(engine));
    }
    Ok(Header {
        // Valid names are ASCII.
        name: String::from_utf8(name).expect("validated name is ASCII"),
        body_offset: nl,
    })
}

/// Library and function names: `[A-Za-z0-9_]+`, no maximum length.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Splits a line the way the server's `sdssplitargs` does (double quotes with `\n`, `\xHH`… escapes, single
/// quotes with `\'`, a closing quote must be followed by a separator). Returns None on bad quoting.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // The server works on a C string: a NUL ends the input.
    let line = match line.iter().position(|&b| b == 0) {
        Some(p) => &line[..p],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut p = 0usize;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(out);
        }
        let (mut inq, mut insq) = (false, false);
        let mut cur = Vec::new();
        loop {
            let c = at(p);
            if inq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    cur.push(hex(at(p + 2)).unwrap() * 16 + hex(at(p + 3)).unwrap());
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    _ => cur.push(c),
                }
            }
            p += 1;
        }
        out.push(cur);
    }
}

/// Function flags, in the canonical order LIST prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FunctionFlags(u8);

impl FunctionFlags {
    pub const NO_WRITES: FunctionFlags = FunctionFlags(1);
    pub const ALLOW_OOM: FunctionFlags = FunctionFlags(2);
    pub const ALLOW_STALE: FunctionFlags = FunctionFlags(4);
    pub const NO_CLUSTER: FunctionFlags = FunctionFlags(8);
    pub const ALLOW_CROSS_SLOT_KEYS: FunctionFlags = FunctionFlags(16);

    /// Every flag with its name, in LIST order.
    pub const ALL: [(FunctionFlags, &'static str); 5] = [
        (FunctionFlags::NO_WRITES, "no-writes"),
        (FunctionFlags::ALLOW_OOM, "allow-oom"),
        (FunctionFlags::ALLOW_STALE, "allow-stale"),
        (FunctionFlags::NO_CLUSTER, "no-cluster"),
        (
            FunctionFlags::ALLOW_CROSS_SLOT_KEYS,
            "allow-cross-slot-keys",
        ),
    ];

    pub const fn empty() -> FunctionFlags {
        FunctionFlags(0)
    }
    /// Parses one flag name (case-insensitive).
    pub fn from_name(name: &[u8]) -> Option<FunctionFlags> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }
    pub fn contains(self, other: FunctionFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: FunctionFlags) {
        self.0 |= other.0;
    }
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// Glob matching as the server's `stringmatchlen`: `*`, `?`, `[...]` (with `^` negation and ranges), `\` escapes.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    glob_inner(pattern, string, nocase, 0)
}

fn glob_inner(mut p: &[u8], mut s: &[u8], nocase: bool, depth: u32) -> bool {
    // The server caps recursion the same way (a pattern of many stars must not blow the stack).
    if depth > 1000 {
        return false;
    }
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if glob_inner(&p[1..], s, nocase, depth + 1) {
                        return true;
                    }
                    s = &s[1..];
                }
                return false;
            }
            b'?' => {
                s = &s[1..];
            }
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if p.is_empty() {
                        break;
                    }
                    if p[0] == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if fold(p[0]) == fold(s[0]) {
                            matched = true;
                        }
                    } else if p[0] == b']' {
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut start, mut end) = (fold(p[0]), fold(p[2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        let c = fold(s[0]);
                        if c >= start && c <= end {
                            matched = true;
                        }
                        p = &p[2..];
                    } else if fold(p[0]) == fold(s[0]) {
                        matched = true;
                    }
                    p = &p[1..];
                }
                if p.is_empty() {
                    // An unterminated class: the server treats the end of the pattern as the end of the class.
                    p = &p[..0];
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    s = &s[1..];
                    continue;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if fold(p[0]) != fold(s[0]) {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if fold(c) != fold(s[0]) {
                    return false;
                }
                s = &s[1..];
            }
        }
        if !p.is_empty() {
            p = &p[1..];
        }
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> String {
        parse_header(code.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn header_table_of_the_spec() {
        assert_eq!(err("return 1"), "Missing library metadata");
        assert_eq!(err(" #!lua name=x\n"), "Missing library metadata");
        assert_eq!(err("#!lua"), "Invalid library metadata");
        assert_eq!(err("#!lua name=x"), "Invalid library metadata");
        assert_eq!(
            err("#!lua name=a6 \"unbalanced\nx"),
            "Invalid library metadata"
        );
        assert_eq!(
            err("#!LUA name=bad\0foramat\nx"),
            "Invalid library metadata"
        );
        assert_eq!(err("#!lua\0 name=x\nx"), "Invalid library metadata");
        assert_eq!(err("#!lua\nx"), "Library name was not given");
        assert_eq!(err("#!\nx"), "Library name was not given");
        assert_eq!(err("#!   \nx"), "Library name was not given");
        let bad = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";
        assert_eq!(err("#!lua name=\nx"), bad);
        assert_eq!(err("#!lua name=a-b\nx"), bad);
        assert_eq!(err("#!lua name=é\nx"), bad);
        assert_eq!(
            err("#!lua name=a name=b\nx"),
            "Invalid metadata value, name argument was given multiple times"
        );
        assert_eq!(
            err("#!lua name=a foo=bar\nx"),
            "Invalid metadata value given: foo=bar"
        );
        assert_eq!(err("#!lua x name=a\nx"), "Invalid metadata value given: x");
        assert_eq!(
            err("#!  lua   name=a2  \nx"),
            "Invalid metadata value given: lua"
        );
        assert_eq!(err("#!js name=a\nx"), "Engine 'js' not found");
        assert_eq!(err("#! name=x\nx"), "Engine '' not found");
        for ok in [
            "#!lua \"name=a3\"\nx",
            "#!lua name=\"a4\"\nx",
            "#!lua\tname=a5\r\nx",
            "#!LUA name=a\nx",
            "#!lua NAME=a\nx",
        ] {
            parse_header(ok.as_bytes()).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        let h = parse_header(b"#!lua name=mylib\nreturn 1").unwrap();
        assert_eq!(h.name, "mylib");
        assert_eq!(h.body_offset, 16);
    }

    #[test]
    fn split_args_quoting() {
        assert_eq!(
            split_args(b"a \"b c\" 'd e'").unwrap(),
            vec![b"a".to_vec(), b"b c".to_vec(), b"d e".to_vec()]
        );
        assert_eq!(split_args(b"\"\\x41\\n\"").unwrap(), vec![b"A\n".to_vec()]);
        assert!(split_args(b"\"a\"b").is_none());
        assert!(split_args(b"'a").is_none());
        assert_eq!(split_args(b"'it\\'s'").unwrap(), vec![b"it's".to_vec()]);
        assert_eq!(split_args(b"   ").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn flags_parse_and_order() {
        let mut f = FunctionFlags::empty();
        f.insert(FunctionFlags::from_name(b"ALLOW-STALE").unwrap());
        f.insert(FunctionFlags::from_name(b"no-writes").unwrap());
        assert_eq!(
            f.names().collect::<Vec<_>>(),
            vec!["no-writes", "allow-stale"]
        );
        assert!(FunctionFlags::from_name(b"no-script").is_none());
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"MY*", b"mylib", true));
        assert!(!glob_match(b"MY*", b"mylib", false));
        // As the server's stringmatchlen: the loop never runs for an empty string, so only an empty pattern
        // matches it (library names are never empty, so LIST never meets this case).
        assert!(!glob_match(b"*", b"", false));
        assert!(glob_match(b"", b"", false));
        assert!(!glob_match(b"", b"a", false));
        assert!(glob_match(b"l?b", b"lib", false));
        assert!(glob_match(b"l[a-j]b", b"lib", false));
        assert!(!glob_match(b"l[^a-j]b", b"lib", false));
        assert!(glob_match(b"a\\*", b"a*", false));
        assert!(glob_match(b"*lib*", b"mylibrary", false));
        assert!(!glob_match(b"*x*", b"mylibrary", false));
    }
}
