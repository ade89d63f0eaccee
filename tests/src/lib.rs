//! Helpers shared by the tests and parity examples of several crates, so no crate includes another's
//! files with `#[path]` (each crate builds and tests alone). The committed reference fixtures live
//! under `tests/fixtures/<component>/` (generators in `tools/fixtures/`).

pub mod dit_fixture;
pub mod fused_op_cases;
pub mod tiny_dit;
