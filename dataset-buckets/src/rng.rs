//! Randomness of the data pipeline: shuffles, random crops and caption randomness must be reproducible
//! from the job seed across machines and versions of third-party crates, so they draw from the
//! workspace's one generator, [`flux2_ops::Rng`] (SplitMix64, whose algorithm lives in this workspace).
//! Streams are derived from (seed, purpose, indices) with [`Rng::derive`], so that, e.g., epoch 7's
//! shuffle does not depend on how many numbers epochs 0..6 consumed.

pub use flux2_ops::Rng;

/// A stable 64-bit digest of a string, for deriving per-file streams from paths.
pub(crate) fn str_digest(s: &str) -> u64 {
    let hash = blake3::hash(s.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}
