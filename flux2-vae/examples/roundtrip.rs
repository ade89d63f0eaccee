//! Encode a photo to FLUX.2 latents and decode it back, writing PNGs:
//!
//!     cargo run --release -p flux2-vae --example roundtrip -- <photo> [--vae <folder|file>] [--out <dir>]
//!         [--max-side 512] [--bf16] [--tile 512]
//!
//! Without `--vae` a seeded random VAE of the FLUX.2 architecture is used (the reconstruction is then
//! meaningless, but every step runs). With FLUX.2-dev weights pass the repository folder, its `vae/`
//! folder or `ae.safetensors`. The photo is downscaled (Lanczos3) so its longer side is at most
//! `--max-side`, then center-cropped to multiples of 16. Writes `input.png`, `reconstruction.png` and
//! `latents.safetensors` (normalized patchified latents, f32) into `--out` (default `output/roundtrip`).

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::DType;
use flux2_vae::image_io::{dynamic_to_f32, open_image};
use flux2_vae::{ImageLoadOptions, LoadOptions, Parts, TileOptions, Vae, VaeConfig, save_png};
use image::imageops::FilterType;

type B = Flex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let valued = ["--vae", "--out", "--max-side", "--tile"];
    let photo = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || !valued.contains(&args[i - 1].as_str())))
        .map(|(_, a)| PathBuf::from(a))
        .ok_or("usage: roundtrip <photo> [--vae <path>] [--out <dir>] [--max-side N] [--bf16] [--tile N]")?;
    let out_dir = PathBuf::from(get("--out").unwrap_or_else(|| "output/roundtrip".into()));
    let max_side: u32 = get("--max-side").map(|s| s.parse()).transpose()?.unwrap_or(512);
    let dtype = if args.iter().any(|a| a == "--bf16") { DType::BF16 } else { DType::F32 };
    let tiles =
        get("--tile").map(|t| t.parse()).transpose()?.map(|tile_size| TileOptions { tile_size, ..Default::default() });
    std::fs::create_dir_all(&out_dir)?;
    let device = Default::default();

    let t = Instant::now();
    let vae = match get("--vae") {
        Some(path) => Vae::<B>::load(&path, &device, &LoadOptions::default().with_dtype(dtype))?,
        None => {
            eprintln!("no --vae given: using a random FLUX.2-shaped VAE (reconstruction will not resemble the photo)");
            Vae::<B>::random(VaeConfig::flux2(), &device, dtype, Parts::Both, 0)?
        }
    };
    println!("VAE ready in {:.1}s ({:?})", t.elapsed().as_secs_f64(), vae.dtype());

    // Photo -> downscale -> center crop to multiples of 16 -> [-1, 1].
    let options = ImageLoadOptions::default();
    let mut img = open_image(&photo, &options)?;
    let f = vae.config().latent_scale_factor() as u32;
    if img.width().max(img.height()) > max_side {
        img = img.resize(max_side, max_side, FilterType::Lanczos3);
    }
    let (w, h) = ((img.width() / f) * f, (img.height() / f) * f);
    if w == 0 || h == 0 {
        return Err(format!("image {}x{} is smaller than {f} px", img.width(), img.height()).into());
    }
    let img = img.crop_imm((img.width() - w) / 2, (img.height() - h) / 2, w, h);
    let image = dynamic_to_f32(&img, &options).to_tensor::<B>(&device);
    save_png(image.clone(), out_dir.join("input.png"))?;

    let t = Instant::now();
    let latents = match &tiles {
        Some(t) => vae.encode_image_tiled(image.clone(), t)?,
        None => vae.encode_image(image.clone())?,
    };
    let values = latents.clone().into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    println!(
        "encode {w}x{h} -> latents {:?} in {:.1}s (mean {mean:.3}, std {std:.3})",
        latents.dims(),
        t.elapsed().as_secs_f64()
    );
    let shape = latents.dims().to_vec();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)?;
    safetensors::serialize_to_file([("latents", view)], None, &out_dir.join("latents.safetensors"))?;

    let t = Instant::now();
    let decoded = match &tiles {
        Some(t) => vae.decode_latents_tiled(latents, t)?,
        None => vae.decode_latents(latents)?,
    };
    println!("decode -> {:?} in {:.1}s", decoded.dims(), t.elapsed().as_secs_f64());
    let a = image.into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let b = decoded.clone().clamp(-1.0, 1.0).into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let mse = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64 / 2.0).powi(2)).sum::<f64>() / a.len() as f64;
    println!("PSNR input vs reconstruction: {:.2} dB", 10.0 * (1.0 / mse.max(1e-12)).log10());
    save_png(decoded, out_dir.join("reconstruction.png"))?;
    println!("wrote {}/{{input,reconstruction}}.png and latents.safetensors", out_dir.display());
    Ok(())
}
