//! What the examples share: the CI-sized `--small` FLUX.2 config (`bench_train_step --small`, and
//! `sparse_checkpoint --small` writes the checkpoint `bench_train_step --small --load` reads).

pub use flux2_test_support::tiny_dit::small_config;
