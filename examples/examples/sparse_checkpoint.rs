//! Writes a FLUX.2 [dev] transformer checkpoint with the real header and no data, for measuring the
//! loaders' peak host memory at the real size (issue 17: peak RSS while loading stays under the
//! memory-mapped file + 8 GiB; `tools/bench/host_rss.sh`). The benchmark machine's disk (64 GiB) cannot
//! hold the 64.4 GB bf16 file, so the file is the real safetensors header (every key, dtype and shape of
//! BFL's `flux2-dev.safetensors`, 8 double + 48 single blocks, named by the model's own builder) followed
//! by a hole: extended to its length, nothing written, so it takes no disk and reads back as zeros.
//! Loading costs the same memory whatever the values (`flux2_dit::sparse_file`).
//!
//! ```sh
//! cargo run --release -p examples --example sparse_checkpoint -- --out /tmp/flux2-dev-sparse.safetensors
//! ```
//! Options: `--out FILE` (required), `--float8` (the layout of the float8 file `flux2-train quantize`
//! writes: block Linears as F8_E4M3 codes + F32 `weight_scale`, the rest bf16), `--small` (the config of
//! `bench_train_step --small`, for CPU checks).

use burn::backend::Flex;
use flux2_dit::Flux2Config;

fn main() {
    let (mut out, mut float8, mut small) = (None, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next(),
            "--float8" => float8 = true,
            "--small" => small = true,
            other => {
                eprintln!("sparse_checkpoint: unknown argument {other} (--out FILE [--float8] [--small])");
                std::process::exit(2);
            }
        }
    }
    let Some(out) = out else {
        eprintln!("sparse_checkpoint: --out FILE is required");
        std::process::exit(2);
    };
    let config = if small { examples::small_config() } else { Flux2Config::dev() };
    match flux2_dit::write_sparse_file::<Flex>(&config, float8, out.as_ref(), &Default::default()) {
        Ok(len) => println!(
            "wrote {out}: {len} bytes ({:.2} GB, {} layout, {} double + {} single blocks), data a hole",
            len as f64 / 1e9,
            if float8 { "float8" } else { "bf16" },
            config.num_layers,
            config.num_single_layers
        ),
        Err(e) => {
            eprintln!("sparse_checkpoint: {e}");
            std::process::exit(1);
        }
    }
}
