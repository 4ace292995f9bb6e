//! The crafted-payload table of spec section 1.1 and the decompressor errors of section 6.

use rfunc_core::payload::{
    self, crc64, lzf, lzf::LzfError, rdb::RdbErrorKind, FooterError, Host, PayloadError,
};

const VERSION_OR_CHECKSUM: &str = "DUMP payload version or checksum are wrong";
const PRE_GA: &str = "Pre-GA function format not supported";
const NOT_A_FUNCTION: &str = "given type is not a function";
const LIBRARY_PAYLOAD: &str = "Failed loading library payload";

/// `body` followed by a correct footer.
fn with_footer(body: &[u8], version: u16) -> Vec<u8> {
    let mut p = body.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(0, &p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn err_text(payload: &[u8]) -> String {
    payload::decode(payload).unwrap_err().to_string()
}

fn libs(payload: &[u8]) -> Vec<Vec<u8>> {
    payload::decode(payload)
        .unwrap_or_else(|e| panic!("{}", e.detail()))
        .libraries
}

const MYLIB: &[u8] = b"#!lua name=mylib\nserver.register_function('f', function() return 1 end)";

#[test]
fn short_payloads() {
    for n in [0, 1, 9] {
        let p = vec![0u8; n];
        let e = payload::decode(&p).unwrap_err();
        assert_eq!(e.to_string(), VERSION_OR_CHECKSUM);
        assert_eq!(
            e,
            PayloadError::VersionOrChecksum(FooterError::TooShort { len: n })
        );
        assert_eq!(e.offset(), None);
    }
}

#[test]
fn bad_crc_and_zero_crc() {
    for version in [10u16, 11, 80] {
        for body in [&b""[..], &[0xf5, 0x00][..]] {
            let mut p = with_footer(body, version);
            let n = p.len();
            p[n - 1] ^= 1;
            assert_eq!(err_text(&p), VERSION_OR_CHECKSUM);
            p[n - 8..].fill(0);
            let e = payload::decode(&p).unwrap_err();
            assert_eq!(e.to_string(), VERSION_OR_CHECKSUM);
            assert!(matches!(
                e,
                PayloadError::VersionOrChecksum(FooterError::ChecksumMismatch { stored: 0, .. })
            ));
        }
    }
    // A flipped body byte is caught by the CRC as well.
    let mut p = with_footer(&[0xf5, 0x01, b'x'], 80);
    p[2] = b'y';
    assert_eq!(err_text(&p), VERSION_OR_CHECKSUM);
}

#[test]
fn version_too_new() {
    let p = with_footer(b"", 81);
    let e = payload::decode_with(&p, |v| Host::Valkey9.accepts(false, v)).unwrap_err();
    assert_eq!(e.to_string(), VERSION_OR_CHECKSUM);
    assert_eq!(
        e,
        PayloadError::VersionOrChecksum(FooterError::VersionRejected { version: 81 })
    );
    let p = with_footer(b"", 12);
    assert!(payload::decode_with(&p, |v| Host::Valkey81.accepts(false, v)).is_err());
    assert!(payload::decode_with(&p, |v| Host::Valkey81.rfunc_accepts(false, v)).is_ok());
    // Without a rule, any version is taken as read.
    assert_eq!(payload::decode(&p).unwrap().version, 12);
}

#[test]
fn empty_body() {
    for v in [0u16, 10, 11, 80, 65535] {
        let d = payload::decode(&with_footer(b"", v)).unwrap();
        assert_eq!(d.version, v);
        assert!(d.libraries.is_empty());
    }
}

#[test]
fn pre_ga_opcode() {
    let e = payload::decode(&with_footer(&[0xf6, 0x00, 0x01, 0x02], 80)).unwrap_err();
    assert_eq!(e.to_string(), PRE_GA);
    assert_eq!(e.offset(), Some(0));
    let mut body = vec![0xf5];
    body.extend(payload::rdb::encode_string(MYLIB, true));
    let second = body.len();
    body.push(0xf6);
    let e = payload::decode(&with_footer(&body, 80)).unwrap_err();
    assert_eq!(e, PayloadError::PreGaFormat { offset: second });
}

#[test]
fn other_opcodes() {
    for op in (0u8..=255).filter(|&b| b != 0xf5 && b != 0xf6) {
        let e = payload::decode(&with_footer(&[op, 0x00], 80)).unwrap_err();
        assert_eq!(e.to_string(), NOT_A_FUNCTION);
        assert_eq!(
            e,
            PayloadError::NotAFunction {
                offset: 0,
                opcode: op
            }
        );
    }
}

#[test]
fn valid_entry_then_trailing_byte() {
    let mut body = vec![0xf5];
    body.extend(payload::rdb::encode_string(MYLIB, true));
    let at = body.len();
    body.push(0x00);
    let e = payload::decode(&with_footer(&body, 80)).unwrap_err();
    assert_eq!(e.to_string(), NOT_A_FUNCTION);
    assert_eq!(e.offset(), Some(at));
}

#[test]
fn trailing_f5_reads_the_footer() {
    let mut body = vec![0xf5];
    body.extend(payload::rdb::encode_string(MYLIB, true));
    body.push(0xf5);
    for v in [10u16, 11, 80] {
        assert_eq!(
            err_text(&with_footer(&body, v)),
            LIBRARY_PAYLOAD,
            "version {v}"
        );
    }
}

#[test]
fn library_payload_failures() {
    let cases: &[(&str, &[u8])] = &[
        ("F5 alone", &[0xf5]),
        ("length longer than buffer", &[0xf5, 0x3f, b'a', b'b', b'c']),
        (
            "length far past the end (14-bit)",
            &[0xf5, 0x7f, 0xff, b'a'],
        ),
        (
            "64-bit all ones",
            &[0xf5, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("32-bit 4 GiB", &[0xf5, 0x80, 0xff, 0xff, 0xff, 0xff]),
        ("bad length byte", &[0xf5, 0x82]),
        ("bad length byte 0xbf", &[0xf5, 0xbf]),
        ("unknown encoding", &[0xf5, 0xc4]),
        ("unknown encoding 0xff", &[0xf5, 0xff]),
    ];
    for v in [10u16, 11, 80] {
        for (what, body) in cases {
            let e = payload::decode(&with_footer(body, v)).unwrap_err();
            assert_eq!(e.to_string(), LIBRARY_PAYLOAD, "{what} (version {v})");
            assert!(matches!(e, PayloadError::LibraryPayload(_)), "{what}");
            assert!(e.offset().unwrap() >= 1, "{what}");
        }
    }
    let e = payload::decode(&with_footer(&[0xf5, 0x82], 80)).unwrap_err();
    match e {
        PayloadError::LibraryPayload(r) => {
            assert_eq!(r.kind, RdbErrorKind::InvalidLengthByte(0x82));
            assert_eq!(r.offset, 1);
        }
        other => panic!("{other:?}"),
    }
}

fn lzf_entry(clen: usize, len: usize, data: &[u8]) -> Vec<u8> {
    let mut body = vec![0xf5, 0xc3];
    payload::rdb::write_len(&mut body, clen as u64);
    payload::rdb::write_len(&mut body, len as u64);
    body.extend_from_slice(data);
    body
}

#[test]
fn lzf_entry_failures() {
    let code: Vec<u8> = MYLIB.repeat(3);
    let c = lzf::compress(&code, code.len() - 4).unwrap();
    let good = with_footer(&lzf_entry(c.len(), code.len(), &c), 80);
    assert_eq!(libs(&good), vec![code.clone()]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("len + 1", lzf_entry(c.len(), code.len() + 1, &c)),
        ("len - 1", lzf_entry(c.len(), code.len() - 1, &c)),
        (
            "clen past the end",
            lzf_entry(c.len() + 100, code.len(), &c),
        ),
        ("corrupted back-reference", {
            // Point the first back-reference far before the start.
            let mut bad = c.clone();
            let mut ip = 0;
            loop {
                let ctrl = bad[ip];
                if ctrl < 32 {
                    ip += usize::from(ctrl) + 2;
                } else {
                    bad[ip] |= 0x1f;
                    break;
                }
            }
            lzf_entry(bad.len(), code.len(), &bad)
        }),
        ("clen 0 len 5", lzf_entry(0, 5, b"")),
    ];
    for (what, body) in cases {
        let e = payload::decode(&with_footer(&body, 80)).unwrap_err();
        assert_eq!(e.to_string(), LIBRARY_PAYLOAD, "{what}");
    }
}

#[test]
fn strings_that_decode_to_non_code() {
    // These restore into library-creation errors ("Missing library metadata"), not payload errors.
    assert_eq!(
        libs(&with_footer(&[0xf5, 0xc0, 0x05], 80)),
        vec![b"5".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(&[0xf5, 0xc0, 0xfb], 80)),
        vec![b"-5".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(&[0xf5, 0xc1, 0x00, 0x80], 80)),
        vec![b"-32768".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(&[0xf5, 0xc2, 0xff, 0xff, 0xff, 0x7f], 80)),
        vec![b"2147483647".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(
            &[0xf5, 0xc3, 0x03, 0x00, 0x61, 0x62, 0x63],
            80
        )),
        vec![Vec::<u8>::new()]
    );
    let mut body = vec![0xf5];
    body.extend(payload::rdb::encode_string(b"hello world", true));
    assert_eq!(libs(&with_footer(&body, 80)), vec![b"hello world".to_vec()]);
    // Non-minimal length forms are fine.
    assert_eq!(
        libs(&with_footer(&[0xf5, 0x40, 0x02, b'h', b'i'], 80)),
        vec![b"hi".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(&[0xf5, 0x80, 0, 0, 0, 2, b'h', b'i'], 80)),
        vec![b"hi".to_vec()]
    );
    assert_eq!(
        libs(&with_footer(
            &[0xf5, 0x81, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'],
            80
        )),
        vec![b"hi".to_vec()]
    );
}

#[test]
fn string_runs_into_the_footer() {
    // A length 10 larger than the code absorbs the footer; then <= 10 bytes remain and the loop ends.
    let mut body = vec![0xf5];
    payload::rdb::write_len(&mut body, MYLIB.len() as u64 + 10);
    body.extend_from_slice(MYLIB);
    let p = with_footer(&body, 80);
    let got = libs(&p);
    let mut expected = MYLIB.to_vec();
    expected.extend_from_slice(&p[p.len() - 10..]);
    assert_eq!(got, vec![expected]);

    // Absorbing only part of the footer leaves the loop too (<= 10 bytes left).
    let mut body = vec![0xf5];
    payload::rdb::write_len(&mut body, MYLIB.len() as u64 + 3);
    body.extend_from_slice(MYLIB);
    let p = with_footer(&body, 80);
    assert_eq!(libs(&p)[0].len(), MYLIB.len() + 3);

    // One byte more than the whole buffer: past the end.
    let mut body = vec![0xf5];
    payload::rdb::write_len(&mut body, MYLIB.len() as u64 + 11);
    body.extend_from_slice(MYLIB);
    assert_eq!(err_text(&with_footer(&body, 80)), LIBRARY_PAYLOAD);
}

#[test]
fn entries_are_yielded_before_a_later_error() {
    let mut body = vec![0xf5];
    body.extend(payload::rdb::encode_string(MYLIB, true));
    body.push(0x00);
    let p = with_footer(&body, 80);
    let (_, mut it) = payload::entries_with(&p, |_| true).unwrap();
    assert_eq!(&*it.next().unwrap().unwrap(), MYLIB);
    assert!(matches!(
        it.next(),
        Some(Err(PayloadError::NotAFunction { .. }))
    ));
    assert!(it.next().is_none());
}

#[test]
fn version_rules_table() {
    let strict9 = |v: u16| (1..=11).contains(&v) || v == 80;
    for v in 0..=u16::MAX {
        assert_eq!(Host::Valkey9.accepts(false, v), strict9(v), "{v}");
        assert_eq!(Host::Valkey9.accepts(true, v), v >= 1, "{v}");
        assert_eq!(Host::Valkey81.accepts(false, v), v <= 11, "{v}");
        assert_eq!(Host::Valkey81.accepts(true, v), v <= 11 || v >= 80, "{v}");
        assert_eq!(Host::Valkey80.accepts(false, v), v <= 11, "{v}");
        assert_eq!(Host::Valkey80.accepts(true, v), v <= 11, "{v}");
        assert_eq!(Host::Redis70.accepts(false, v), v <= 10, "{v}");
        for h in [Host::Valkey9, Host::Valkey81, Host::Valkey80, Host::Redis70] {
            for relaxed in [false, true] {
                let extra = [10, 11, 12, 80].contains(&v);
                assert_eq!(
                    h.rfunc_accepts(relaxed, v),
                    h.accepts(relaxed, v) || extra,
                    "{h:?} {relaxed} {v}"
                );
            }
        }
    }
    assert!(!Host::Valkey9.rfunc_accepts(false, 0));
    assert!(Host::Redis70.rfunc_accepts(false, 80));
    assert_eq!(Host::Valkey9.rdb_version(), 80);
    assert_eq!(Host::Valkey81.rdb_version(), 11);
    assert_eq!(Host::Redis70.rdb_version(), 10);
    assert!(Host::Other { own_version: 12 }.accepts(false, 12));
    assert!(!Host::Other { own_version: 12 }.accepts(false, 13));
}

// Section 6: decompressor errors.

#[test]
fn decompressor_errors() {
    let ok = [0x02, b'a', b'b', b'c', 0x20, 0x02]; // "abc" + copy 3 from distance 3
    assert_eq!(lzf::decompress(&ok, 6).unwrap(), b"abcabc");

    let mut extra = ok.to_vec();
    extra.extend_from_slice(&[0x00, b'x']);
    assert_eq!(
        lzf::decompress(&extra, 6),
        Err(LzfError::OutputTooLong { at: 6 })
    );
    assert_eq!(
        lzf::decompress(&[0x02, b'a', b'b'], 3),
        Err(LzfError::Truncated { at: 0 })
    );
    assert_eq!(
        lzf::decompress(&[0x20, 0x00, 0x00, b'a'], 3),
        Err(LzfError::ReferenceBeforeStart { at: 0 })
    );
    assert_eq!(
        lzf::decompress(&[0x00, b'a', 0x20], 4),
        Err(LzfError::Truncated { at: 2 })
    );
    // Long back-reference with its length byte but no offset byte.
    assert_eq!(
        lzf::decompress(&[0x00, b'a', 0xe0, 0x05], 20),
        Err(LzfError::Truncated { at: 2 })
    );
    assert_eq!(
        lzf::decompress(&[], 5),
        Err(LzfError::ImpossibleLength {
            expected: 5,
            max: 0
        })
    );
    assert!(matches!(
        lzf::decompress(&ok, 7),
        Err(LzfError::OutputTooShort {
            produced: 6,
            expected: 7
        })
    ));
    assert!(matches!(
        lzf::decompress(&ok, 5),
        Err(LzfError::OutputTooLong { at: 4 })
    ));
    // Literal run longer than the expected output.
    assert_eq!(
        lzf::decompress(&[0x02, b'a', b'b', b'c'], 2),
        Err(LzfError::OutputTooLong { at: 0 })
    );
    // Arrangements the compressor never emits are still accepted: overlapping copy, distance 1.
    assert_eq!(
        lzf::decompress(&[0x00, b'z', 0xe0, 0x00, 0x00], 10).unwrap(),
        [b'z'; 10]
    );
    assert_eq!(
        lzf::decompress(&[0x00, b'a', 0x00, b'b'], 2).unwrap(),
        b"ab"
    );
}
