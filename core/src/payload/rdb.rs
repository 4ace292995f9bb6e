//! The RDB length and string encodings used inside DUMP payloads (spec section 4).

use std::borrow::Cow;
use std::fmt;

use super::lzf::{self, LzfError};

const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

const LEN_32BIT: u8 = 0x80;
const LEN_64BIT: u8 = 0x81;
const ENCVAL_MARKER: u8 = 0xC0;

/// Strings up to this length are tried as integers (the server's `rdbSaveRawString`).
const INT_ENCODING_MAX_LEN: usize = 11;
/// LZF is attempted only for strings longer than this.
const LZF_MIN_LEN_EXCLUSIVE: usize = 20;

/// Appends `len` in the shortest RDB length form.
pub fn write_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if len <= u64::from(u32::MAX) {
        out.push(LEN_32BIT);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(LEN_64BIT);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// The server's `string2ll` for strings short enough to be tried as integers: `Some` only for the canonical
/// decimal form (no sign other than one leading `-`, no leading zeros, no `-0`, fits in i64), because only
/// then does converting back to text give the same bytes.
pub fn parse_canonical_int(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in the server: 21 bytes or more is never a number.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// Appends `s` as the server's `rdbSaveRawString` would: integer encoding, then LZF (when `compress` and the
/// string is longer than 20 bytes, kept only if the compressor fits it into `len - 4` bytes), else raw.
pub fn write_string(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    let n = s.len();
    if n <= INT_ENCODING_MAX_LEN {
        if let Some(v) = parse_canonical_int(s) {
            if let Ok(v) = i8::try_from(v) {
                out.push(ENCVAL_MARKER | ENC_INT8);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
            if let Ok(v) = i16::try_from(v) {
                out.push(ENCVAL_MARKER | ENC_INT16);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
            if let Ok(v) = i32::try_from(v) {
                out.push(ENCVAL_MARKER | ENC_INT32);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
        }
    }
    if compress && n > LZF_MIN_LEN_EXCLUSIVE {
        if let Some(c) = lzf::compress(s, n - 4) {
            out.push(ENCVAL_MARKER | ENC_LZF);
            write_len(out, c.len() as u64);
            write_len(out, n as u64);
            out.extend_from_slice(&c);
            return;
        }
    }
    write_len(out, n as u64);
    out.extend_from_slice(s);
}

/// Convenience wrapper around [`write_string`].
pub fn encode_string(s: &[u8], compress: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 9);
    write_string(&mut out, s, compress);
    out
}

/// One item read where a length is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// A plain length, in any of the 6/14/32/64-bit forms (non-minimal forms are accepted).
    Plain(u64),
    /// A `11xxxxxx` byte: the string that follows uses special encoding `xxxxxx`.
    Encoded(u8),
}

/// What went wrong while reading RDB data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdbErrorKind {
    /// Needed `needed` more bytes, only `available` were left.
    UnexpectedEnd { needed: u64, available: usize },
    /// A length's first byte was one of the undefined forms `0x82..=0xBF`.
    InvalidLengthByte(u8),
    /// A string's special encoding was not int8/int16/int32/LZF.
    UnknownStringEncoding(u8),
    /// The LZF data did not decompress to exactly the declared length.
    Lzf(LzfError),
}

/// An RDB read failure and the payload offset where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdbError {
    pub kind: RdbErrorKind,
    /// Offset in the reader's buffer of the item (or, for LZF, of the failing token) that was rejected.
    pub offset: usize,
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RdbErrorKind::UnexpectedEnd { needed, available } => write!(
                f,
                "needed {needed} bytes at offset {}, only {available} left",
                self.offset
            ),
            RdbErrorKind::InvalidLengthByte(b) => {
                write!(f, "invalid length byte {b:#04x} at offset {}", self.offset)
            }
            RdbErrorKind::UnknownStringEncoding(e) => {
                write!(f, "unknown string encoding {e} at offset {}", self.offset)
            }
            RdbErrorKind::Lzf(e) => write!(f, "{e} (LZF data at offset {})", self.offset),
        }
    }
}

impl std::error::Error for RdbError {}

/// A cursor over a byte slice that reports where its input went wrong.
///
/// Every read is bounded by the slice: a length field larger than what remains is an error, never an
/// allocation.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to be read.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn error(&self, offset: usize, kind: RdbErrorKind) -> RdbError {
        RdbError { kind, offset }
    }

    pub fn read_u8(&mut self) -> Result<u8, RdbError> {
        let b = *self.buf.get(self.pos).ok_or(RdbError {
            kind: RdbErrorKind::UnexpectedEnd {
                needed: 1,
                available: 0,
            },
            offset: self.pos,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Borrows the next `n` bytes.
    pub fn read_bytes(&mut self, n: u64) -> Result<&'a [u8], RdbError> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.error(
                self.pos,
                RdbErrorKind::UnexpectedEnd {
                    needed: n,
                    available,
                },
            )),
        }
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let s = self.read_bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a length item, which may instead be a special-encoding marker (`rdbLoadLen` with `isencoded`).
    pub fn read_length(&mut self) -> Result<Length, RdbError> {
        let start = self.pos;
        let b0 = self.read_u8()?;
        let value = match b0 >> 6 {
            0 => u64::from(b0 & 0x3f),
            1 => (u64::from(b0 & 0x3f) << 8) | u64::from(self.read_u8()?),
            3 => return Ok(Length::Encoded(b0 & 0x3f)),
            _ => match b0 {
                LEN_32BIT => u64::from(u32::from_be_bytes(self.read_array()?)),
                LEN_64BIT => u64::from_be_bytes(self.read_array()?),
                _ => {
                    self.pos = start;
                    return Err(self.error(start, RdbErrorKind::InvalidLengthByte(b0)));
                }
            },
        };
        Ok(Length::Plain(value))
    }

    /// Reads a length where the caller passes no `isencoded` pointer (the LZF header): the server then
    /// takes a `11xxxxxx` byte as the 6-bit length `xxxxxx` instead of rejecting it.
    fn read_length_ignoring_marker(&mut self) -> Result<u64, RdbError> {
        Ok(match self.read_length()? {
            Length::Plain(v) => v,
            Length::Encoded(v) => u64::from(v),
        })
    }

    /// Reads an RDB string (`rdbGenericLoadStringObject`): raw, int8/16/32 as decimal text, or LZF.
    ///
    /// Raw strings are borrowed from the input.
    pub fn read_string(&mut self) -> Result<Cow<'a, [u8]>, RdbError> {
        let start = self.pos;
        match self.read_length()? {
            Length::Plain(len) => self.read_bytes(len).map(Cow::Borrowed),
            Length::Encoded(ENC_INT8) => {
                let v = i8::from_le_bytes(self.read_array()?);
                Ok(Cow::Owned(v.to_string().into_bytes()))
            }
            Length::Encoded(ENC_INT16) => {
                let v = i16::from_le_bytes(self.read_array()?);
                Ok(Cow::Owned(v.to_string().into_bytes()))
            }
            Length::Encoded(ENC_INT32) => {
                let v = i32::from_le_bytes(self.read_array()?);
                Ok(Cow::Owned(v.to_string().into_bytes()))
            }
            Length::Encoded(ENC_LZF) => {
                let clen = self.read_length_ignoring_marker()?;
                let len = self.read_length_ignoring_marker()?;
                let data_at = self.pos;
                let data = self.read_bytes(clen)?;
                // The server's decompressor reports errors as "0 bytes produced" and the reader compares that
                // with `len`, so a declared length of 0 accepts any data as the empty string.
                if len == 0 {
                    return Ok(Cow::Owned(Vec::new()));
                }
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                lzf::decompress(data, len)
                    .map(Cow::Owned)
                    .map_err(|e| self.error(data_at + e.offset(), RdbErrorKind::Lzf(e)))
            }
            Length::Encoded(other) => {
                self.pos = start;
                Err(self.error(start, RdbErrorKind::UnknownStringEncoding(other)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Vec<u8>, RdbError> {
        Reader::new(bytes).read_string().map(Cow::into_owned)
    }

    #[test]
    fn length_forms() {
        for (v, enc) in [
            (0u64, &[0x00][..]),
            (63, &[0x3f]),
            (64, &[0x40, 0x40]),
            (16383, &[0x7f, 0xff]),
            (16384, &[0x80, 0x00, 0x00, 0x40, 0x00]),
            (u32::MAX as u64, &[0x80, 0xff, 0xff, 0xff, 0xff]),
            (u32::MAX as u64 + 1, &[0x81, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            write_len(&mut out, v);
            assert_eq!(out, enc, "{v}");
            let mut r = Reader::new(enc);
            assert_eq!(r.read_length().unwrap(), Length::Plain(v));
            assert_eq!(r.remaining(), 0);
        }
        // Non-minimal forms are accepted.
        assert_eq!(
            Reader::new(&[0x40, 0x05]).read_length().unwrap(),
            Length::Plain(5)
        );
        assert_eq!(
            Reader::new(&[0x81, 0, 0, 0, 0, 0, 0, 0, 5])
                .read_length()
                .unwrap(),
            Length::Plain(5)
        );
        for b in 0x82..=0xbf {
            let e = Reader::new(&[b, 0, 0, 0, 0, 0, 0, 0, 0])
                .read_length()
                .unwrap_err();
            assert_eq!(e.kind, RdbErrorKind::InvalidLengthByte(b));
            assert_eq!(e.offset, 0);
        }
    }

    #[test]
    fn canonical_ints() {
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("123", Some(123)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("-", None),
            ("", None),
            ("1a", None),
        ] {
            assert_eq!(parse_canonical_int(s.as_bytes()), v, "{s:?}");
        }
    }

    #[test]
    fn int_encodings() {
        for (s, enc) in [
            ("5", &[0xc0, 0x05][..]),
            ("-5", &[0xc0, 0xfb]),
            ("-128", &[0xc0, 0x80]),
            ("128", &[0xc1, 0x80, 0x00]),
            ("-32768", &[0xc1, 0x00, 0x80]),
            ("32768", &[0xc2, 0x00, 0x80, 0x00, 0x00]),
            ("2147483647", &[0xc2, 0xff, 0xff, 0xff, 0x7f]),
            ("-2147483648", &[0xc2, 0x00, 0x00, 0x00, 0x80]),
        ] {
            assert_eq!(encode_string(s.as_bytes(), true), enc, "{s}");
            assert_eq!(read(enc).unwrap(), s.as_bytes());
        }
        // Out of i32 range or not canonical: raw.
        assert_eq!(encode_string(b"2147483648", true)[0], 10);
        assert_eq!(encode_string(b"-2147483649", true)[0], 11);
        assert_eq!(encode_string(b"007", true), b"\x03007");
        // Canonical but longer than 11 bytes: raw even though it fits i64.
        assert_eq!(encode_string(b"-10000000000", true)[0], 12);
    }

    #[test]
    fn raw_and_lzf_choice() {
        assert_eq!(encode_string(b"", true), [0x00]);
        let a20 = [b'a'; 20];
        assert_eq!(encode_string(&a20, true)[0], 20);
        let a21 = [b'a'; 21];
        assert_eq!(
            encode_string(&a21, true),
            [0xc3, 0x06, 0x15, 0x01, 0x61, 0x61, 0xe0, 0x0a, 0x00]
        );
        assert_eq!(encode_string(&a21, false)[0], 21);
        assert_eq!(read(&encode_string(&a21, true)).unwrap(), a21);
    }

    #[test]
    fn reader_errors() {
        let e = read(&[0x05, b'a']).unwrap_err();
        assert_eq!(
            e.kind,
            RdbErrorKind::UnexpectedEnd {
                needed: 5,
                available: 1
            }
        );
        assert_eq!(e.offset, 1);
        let e = read(&[0xc4]).unwrap_err();
        assert_eq!(e.kind, RdbErrorKind::UnknownStringEncoding(4));
        let e = read(&[0x80, 0xff, 0xff, 0xff, 0xff, 0x00]).unwrap_err();
        assert!(matches!(
            e.kind,
            RdbErrorKind::UnexpectedEnd {
                needed: 0xffff_ffff,
                ..
            }
        ));
        let e = read(&[0xc0]).unwrap_err();
        assert!(matches!(e.kind, RdbErrorKind::UnexpectedEnd { .. }));
    }

    #[test]
    fn lzf_len_zero_quirk() {
        assert_eq!(read(&[0xc3, 0x03, 0x00, b'a', b'b', b'c']).unwrap(), b"");
        assert_eq!(read(&[0xc3, 0x00, 0x00]).unwrap(), b"");
        // The data must still be present.
        assert!(read(&[0xc3, 0x03, 0x00, b'a']).is_err());
        // clen = 0 with len = 5
        assert!(read(&[0xc3, 0x00, 0x05]).is_err());
    }

    #[test]
    fn lzf_header_marker_is_a_length() {
        // clen written as 0xC2 reads as 2 (no isencoded pointer in the server's LZF reader).
        assert_eq!(read(&[0xc3, 0xc2, 0x01, 0x00, b'x']).unwrap(), b"x");
    }

    #[test]
    fn lzf_huge_declared_length_is_rejected_without_allocating() {
        let e = read(&[
            0xc3, 0x02, 0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, b'x',
        ])
        .unwrap_err();
        assert!(matches!(
            e.kind,
            RdbErrorKind::Lzf(LzfError::ImpossibleLength { .. })
        ));
    }
}
