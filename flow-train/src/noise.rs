//! Rectified-flow noising: `x_sigma = (1 - sigma) x0 + sigma eps`, velocity target `eps - x0`.
//!
//! FLUX.2 is trained as a rectified flow: the straight path from data `x0` (sigma 0) to Gaussian noise
//! `eps` (sigma 1). Its velocity `d x_sigma / d sigma = eps - x0` is constant along the path, so the
//! transformer is trained to predict it at every sigma, and sampling integrates it backwards
//! (`x += (sigma_next - sigma) v`).
//!
//! Everything is generic over the tensor rank `D` with the batch on dim 0: FLUX.2 token layout
//! `[B, N, 128]` and the latent-image layout `[B, 128, H/16, W/16]` both work. Noise is drawn from a
//! [`Rng`] on the host, so it is reproducible and resumable like the timesteps (a backend's
//! global generator is neither).

use burn::tensor::{Tensor, TensorCreationOptions, TensorData, backend::Backend};

use crate::error::{Error, Result};
use flux2_ops::Rng;

/// Noise offsets with a magnitude below this are treated as 0 (ai-toolkit's threshold), and then draw
/// no random numbers.
pub const NOISE_OFFSET_EPSILON: f32 = 1e-6;

/// Standard normal noise of `shape` from `rng`: f32 draws in row-major order, converted to the
/// float type of `options` (`&device` for the device default, or `(&device, dtype)`).
pub fn gaussian_noise<B: Backend, const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    options: impl Into<TensorCreationOptions<B>>,
) -> Tensor<B, D> {
    let mut values = vec![0f32; shape.iter().product()];
    rng.fill_normal(&mut values);
    Tensor::from_data(TensorData::new(values, shape), options)
}

/// Adds a noise offset: `noise + strength * z`, `z ~ N(0, 1)` drawn once per (batch item, channel)
/// and shared by all positions, i.e. a random per-channel shift of the noise mean.
///
/// Why: with zero-mean noise the model never sees inputs whose per-channel mean differs from the
/// data's at high sigma, so it cannot learn to change overall brightness/colour; the offset (ai-toolkit
/// `noise_offset`) exposes it to such shifts. `channel_dim` names the channel axis: 2 for tokens
/// `[B, N, C]`, 1 for `[B, C, H, W]`. `|strength| < 1e-6` returns `noise` unchanged.
pub fn apply_noise_offset<B: Backend, const D: usize>(
    noise: Tensor<B, D>,
    strength: f32,
    channel_dim: usize,
    rng: &mut Rng,
) -> Result<Tensor<B, D>> {
    if !strength.is_finite() {
        return Err(Error::InvalidValue {
            what: "noise offset strength",
            reason: format!("must be finite, got {strength}"),
        });
    }
    if channel_dim == 0 || channel_dim >= D {
        return Err(Error::InvalidValue {
            what: "noise offset channel_dim",
            reason: format!("must be in 1..{D} for a rank-{D} tensor (dim 0 is the batch), got {channel_dim}"),
        });
    }
    if strength.abs() < NOISE_OFFSET_EPSILON {
        return Ok(noise);
    }
    let dims = noise.dims();
    let mut offset_shape = [1usize; D];
    offset_shape[0] = dims[0];
    offset_shape[channel_dim] = dims[channel_dim];
    let offset = gaussian_noise::<B, D>(rng, offset_shape, (&noise.device(), noise.dtype())) * strength;
    Ok(noise + offset.expand(dims))
}

/// Per-batch-item scalars as a rank-`D` tensor `[B, 1, ..., 1]` in `like`'s device and float type,
/// broadcast to `like`'s shape.
fn per_item<B: Backend, const D: usize>(values: &[f32], like: &Tensor<B, D>) -> Tensor<B, D> {
    let mut shape = [1usize; D];
    shape[0] = values.len();
    Tensor::<B, D>::from_data(TensorData::new(values.to_vec(), shape), (&like.device(), like.dtype()))
        .expand(like.dims())
}

fn check_pair<B: Backend, const D: usize>(what: &'static str, x0: &Tensor<B, D>, noise: &Tensor<B, D>) -> Result<()> {
    if x0.dims() != noise.dims() {
        return Err(Error::ShapeMismatch { what, left: x0.dims().to_vec(), right: noise.dims().to_vec() });
    }
    Ok(())
}

/// Noisy latents `(1 - sigma_b) x0 + sigma_b eps` with one `sigma` per batch item
/// ([`crate::TimestepBatch::sigmas`]). `1 - sigma` is formed in f32 on the host, as ai-toolkit does.
pub fn noisy_latents<B: Backend, const D: usize>(
    x0: Tensor<B, D>,
    noise: Tensor<B, D>,
    sigmas: &[f32],
) -> Result<Tensor<B, D>> {
    check_pair("noisy_latents: x0 vs noise", &x0, &noise)?;
    let dims = x0.dims();
    if sigmas.len() != dims[0] {
        return Err(Error::BatchLengthMismatch { what: "noisy_latents: sigmas", expected: dims[0], got: sigmas.len() });
    }
    if let Some(bad) = sigmas.iter().find(|s| !s.is_finite()) {
        return Err(Error::InvalidValue {
            what: "noisy_latents: sigmas",
            reason: format!("must be finite, got {bad}"),
        });
    }
    let keep: Vec<f32> = sigmas.iter().map(|s| 1.0 - s).collect();
    let keep = per_item(&keep, &x0);
    let scale = per_item(sigmas, &x0);
    Ok(x0 * keep + noise * scale)
}

/// Training target of the velocity prediction: `eps - x0` (no gradient flows into it).
pub fn flow_target<B: Backend, const D: usize>(x0: Tensor<B, D>, noise: Tensor<B, D>) -> Result<Tensor<B, D>> {
    check_pair("flow_target: x0 vs noise", &x0, &noise)?;
    Ok((noise - x0).detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn t3(v: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn noisy_latents_interpolates_per_item() {
        let x0 = t3(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [2, 2, 2]);
        let eps = t3(vec![-1.0, 0.5, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0], [2, 2, 2]);
        let out = values(noisy_latents(x0.clone(), eps.clone(), &[0.25, 1.0]).unwrap());
        let expect = [
            0.75 * 1.0 + 0.25 * -1.0,
            0.75 * 2.0 + 0.25 * 0.5,
            0.75 * 3.0,
            0.75 * 4.0 + 0.25 * 2.0,
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        for (a, b) in out.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        // sigma 0 gives x0 exactly
        assert_eq!(values(noisy_latents(x0.clone(), eps.clone(), &[0.0, 0.0]).unwrap()), values(x0.clone()));
        let target = values(flow_target(x0, eps).unwrap());
        assert_eq!(target[0], -2.0);
        assert_eq!(target[7], -7.0);
    }

    #[test]
    fn noising_and_target_match_ai_toolkit() {
        use crate::reference::{f32s, formula_tensor, max_abs_err, reference};
        let f = &reference()["formulas"];
        let x0 = formula_tensor::<B>("x0");
        let eps = formula_tensor::<B>("noise");
        // ai-toolkit's `timesteps / 1000` in f32, i.e. `TrainTimestep::sigma`.
        let sigmas: Vec<f32> = f32s(&f["noise_timesteps"]).iter().map(|t| t / 1000.0).collect();
        let noisy = values(noisy_latents(x0.clone(), eps.clone(), &sigmas).unwrap());
        let err = max_abs_err(&noisy, &f32s(&f["noisy"]));
        assert!(err <= 1e-6, "noisy latents differ from ai-toolkit's add_noise by {err:e}");
        let target = values(flow_target(x0, eps).unwrap());
        assert_eq!(target, f32s(&f["target"]), "target eps - x0");
    }

    #[test]
    fn velocity_is_the_path_derivative() {
        // x_sigma2 - x_sigma1 == (sigma2 - sigma1) * target for any pair of sigmas.
        let mut rng = Rng::new(1);
        let x0: Tensor<B, 3> = gaussian_noise(&mut rng, [1, 4, 8], &Default::default());
        let eps: Tensor<B, 3> = gaussian_noise(&mut rng, [1, 4, 8], &Default::default());
        let a = noisy_latents(x0.clone(), eps.clone(), &[0.3]).unwrap();
        let b = noisy_latents(x0.clone(), eps.clone(), &[0.8]).unwrap();
        let v = flow_target(x0, eps).unwrap();
        let diff = values(b - a - v * 0.5);
        assert!(diff.iter().all(|d| d.abs() < 1e-5), "{diff:?}");
    }

    #[test]
    fn keeps_the_inputs_float_type() {
        use burn::tensor::DType;
        let device = Default::default();
        let mut rng = Rng::new(2);
        let x0: Tensor<B, 3> = gaussian_noise(&mut rng, [2, 3, 4], (&device, DType::BF16));
        let eps: Tensor<B, 3> = gaussian_noise(&mut rng, [2, 3, 4], (&device, DType::BF16));
        assert_eq!(x0.dtype(), DType::BF16);
        let noisy = noisy_latents(x0, eps.clone(), &[0.5, 0.25]).unwrap();
        assert_eq!(noisy.dtype(), DType::BF16);
        let offset = apply_noise_offset(eps, 0.05, 2, &mut rng).unwrap();
        assert_eq!(offset.dtype(), DType::BF16);
    }

    #[test]
    fn shape_and_length_errors() {
        let x0 = t3(vec![0.0; 8], [2, 2, 2]);
        let eps = t3(vec![0.0; 4], [1, 2, 2]);
        assert!(matches!(noisy_latents(x0.clone(), eps.clone(), &[0.5]), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(flow_target(x0.clone(), eps), Err(Error::ShapeMismatch { .. })));
        assert_eq!(
            noisy_latents(x0.clone(), x0.clone(), &[0.5]).unwrap_err(),
            Error::BatchLengthMismatch { what: "noisy_latents: sigmas", expected: 2, got: 1 }
        );
        assert!(noisy_latents(x0.clone(), x0, &[0.5, f32::NAN]).is_err());
    }

    #[test]
    fn gaussian_noise_is_seeded() {
        let mut r1 = Rng::new(9);
        let mut r2 = Rng::new(9);
        let a = values(gaussian_noise::<B, 3>(&mut r1, [2, 16, 8], &Default::default()));
        let b = values(gaussian_noise::<B, 3>(&mut r2, [2, 16, 8], &Default::default()));
        assert_eq!(a, b);
        let m = a.iter().sum::<f32>() / a.len() as f32;
        assert!(m.abs() < 0.2);
    }

    #[test]
    fn noise_offset_is_per_item_and_channel() {
        let mut rng = Rng::new(4);
        let zeros = t3(vec![0.0; 2 * 5 * 3], [2, 5, 3]); // [B, N, C]
        let out = values(apply_noise_offset(zeros.clone(), 0.1, 2, &mut rng).unwrap());
        // constant along N for each (b, c), different across channels
        for b in 0..2 {
            for c in 0..3 {
                let first = out[b * 15 + c];
                assert!(first != 0.0 && first.abs() < 0.6);
                for n in 1..5 {
                    assert_eq!(out[b * 15 + n * 3 + c], first);
                }
            }
        }
        assert_ne!(out[0], out[1]);
        // the offsets are 0.1 * the rng's normals, in (b, c) order
        let mut r = Rng::new(4);
        let mut z = vec![0f32; 6];
        r.fill_normal(&mut z);
        assert!((out[1] - 0.1 * z[1]).abs() < 1e-7);
        assert!((out[15 + 2] - 0.1 * z[5]).abs() < 1e-7);
        // zero strength: unchanged and no randomness consumed
        let before = rng.clone();
        assert_eq!(values(apply_noise_offset(zeros.clone(), 0.0, 2, &mut rng).unwrap()), vec![0.0; 30]);
        assert_eq!(rng, before);
        assert!(apply_noise_offset(zeros.clone(), 0.1, 0, &mut rng).is_err());
        assert!(apply_noise_offset(zeros, 0.1, 3, &mut rng).is_err());
    }
}
