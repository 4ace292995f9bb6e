//! LZF as the server runs it: liblzf 3.6 compiled with `HLOG = 16`, `VERY_FAST`, `CHECK_INPUT`.
//!
//! The compressor must be byte-identical to the server's, including two behaviours that other LZF
//! implementations (e.g. the `lzf` crate) do not share, because DUMP output is compared byte for byte:
//! * hash-table slot value 0 means "empty", so input position 0 is never a match source;
//! * when a match starts with 19 or 20 bytes left, the first 16 extension compares run without the length
//!   cap, so the match may be up to 2 bytes longer than the intended maximum.
//!
//! The compressor also has to give up exactly when the server's does (three conservative room checks):
//! that decision selects between the LZF and the raw string encoding.

use std::fmt;

const HLOG: u32 = 16;
const HSIZE: usize = 1 << HLOG;
const MAX_LIT: usize = 1 << 5;
const MAX_OFF: usize = 1 << 13;
const MAX_REF: usize = (1 << 8) + (1 << 3);

/// Most output bytes one input byte can produce: a 3-byte long back-reference expands to 264 bytes.
/// Literal runs produce less than one byte per input byte and short back-references 4.
pub const MAX_EXPANSION: usize = MAX_REF / 3;

/// Largest output `decompress` can produce from `compressed_len` input bytes; a declared length above this
/// can never be met, so it is rejected before anything is allocated.
pub fn max_decompressed_len(compressed_len: usize) -> usize {
    compressed_len.saturating_mul(MAX_EXPANSION)
}

#[inline(always)]
fn hash(a: u8, b: u8, c: u8) -> usize {
    // The C code keeps a rolling 32-bit value with an older byte in the top bits; only the low 24 bits
    // can reach the 16-bit result, so hashing the three current bytes is equivalent.
    let h = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
    ((h >> (3 * 8 - HLOG)).wrapping_sub(h.wrapping_mul(5)) as usize) & (HSIZE - 1)
}

/// Compresses `input` into at most `cap` bytes, or returns `None` where liblzf returns 0.
///
/// `None` also covers inputs of 4 GiB or more, which the server's 32-bit length parameter cannot describe
/// (the server never compresses such a string either: it is far over the protocol's bulk limit).
pub fn compress(input: &[u8], cap: usize) -> Option<Vec<u8>> {
    let n = input.len();
    if n == 0 || cap == 0 || u32::try_from(n).is_err() {
        return None;
    }
    // Positions are stored as u32 offsets (LZF_USE_OFFSETS); 0 doubles as "empty", which is the source of
    // the position-0 quirk. A zeroed table gives the same output as the server's uninitialised one because a
    // candidate is only used after its 3 bytes compare equal.
    let mut htab = vec![0u32; HSIZE];
    // The room checks use `cap`, but the buffer only needs to hold what the input can ever produce (literal
    // runs add one control byte per 32 bytes), plus the reserved control byte that may sit at index `cap`.
    let mut out = vec![0u8; cap.min(n + n / MAX_LIT + 4) + 1];
    let mut op = 1usize; // out[0] is reserved for the first run's control byte
    let mut lit = 0usize;
    let mut ip = 0usize;

    while ip + 2 < n {
        let slot = hash(input[ip], input[ip + 1], input[ip + 2]);
        let r = htab[slot] as usize;
        htab[slot] = ip as u32;

        if r != 0 && r < ip && ip - r <= MAX_OFF && input[r..r + 3] == input[ip..ip + 3] {
            let off = ip - r - 1;
            let maxlen = (n - ip - 2).min(MAX_REF);

            // Cheap test first, exact one second; both must fail to give up (the exact one accounts for
            // dropping the empty run's control byte).
            if op + 4 >= cap && op - usize::from(lit == 0) + 4 >= cap {
                return None;
            }

            // Close the current literal run; an empty run's reserved byte is dropped.
            out[op - lit - 1] = (lit as u8).wrapping_sub(1);
            if lit == 0 {
                op -= 1;
            }

            let mut len = 2usize;
            'measured: {
                if maxlen > 16 {
                    // Unchecked against maxlen, as in liblzf's unrolled loop: this is the overshoot. It stays
                    // in bounds because maxlen > 16 means at least 19 input bytes remain from ip.
                    for _ in 0..16 {
                        len += 1;
                        if input[r + len] != input[ip + len] {
                            break 'measured;
                        }
                    }
                }
                loop {
                    len += 1;
                    if !(len < maxlen && input[r + len] == input[ip + len]) {
                        break;
                    }
                }
            }

            let l = len - 2;
            if l < 7 {
                out[op] = ((off >> 8) + (l << 5)) as u8;
                op += 1;
            } else {
                out[op] = ((off >> 8) + (7 << 5)) as u8;
                out[op + 1] = (l - 7) as u8;
                op += 2;
            }
            out[op] = off as u8;
            op += 1;

            lit = 0;
            op += 1; // reserve the next run's control byte

            ip += len;
            if ip + 2 >= n {
                break;
            }

            // VERY_FAST: only the last two positions of the match are hashed.
            htab[hash(input[ip - 2], input[ip - 1], input[ip])] = (ip - 2) as u32;
            htab[hash(input[ip - 1], input[ip], input[ip + 1])] = (ip - 1) as u32;
        } else {
            if op >= cap {
                return None;
            }
            out[op] = input[ip];
            op += 1;
            ip += 1;
            lit += 1;
            if lit == MAX_LIT {
                out[op - lit - 1] = (lit - 1) as u8;
                lit = 0;
                op += 1;
            }
        }
    }

    // At most 2 tail bytes and one control byte remain; no further checks while writing them.
    if op + 3 > cap {
        return None;
    }
    while ip < n {
        out[op] = input[ip];
        op += 1;
        ip += 1;
        lit += 1;
        if lit == MAX_LIT {
            out[op - lit - 1] = (lit - 1) as u8;
            lit = 0;
            op += 1;
        }
    }
    out[op - lit - 1] = (lit as u8).wrapping_sub(1);
    if lit == 0 {
        op -= 1;
    }
    out.truncate(op);
    Some(out)
}

/// Why an LZF stream was rejected. `at` is the input offset of the offending token's control byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LzfError {
    /// A token would write past the expected length (liblzf's `E2BIG`).
    OutputTooLong { at: usize },
    /// A token needs more input than there is (`EINVAL`).
    Truncated { at: usize },
    /// A back-reference points before the start of the output (`EINVAL`).
    ReferenceBeforeStart { at: usize },
    /// The stream ended after producing fewer bytes than expected.
    OutputTooShort { produced: usize, expected: usize },
    /// The expected length exceeds what this much input could ever expand to.
    ImpossibleLength { expected: usize, max: usize },
}

impl LzfError {
    /// Offset in the compressed input where decoding failed.
    pub fn offset(&self) -> usize {
        match *self {
            LzfError::OutputTooLong { at }
            | LzfError::Truncated { at }
            | LzfError::ReferenceBeforeStart { at } => at,
            LzfError::OutputTooShort { .. } | LzfError::ImpossibleLength { .. } => 0,
        }
    }
}

impl fmt::Display for LzfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LzfError::OutputTooLong { at } => {
                write!(f, "LZF token at {at} exceeds the declared length")
            }
            LzfError::Truncated { at } => write!(f, "LZF token at {at} is truncated"),
            LzfError::ReferenceBeforeStart { at } => {
                write!(f, "LZF back-reference at {at} points before the start")
            }
            LzfError::OutputTooShort { produced, expected } => {
                write!(
                    f,
                    "LZF stream produced {produced} bytes, expected {expected}"
                )
            }
            LzfError::ImpossibleLength { expected, max } => {
                write!(
                    f,
                    "LZF declared length {expected} exceeds the maximum {max}"
                )
            }
        }
    }
}

impl std::error::Error for LzfError {}

/// Decompresses `input`, which must produce exactly `expected_len` bytes.
///
/// Accepts what liblzf's checked decompressor accepts (any arrangement of literal runs of 1..32 bytes and
/// back-references of 3..264 bytes). It never allocates more than `expected_len`, and rejects an
/// `expected_len` above [`max_decompressed_len`] before allocating at all, so a small hostile input cannot
/// make it reserve a large buffer.
///
/// The server's `len == 0` quirk (any input "decompresses" to the empty string) belongs to the RDB string
/// reader, not here: `decompress(b"abc", 0)` is an error.
pub fn decompress(input: &[u8], expected_len: usize) -> Result<Vec<u8>, LzfError> {
    let max = max_decompressed_len(input.len());
    if expected_len > max {
        return Err(LzfError::ImpossibleLength {
            expected: expected_len,
            max,
        });
    }
    let mut out: Vec<u8> = Vec::with_capacity(expected_len);
    let mut ip = 0usize;
    while ip < input.len() {
        let at = ip;
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < MAX_LIT {
            let run = ctrl + 1;
            if out.len() + run > expected_len {
                return Err(LzfError::OutputTooLong { at });
            }
            if ip + run > input.len() {
                return Err(LzfError::Truncated { at });
            }
            out.extend_from_slice(&input[ip..ip + run]);
            ip += run;
        } else {
            let mut len = ctrl >> 5;
            if ip >= input.len() {
                return Err(LzfError::Truncated { at });
            }
            if len == 7 {
                len += usize::from(input[ip]);
                ip += 1;
                if ip >= input.len() {
                    return Err(LzfError::Truncated { at });
                }
            }
            let dist = ((ctrl & 0x1f) << 8) + usize::from(input[ip]) + 1;
            ip += 1;
            let copy = len + 2;
            if out.len() + copy > expected_len {
                return Err(LzfError::OutputTooLong { at });
            }
            if dist > out.len() {
                return Err(LzfError::ReferenceBeforeStart { at });
            }
            let start = out.len() - dist;
            if dist >= copy {
                out.extend_from_within(start..start + copy);
            } else {
                // Overlapping copy is run-length repetition: it must see the bytes it has just written.
                for i in 0..copy {
                    let b = out[start + i];
                    out.push(b);
                }
            }
        }
    }
    if out.len() != expected_len {
        return Err(LzfError::OutputTooShort {
            produced: out.len(),
            expected: expected_len,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overshoot_b21() {
        let input = [b'b'; 21];
        assert_eq!(
            compress(&input, 17).unwrap(),
            [0x01, 0x62, 0x62, 0xe0, 0x0a, 0x00]
        );
        assert_eq!(
            decompress(&[0x01, 0x62, 0x62, 0xe0, 0x0a, 0x00], 21).unwrap(),
            input
        );
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(compress(b"", 10), None);
        assert_eq!(compress(b"a", 0), None);
        assert_eq!(compress(b"a", 3), None);
        assert_eq!(compress(b"a", 4).unwrap(), [0x00, b'a']);
        assert_eq!(compress(b"ab", 100).unwrap(), [0x01, b'a', b'b']);
        assert_eq!(decompress(b"", 0).unwrap(), b"");
    }

    #[test]
    fn max_expansion_is_reachable() {
        // literal + long back-references of 264 bytes each
        let mut stream = vec![0x00, b'x'];
        for _ in 0..3 {
            stream.extend_from_slice(&[0xe0, 0xff, 0x00]);
        }
        let out = decompress(&stream, 1 + 3 * 264).unwrap();
        assert!(out.iter().all(|&b| b == b'x'));
        assert!(out.len() <= max_decompressed_len(stream.len()));
    }
}
