//! Server-captured vectors: whole DUMP payloads and LZF streams (see tests/vectors/README.md).

use std::fs;
use std::path::{Path, PathBuf};

use rfunc_core::payload::{self, lzf, Host};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn code(case: &str) -> Vec<u8> {
    read(&vectors_dir().join(format!("code--{case}.lua")))
}

const SERVERS: [(&str, u16); 4] = [
    ("redis-7.0.15", 10),
    ("valkey-8.0.1-debian", 11),
    ("valkey-8.1.8", 11),
    ("valkey-9.1.2", 80),
];

#[test]
fn payload_vectors_decode_and_reencode() {
    let mut checked = 0;
    for entry in fs::read_dir(vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let (server, case) = name.split_once("--").unwrap();
        let (_, version) = SERVERS
            .iter()
            .find(|(s, _)| *s == server)
            .unwrap_or_else(|| panic!("unknown server in {name}"));
        let bytes = read(&path);
        let decoded = payload::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {}", e.detail()));
        assert_eq!(decoded.version, *version, "{name}");

        if case == "three-libs" {
            let mut expected = vec![code("tiny"), code("mylib"), code("utf8")];
            let mut got = decoded.libraries.clone();
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "{name}");
        } else {
            assert_eq!(decoded.libraries, vec![code(case)], "{name}");
        }

        let reencoded = payload::encode(&decoded.libraries, *version, true);
        assert_eq!(reencoded, bytes, "{name}: re-encode differs");
        checked += 1;
    }
    assert_eq!(checked, 24);
}

#[test]
fn three_libs_order_is_payload_order() {
    // Servers iterate their hash tables differently; the decoder must report payload order, which is what
    // makes each server's bytes re-encode identically (checked above). Spec: orders differ between servers.
    let orders: Vec<Vec<Vec<u8>>> = SERVERS
        .iter()
        .map(|(s, _)| {
            let bytes = read(&vectors_dir().join(format!("{s}--three-libs.bin")));
            payload::decode(&bytes).unwrap().libraries
        })
        .collect();
    for o in &orders {
        assert_eq!(o.len(), 3);
    }
    assert!(orders.iter().any(|o| *o != orders[0]));
}

#[test]
fn empty_registry_footers() {
    for (version, footer) in [
        (
            80u16,
            [0x50, 0x00, 0x92, 0xb1, 0x95, 0xd1, 0x91, 0x2d, 0xc5, 0x2e],
        ),
        (
            11,
            [0x0b, 0x00, 0x34, 0x44, 0xe1, 0x33, 0xf2, 0xe0, 0x4b, 0x53],
        ),
        (
            10,
            [0x0a, 0x00, 0x5d, 0x9b, 0x5c, 0x40, 0x0f, 0x7f, 0xa2, 0xda],
        ),
    ] {
        let empty: [&[u8]; 0] = [];
        assert_eq!(payload::encode(&empty, version, true), footer);
        let d = payload::decode(&footer).unwrap();
        assert_eq!(d.version, version);
        assert!(d.libraries.is_empty());
    }
}

#[test]
fn uncompressed_dump_is_raw() {
    // `CONFIG SET rdbcompression no`: mylib 104 -> 106 bytes.
    let mylib = code("mylib");
    let on = payload::encode(&[&mylib[..]], 80, true);
    let off = payload::encode(&[&mylib[..]], 80, false);
    assert_eq!(on.len(), 104);
    assert_eq!(off.len(), 106);
    assert_eq!(payload::decode(&off).unwrap().libraries, vec![mylib]);
}

#[test]
fn cross_restore_matrix() {
    // Row host restores column's payload (vectors/README.md), with the hosts' strict rules.
    let hosts = [Host::Redis70, Host::Valkey80, Host::Valkey81, Host::Valkey9];
    let expected = [
        [true, false, false, false],
        [true, true, true, false],
        [true, true, true, false],
        [true, true, true, true],
    ];
    for (h, row) in hosts.iter().zip(expected) {
        for ((server, _), ok) in SERVERS.iter().zip(row) {
            let bytes = read(&vectors_dir().join(format!("{server}--mylib.bin")));
            let r = payload::decode_with(&bytes, |v| h.accepts(false, v));
            assert_eq!(r.is_ok(), ok, "{h:?} restoring {server}");
            if let Err(e) = r {
                assert_eq!(e.to_string(), "DUMP payload version or checksum are wrong");
            }
            // rfunc accepts every real server's payload on every host.
            assert!(payload::decode_with(&bytes, |v| h.rfunc_accepts(false, v)).is_ok());
        }
    }
}

struct LzfCase {
    name: String,
    input_len: usize,
    lzf: bool,
    /// What the compressor produces with unlimited room (index.tsv column 6).
    unbounded_len: usize,
}

fn lzf_cases() -> Vec<LzfCase> {
    let index = fs::read_to_string(vectors_dir().join("lzf/index.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<_> = l.split('\t').collect();
            LzfCase {
                name: cols[0].to_owned(),
                input_len: cols[1].parse().unwrap(),
                lzf: match cols[2] {
                    "lzf" => true,
                    "raw" => false,
                    other => panic!("bad kind {other}"),
                },
                unbounded_len: cols[5].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn lzf_vectors() {
    let dir = vectors_dir().join("lzf");
    let cases = lzf_cases();
    assert_eq!(cases.len(), 54);
    let (mut lzf_n, mut raw_n) = (0, 0);
    for c in &cases {
        let input = read(&dir.join(format!("{}.in", c.name)));
        assert_eq!(input.len(), c.input_len, "{}", c.name);
        let lzf_path = dir.join(format!("{}.lzf", c.name));
        let cap = input.len().saturating_sub(4);
        let unbounded = lzf::compress(&input, usize::MAX).unwrap();
        assert_eq!(
            unbounded.len(),
            c.unbounded_len,
            "{}: unbounded length",
            c.name
        );
        assert_eq!(lzf::decompress(&unbounded, input.len()).unwrap(), input);
        if c.lzf {
            let expected = read(&lzf_path);
            let got = lzf::compress(&input, cap).unwrap_or_else(|| panic!("{}: gave up", c.name));
            assert!(got == expected, "{}: compressed bytes differ", c.name);
            let back = lzf::decompress(&expected, input.len()).unwrap();
            assert!(back == input, "{}: decompress differs", c.name);
            // The RDB string writer picks the same encoding.
            let s = payload::rdb::encode_string(&input, true);
            assert_eq!(s[0], 0xc3, "{}", c.name);
            lzf_n += 1;
        } else {
            assert!(!lzf_path.exists(), "{}", c.name);
            if input.len() > 20 {
                assert_eq!(lzf::compress(&input, cap), None, "{}", c.name);
            }
            let s = payload::rdb::encode_string(&input, true);
            assert_ne!(s[0], 0xc3, "{}", c.name);
            raw_n += 1;
        }
    }
    assert_eq!((lzf_n, raw_n), (44, 10));
}

#[test]
fn lzf_b21() {
    let input = [b'b'; 21];
    assert_eq!(
        lzf::compress(&input, 17).unwrap(),
        [0x01, 0x62, 0x62, 0xe0, 0x0a, 0x00]
    );
}
