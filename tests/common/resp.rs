//! A minimal RESP2/RESP3 client that keeps the raw reply bytes, so tests can compare replies byte for byte.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One parsed reply. Doubles, big numbers and verbatim strings keep their text exactly as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// RESP2 null bulk `$-1`.
    Nil,
    /// RESP2 null array `*-1`.
    NilArray,
    /// RESP3 null `_`.
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Double(String),
    Bool(bool),
    BigNumber(String),
    Verbatim(String, Vec<u8>),
    Push(Vec<Value>),
}

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Bulk(b) => b,
            Value::Simple(s) | Value::Error(s) => s.as_bytes(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
    pub fn as_str(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
    pub fn as_int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            other => panic!("not an integer reply: {other:?}"),
        }
    }
    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(a) | Value::Set(a) | Value::Push(a) => a,
            other => panic!("not an array reply: {other:?}"),
        }
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
}

/// Parses one reply from `buf`. Returns `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(from..)?;
        let pos = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..pos], from + pos + 2))
    }
    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
    fn num(b: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number {:?}", text(b)))
    }
    fn at(buf: &[u8], pos: usize) -> Result<Option<(Value, usize)>, String> {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some((head, mut next)) = line(buf, pos + 1) else {
            return Ok(None);
        };
        let value = match kind {
            b'+' => Value::Simple(text(head)),
            b'-' => Value::Error(text(head)),
            b':' => Value::Int(num(head)?),
            b',' => Value::Double(text(head)),
            b'(' => Value::BigNumber(text(head)),
            b'#' => Value::Bool(head == b"t"),
            b'_' => Value::Null,
            b'$' | b'=' | b'!' => {
                let n = num(head)?;
                if n < 0 {
                    Value::Nil
                } else {
                    let n = n as usize;
                    if buf.len() < next + n + 2 {
                        return Ok(None);
                    }
                    let body = buf[next..next + n].to_vec();
                    next += n + 2;
                    match kind {
                        b'$' => Value::Bulk(body),
                        b'!' => Value::Error(text(&body)),
                        _ => {
                            let (fmt, s) = body.split_at(body.len().min(4));
                            Value::Verbatim(text(&fmt[..fmt.len().saturating_sub(1)]), s.to_vec())
                        }
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = num(head)?;
                if n < 0 {
                    Value::NilArray
                } else {
                    let count = if kind == b'%' || kind == b'|' {
                        2 * n as usize
                    } else {
                        n as usize
                    };
                    let mut items = Vec::with_capacity(count);
                    for _ in 0..count {
                        match at(buf, next)? {
                            Some((v, after)) => {
                                items.push(v);
                                next = after;
                            }
                            None => return Ok(None),
                        }
                    }
                    match kind {
                        b'*' => Value::Array(items),
                        b'~' => Value::Set(items),
                        b'>' => Value::Push(items),
                        b'|' => {
                            // An attribute precedes the real reply: skip it.
                            return at(buf, next);
                        }
                        _ => {
                            let mut pairs = Vec::with_capacity(n as usize);
                            let mut it = items.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                pairs.push((k, v));
                            }
                            Value::Map(pairs)
                        }
                    }
                }
            }
            other => return Err(format!("unknown RESP type byte {other:#x}")),
        };
        Ok(Some((value, next)))
    }
    at(buf, 0)
}

/// Serialises a value back to the exact bytes it was parsed from.
pub fn serialize(v: &Value, out: &mut Vec<u8>) {
    fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
        out.push(kind);
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
    match v {
        Value::Simple(s) => line(out, b'+', s.as_bytes()),
        Value::Error(s) => line(out, b'-', s.as_bytes()),
        Value::Int(i) => line(out, b':', i.to_string().as_bytes()),
        Value::Bulk(b) => {
            line(out, b'$', b.len().to_string().as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::NilArray => out.extend_from_slice(b"*-1\r\n"),
        Value::Null => out.extend_from_slice(b"_\r\n"),
        Value::Array(a) | Value::Set(a) | Value::Push(a) => {
            let kind = match v {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            line(out, kind, a.len().to_string().as_bytes());
            for x in a {
                serialize(x, out);
            }
        }
        Value::Map(m) => {
            line(out, b'%', m.len().to_string().as_bytes());
            for (k, x) in m {
                serialize(k, out);
                serialize(x, out);
            }
        }
        Value::Double(d) => line(out, b',', d.as_bytes()),
        Value::Bool(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
        Value::BigNumber(n) => line(out, b'(', n.as_bytes()),
        Value::Verbatim(f, s) => {
            let body = [f.as_bytes(), b":", s].concat();
            line(out, b'=', body.len().to_string().as_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(host: &str, port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.stream.write_all(&encode(args))
    }

    /// Reads one full reply and returns its raw bytes and parsed value.
    pub fn read_reply(&mut self) -> io::Result<(Vec<u8>, Value)> {
        loop {
            match parse(&self.buf) {
                Ok(Some((v, used))) => {
                    let raw: Vec<u8> = self.buf.drain(..used).collect();
                    return Ok((raw, v));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and returns the raw reply bytes.
    pub fn raw(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args).expect("send");
        self.read_reply().expect("read reply").0
    }

    /// Sends a command and returns the parsed reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args).expect("send");
        self.read_reply().expect("read reply").1
    }

    /// Convenience: whitespace-free string arguments.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&v)
    }

    pub fn set_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
    }
}
