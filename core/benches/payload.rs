use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rfunc_core::payload::{self, crc64, lzf};

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bench_payload(c: &mut Criterion) {
    let dump = vector("valkey-9.1.2--big-2000-functions.bin");
    let code = vector("code--big-2000-functions.lua");
    assert_eq!(payload::encode(&[&code[..]], 80, true), dump);

    let mut g = c.benchmark_group("big-2000-functions");
    g.throughput(Throughput::Bytes(code.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| payload::encode(&[black_box(&code[..])], 80, true))
    });
    g.bench_function("decode", |b| {
        b.iter(|| payload::decode(black_box(&dump)).unwrap())
    });
    g.bench_function("lzf_compress", |b| {
        b.iter(|| lzf::compress(black_box(&code), code.len() - 4).unwrap())
    });
    g.finish();
}

fn bench_crc(c: &mut Criterion) {
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut g = c.benchmark_group("crc64-16MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("crc-fast", |b| b.iter(|| crc64(0, black_box(&data))));
    g.bench_function("table-reference", |b| {
        b.iter(|| payload::crc64::crc64_reference(0, black_box(&data)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench_payload, bench_crc
}
criterion_main!(benches);
