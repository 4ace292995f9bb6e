//! Property tests: round-trips, and that no input makes the decoder panic.

use proptest::collection::vec;
use proptest::prelude::*;
use rfunc_core::payload::{self, crc64, lzf};

/// Bytes that LZF can and cannot compress: uniform random, small alphabets, and repeated chunks.
fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..max),
        vec(0u8..4, 0..max),
        (vec(any::<u8>(), 1..64), 0..max)
            .prop_map(|(chunk, n)| { chunk.iter().cycle().take(n).copied().collect() }),
        vec(
            prop::sample::select(&b"local function return end 0123456789\n"[..]),
            0..max
        ),
    ]
}

/// Replaces the last 8 bytes with the correct CRC so that mutated bodies reach the body parser.
fn refix_crc(p: &mut [u8]) {
    if p.len() >= 10 {
        let n = p.len();
        let crc = crc64(0, &p[..n - 8]);
        p[n - 8..].copy_from_slice(&crc.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn payload_round_trip(
        libs in vec(data(64 * 1024), 0..8),
        version in any::<u16>(),
        compress in any::<bool>(),
    ) {
        let p = payload::encode(&libs, version, compress);
        let d = payload::decode(&p).unwrap();
        prop_assert_eq!(d.version, version);
        prop_assert!(d.libraries == libs);
        prop_assert!(payload::verify_footer(&p).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn payload_round_trip_large(libs in vec(data(1024 * 1024), 1..3), compress in any::<bool>()) {
        let p = payload::encode(&libs, 80, compress);
        prop_assert!(payload::decode(&p).unwrap().libraries == libs);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lzf_round_trip(input in data(4096), slack in 0usize..64, shrink in any::<bool>()) {
        let n = input.len();
        let cap = if shrink { n.saturating_sub(slack) } else { n + slack };
        if let Some(c) = lzf::compress(&input, cap) {
            prop_assert!(c.len() <= cap);
            prop_assert!(lzf::decompress(&c, n).unwrap() == input);
            // Room only decides whether to give up, never what is emitted.
            prop_assert!(lzf::compress(&input, usize::MAX).unwrap() == c);
        }
        if n > 0 {
            let c = lzf::compress(&input, usize::MAX).unwrap();
            prop_assert!(lzf::decompress(&c, n).unwrap() == input);
        }
    }

    #[test]
    fn lzf_decompress_arbitrary(input in vec(any::<u8>(), 0..512), expected in 0usize..100_000) {
        if let Ok(out) = lzf::decompress(&input, expected) {
            prop_assert_eq!(out.len(), expected);
        }
    }

    #[test]
    fn crc_matches_reference(data in vec(any::<u8>(), 0..4096), init in any::<u64>(), split in any::<prop::sample::Index>()) {
        prop_assert_eq!(crc64(init, &data), payload::crc64::crc64_reference(init, &data));
        let at = split.index(data.len() + 1);
        prop_assert_eq!(crc64(crc64(0, &data[..at]), &data[at..]), crc64(0, &data));
    }

    #[test]
    fn decode_arbitrary_bytes(mut bytes in vec(any::<u8>(), 0..256), fix in any::<bool>()) {
        let _ = payload::decode(&bytes);
        if fix {
            refix_crc(&mut bytes);
            let _ = payload::decode(&bytes);
        }
    }

    #[test]
    fn decode_mutated_payloads(
        libs in vec(data(2048), 0..4),
        compress in any::<bool>(),
        flips in vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        insert in vec(any::<u8>(), 0..4),
        insert_at in any::<prop::sample::Index>(),
    ) {
        let mut p = payload::encode(&libs, 80, compress);
        for (i, bit) in &flips {
            let i = i.index(p.len());
            p[i] ^= 1 << bit;
        }
        if !insert.is_empty() {
            let at = insert_at.index(p.len() + 1);
            p.splice(at..at, insert.iter().copied());
        }
        if truncate {
            p.truncate(cut.index(p.len() + 1));
        }
        // Unfixed: almost always a checksum error, never a panic.
        let _ = payload::decode(&p);
        refix_crc(&mut p);
        match payload::decode(&p) {
            Ok(d) => prop_assert!(d.libraries.len() <= libs.len() + 4),
            Err(e) => {
                let _ = (e.to_string(), e.detail(), e.offset());
            }
        }
    }
}
