#![no_main]

use libfuzzer_sys::fuzz_target;
use rfunc_core::payload::lzf;

fuzz_target!(|data: &[u8]| {
    // First two bytes choose the expected length; the rest is the stream.
    if data.len() < 2 {
        return;
    }
    let expected = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let input = &data[2..];
    if let Ok(out) = lzf::decompress(input, expected) {
        assert_eq!(out.len(), expected);
    }
    // Compressor round-trip on the same bytes, with the server's capacity rule.
    if input.len() > 4 {
        if let Some(c) = lzf::compress(input, input.len() - 4) {
            assert!(c.len() <= input.len() - 4);
            assert_eq!(lzf::decompress(&c, input.len()).unwrap(), input);
        }
    }
});
