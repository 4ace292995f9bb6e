//! FNV-1a for the maps looked up on every call (function names, command names): the keys are short and the
//! users' own, not an attack surface worth SipHash's keyed defence, and SipHash costs more than the rest of the
//! lookup.

use std::hash::{BuildHasherDefault, Hasher};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `h` (start with `None`).
pub fn fnv1a(h: Option<u64>, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(h.unwrap_or(OFFSET), |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a((self.0 != 0).then_some(self.0), bytes.iter().copied());
    }
}

pub type FnvBuild = BuildHasherDefault<Fnv>;
