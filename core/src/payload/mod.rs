//! The `FUNCTION DUMP` / `FUNCTION RESTORE` payload: `(F5 rdb_string(code))* version:u16le crc64:u64le`.
//!
//! Encoding reproduces the server byte for byte; decoding accepts and rejects exactly what the server's
//! `FUNCTION RESTORE` does, with its error texts (spec `payload.md` sections 1–2).

pub mod crc64;
pub mod lzf;
pub mod rdb;

use std::borrow::Cow;
use std::fmt;

pub use crc64::crc64;
use rdb::{RdbError, Reader};

/// RDB opcode of one library entry.
pub const FUNCTION_OPCODE: u8 = 0xF5;
/// Opcode of the pre-GA (Redis 7.0 release-candidate) function format, which Valkey refuses.
pub const PRE_GA_OPCODE: u8 = 0xF6;
/// Version (2 bytes) and CRC (8 bytes).
pub const FOOTER_LEN: usize = 10;

/// Every footer version a real server writes for this payload format: Redis 7.0 (10), Valkey 7.2–8.x and
/// Redis 7.2 (11), Redis 7.4 (12), Valkey 9.x (80).
pub const WRITTEN_VERSIONS: [u16; 4] = [10, 11, 12, 80];

/// Builds a payload from complete library codes, in the given order.
///
/// `version` should be the host's own RDB version and `compress` its `rdbcompression` setting: with both,
/// the bytes equal the host's `FUNCTION DUMP` for the same libraries in the same order.
pub fn encode<L: AsRef<[u8]>>(libraries: &[L], version: u16, compress: bool) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = libraries
        .iter()
        .map(|l| encode_entry(l.as_ref(), compress))
        .collect();
    encode_entries(&entries, version)
}

/// One library's entry: the function opcode and the code as an RDB string. A registry can keep it, so DUMP does
/// not compress the same code again.
pub fn encode_entry(code: &[u8], compress: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + 1 + 9);
    out.push(FUNCTION_OPCODE);
    rdb::write_string(&mut out, code, compress);
    out
}

/// A payload from ready entries (`encode_entry`), in the given order.
pub fn encode_entries<E: AsRef<[u8]>>(entries: &[E], version: u16) -> Vec<u8> {
    let size: usize = entries.iter().map(|e| e.as_ref().len()).sum::<usize>() + FOOTER_LEN;
    let mut out = Vec::with_capacity(size);
    for e in entries {
        out.extend_from_slice(e.as_ref());
    }
    out.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why the footer was rejected. All of these reply the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterError {
    /// Fewer than 10 bytes.
    TooShort { len: usize },
    /// The version is not one the caller's acceptance rule allows.
    VersionRejected { version: u16 },
    /// The stored CRC does not match (a stored 0 is not special).
    ChecksumMismatch { stored: u64, computed: u64 },
}

/// A payload rejected by `FUNCTION RESTORE`.
///
/// `Display` gives the server's exact reply text without the `ERR ` prefix; [`PayloadError::offset`] and
/// [`PayloadError::detail`] say where and why, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// "DUMP payload version or checksum are wrong"
    VersionOrChecksum(FooterError),
    /// "Pre-GA function format not supported"; `offset` is that of the `F6` byte.
    PreGaFormat { offset: usize },
    /// "given type is not a function"; `offset` is that of the opcode byte.
    NotAFunction { offset: usize, opcode: u8 },
    /// "Failed loading library payload"
    LibraryPayload(RdbError),
}

impl PayloadError {
    /// Offset in the payload where the problem was found (`None` for footer problems).
    pub fn offset(&self) -> Option<usize> {
        match self {
            PayloadError::VersionOrChecksum(_) => None,
            PayloadError::PreGaFormat { offset } | PayloadError::NotAFunction { offset, .. } => {
                Some(*offset)
            }
            PayloadError::LibraryPayload(e) => Some(e.offset),
        }
    }

    /// Human-readable cause with offsets, for logs (never for the reply).
    pub fn detail(&self) -> String {
        match self {
            PayloadError::VersionOrChecksum(FooterError::TooShort { len }) => {
                format!("payload is {len} bytes, shorter than the 10-byte footer")
            }
            PayloadError::VersionOrChecksum(FooterError::VersionRejected { version }) => {
                format!("RDB version {version} is not accepted")
            }
            PayloadError::VersionOrChecksum(FooterError::ChecksumMismatch { stored, computed }) => {
                format!("CRC-64 mismatch: stored {stored:#018x}, computed {computed:#018x}")
            }
            PayloadError::PreGaFormat { offset } => {
                format!("pre-GA opcode 0xf6 at offset {offset}")
            }
            PayloadError::NotAFunction { offset, opcode } => {
                format!("opcode {opcode:#04x} at offset {offset} is not 0xf5")
            }
            PayloadError::LibraryPayload(e) => format!("library string: {e}"),
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadError::VersionOrChecksum(_) => "DUMP payload version or checksum are wrong",
            PayloadError::PreGaFormat { .. } => "Pre-GA function format not supported",
            PayloadError::NotAFunction { .. } => "given type is not a function",
            PayloadError::LibraryPayload(_) => "Failed loading library payload",
        })
    }
}

impl std::error::Error for PayloadError {}

impl From<RdbError> for PayloadError {
    fn from(e: RdbError) -> Self {
        PayloadError::LibraryPayload(e)
    }
}

/// Checks length and CRC and returns the footer version and the body (everything before the footer).
///
/// No version rule is applied here; see [`verify_footer_with`].
pub fn verify_footer(payload: &[u8]) -> Result<(u16, &[u8]), PayloadError> {
    verify_footer_with(payload, |_| true)
}

/// Like [`verify_footer`], applying `accept` to the version between the length and the CRC check (the
/// server's order; all three failures reply the same text, so the order only shows in [`PayloadError::detail`]).
pub fn verify_footer_with(
    payload: &[u8],
    accept: impl Fn(u16) -> bool,
) -> Result<(u16, &[u8]), PayloadError> {
    let len = payload.len();
    if len < FOOTER_LEN {
        return Err(PayloadError::VersionOrChecksum(FooterError::TooShort {
            len,
        }));
    }
    let version = u16::from_le_bytes([payload[len - 10], payload[len - 9]]);
    if !accept(version) {
        return Err(PayloadError::VersionOrChecksum(
            FooterError::VersionRejected { version },
        ));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&payload[len - 8..]);
    let stored = u64::from_le_bytes(stored);
    let computed = crc64(0, &payload[..len - 8]);
    if stored != computed {
        return Err(PayloadError::VersionOrChecksum(
            FooterError::ChecksumMismatch { stored, computed },
        ));
    }
    Ok((version, &payload[..len - FOOTER_LEN]))
}

/// The library entries of a payload whose footer has been verified, parsed lazily.
///
/// The server compiles each library as soon as it has read it, so a library that fails to compile is
/// reported before a malformed entry after it. Callers that must reproduce that order iterate this and
/// compile as they go; [`decode`] collects it instead. Iteration stops after the first error.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    reader: Reader<'a>,
    len: usize,
    failed: bool,
}

impl<'a> Entries<'a> {
    /// Iterates the entries of `payload` (the whole payload, footer included) without checking the footer.
    pub fn new_unverified(payload: &'a [u8]) -> Self {
        Entries {
            reader: Reader::new(payload),
            len: payload.len(),
            failed: false,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Cow<'a, [u8]>, PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The server's loop runs while more than the footer's 10 bytes remain, and its reader is bounded
        // only by the end of the whole buffer, so a string may run into the footer bytes undetected.
        if self.failed || self.len - self.reader.position() <= FOOTER_LEN {
            return None;
        }
        let offset = self.reader.position();
        let result = match self.reader.read_u8() {
            Ok(PRE_GA_OPCODE) => Err(PayloadError::PreGaFormat { offset }),
            Ok(FUNCTION_OPCODE) => self.reader.read_string().map_err(PayloadError::from),
            Ok(opcode) => Err(PayloadError::NotAFunction { offset, opcode }),
            Err(e) => Err(e.into()),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// Verifies the footer with the version rule `accept`, then returns the lazy entry iterator.
pub fn entries_with(
    payload: &[u8],
    accept: impl Fn(u16) -> bool,
) -> Result<(u16, Entries<'_>), PayloadError> {
    let (version, _) = verify_footer_with(payload, accept)?;
    Ok((version, Entries::new_unverified(payload)))
}

/// A successfully parsed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPayload {
    /// The footer's RDB version, as read.
    pub version: u16,
    /// Library codes in payload order.
    pub libraries: Vec<Vec<u8>>,
}

/// Parses a payload without a version rule (any version is taken as read; apply one with [`decode_with`]).
pub fn decode(payload: &[u8]) -> Result<DecodedPayload, PayloadError> {
    decode_with(payload, |_| true)
}

/// Parses a payload exactly as `FUNCTION RESTORE` does up to compiling (spec section 1.1 steps 4–5),
/// rejecting footer versions for which `accept` is false.
pub fn decode_with(
    payload: &[u8],
    accept: impl Fn(u16) -> bool,
) -> Result<DecodedPayload, PayloadError> {
    let (version, entries) = entries_with(payload, accept)?;
    let libraries = entries
        .map(|e| e.map(Cow::into_owned))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedPayload { version, libraries })
}

/// A server whose `FUNCTION RESTORE` version rule is known (spec section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Valkey 9.x: writes 80; strict accepts 1..=11 and 80, relaxed accepts every version but 0.
    Valkey9,
    /// Valkey 8.1: writes 11; strict accepts 0..=11, relaxed adds 80..=65535.
    Valkey81,
    /// Valkey 7.2 and 8.0: writes 11, accepts 0..=11 (no `rdb-version-check`).
    Valkey80,
    /// Redis 7.0: writes 10, accepts 0..=10.
    Redis70,
    /// Any other server (e.g. Redis 7.2 / 7.4): accepts versions up to its own.
    Other { own_version: u16 },
}

impl Host {
    /// The RDB version this host writes into its payload footers.
    pub fn rdb_version(self) -> u16 {
        match self {
            Host::Valkey9 => 80,
            Host::Valkey81 | Host::Valkey80 => 11,
            Host::Redis70 => 10,
            Host::Other { own_version } => own_version,
        }
    }

    /// The host's own `FUNCTION RESTORE` rule. `relaxed` is `rdb-version-check relaxed` (only 8.1 and 9.x
    /// have that config; it is ignored elsewhere).
    pub fn accepts(self, relaxed: bool, v: u16) -> bool {
        match (self, relaxed) {
            (Host::Valkey9, false) => (1..=11).contains(&v) || v == 80,
            (Host::Valkey9, true) => v >= 1,
            (Host::Valkey81, false) => v <= 11,
            (Host::Valkey81, true) => v <= 11 || v >= 80,
            (Host::Valkey80, _) => v <= 11,
            (Host::Redis70, _) => v <= 10,
            (Host::Other { own_version }, _) => v <= own_version,
        }
    }

    /// rfunc's rule (SPEC rule 5): what the host accepts, plus every version a real server writes for this
    /// format, on every host.
    pub fn rfunc_accepts(self, relaxed: bool, v: u16) -> bool {
        self.accepts(relaxed, v) || WRITTEN_VERSIONS.contains(&v)
    }
}

/// Free-function form of [`Host::accepts`].
pub fn host_accepts(host: Host, relaxed: bool, v: u16) -> bool {
    host.accepts(relaxed, v)
}

/// Free-function form of [`Host::rfunc_accepts`].
pub fn rfunc_accepts(host: Host, relaxed: bool, v: u16) -> bool {
    host.rfunc_accepts(relaxed, v)
}
