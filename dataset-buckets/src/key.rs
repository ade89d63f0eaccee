//! Cache keys: BLAKE3 over named fields.
//!
//! Each field is written as length-prefixed name and value, so no two different field lists hash
//! the same bytes (`("ab", "c")` vs `("a", "bc")`).

use std::fmt::Display;

pub(crate) struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    pub fn new(purpose: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"dataset-buckets key v1\0");
        let mut k = KeyBuilder(h);
        k.write(purpose.as_bytes());
        k
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn field(mut self, name: &str, value: impl Display) -> Self {
        self.write(name.as_bytes());
        self.write(value.to_string().as_bytes());
        self
    }

    /// Full key: 32 hex digits (128 bits).
    pub fn finish(self) -> String {
        self.0.finalize().to_hex()[..32].to_string()
    }

    /// Short form for file names: 16 hex digits.
    pub fn finish_short(self) -> String {
        self.0.finalize().to_hex()[..16].to_string()
    }
}
