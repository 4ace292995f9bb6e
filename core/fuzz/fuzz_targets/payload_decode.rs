#![no_main]

use libfuzzer_sys::fuzz_target;
use rfunc_core::payload::{self, crc64};

fuzz_target!(|data: &[u8]| {
    let _ = payload::decode(data);

    // Almost every input fails the CRC; fix it so the body parser sees the fuzzer's bytes.
    if data.len() >= 10 {
        let mut p = data.to_vec();
        let n = p.len();
        let crc = crc64(0, &p[..n - 8]);
        p[n - 8..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(d) = payload::decode(&p) {
            // Whatever decodes must re-encode to something that decodes to the same libraries.
            let again = payload::encode(&d.libraries, d.version, true);
            assert_eq!(payload::decode(&again).unwrap(), d);
        }
    }
});
