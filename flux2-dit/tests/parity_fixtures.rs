//! Every committed DiT fixture (tests/fixtures/dit/*) must match diffusers within 1e-4.

#[path = "../examples/parity.rs"]
mod parity;

use std::path::PathBuf;

use burn::backend::Flex;

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dit")
}

#[test]
fn all_committed_fixtures_match_diffusers() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixture_root())
        .expect("tests/fixtures/dit exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("expected.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "expected at least 8 DiT fixtures, found {}", dirs.len());
    for dir in dirs {
        let err = parity::run_fixture::<Flex>(&dir, &Default::default()).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(err < parity::TOLERANCE, "{}: rel_err {err:e}", dir.display());
        eprintln!("{}: rel_err={err:.3e}", dir.display());
    }
}
