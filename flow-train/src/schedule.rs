//! The FLUX.2 inference sigma schedule, as diffusers' `Flux2Pipeline` builds it.
//!
//! The pipeline asks `FlowMatchEulerDiscreteScheduler` (dynamic shifting, exponential time shift) for
//! `N` steps with custom sigmas `linspace(1, 1/N, N)` and a `mu` from [`compute_empirical_mu`]; the
//! scheduler shifts every sigma with [`time_shift_exponential`] and appends a final 0. Sampling then
//! walks the `N` intervals with Euler steps `x += (sigma[i+1] - sigma[i]) * v` in f32.
//!
//! Precision: diffusers casts the linspace to float32 *before* shifting and evaluates the shift in
//! float32 (numpy keeps float32 when a Python float meets a float32 array). [`Flux2Schedule::new`]
//! repeats those exact operations, so its sigmas are bit-identical to diffusers'; the same formula in
//! f64 differs from diffusers by up to ~3e-7 (measured by `tools/reference/flow_train_reference.py`).

use serde::Serialize;

use crate::error::{Error, Result};

/// `compute_empirical_mu` coefficients (diffusers `pipelines/flux2/pipeline_flux2.py`): `mu` is
/// linear in the token count, with slope/intercept fitted by BFL at 10 steps (`A1`, `B1`) and at 200
/// steps (`A2`, `B2`), and linear in the step count between and beyond those two fits.
pub const EMPIRICAL_MU_A1: f64 = 8.73809524e-05;
/// See [`EMPIRICAL_MU_A1`].
pub const EMPIRICAL_MU_B1: f64 = 1.89833333;
/// See [`EMPIRICAL_MU_A1`].
pub const EMPIRICAL_MU_A2: f64 = 0.00016927;
/// See [`EMPIRICAL_MU_A1`].
pub const EMPIRICAL_MU_B2: f64 = 0.45666666;
/// Above this many image tokens `mu` no longer depends on the step count (the 200-step line is used).
pub const EMPIRICAL_MU_SEQ_LEN_CUTOFF: usize = 4300;

/// Resolution- and step-dependent shift `mu` of FLUX.2 sampling.
///
/// `image_seq_len` counts the noisy image tokens only, `(H/16) * (W/16)` for an `H x W` image;
/// reference (edit) image tokens appended after them do not count. For more than 4300 tokens `mu`
/// is the 200-step line `A2*S + B2`; otherwise the two fitted lines at 10 and 200 steps are
/// interpolated (and extrapolated) linearly in `num_steps`. The arithmetic follows diffusers
/// operation by operation, so the f64 result is identical.
pub fn compute_empirical_mu(image_seq_len: usize, num_steps: usize) -> f64 {
    let s = image_seq_len as f64;
    if image_seq_len > EMPIRICAL_MU_SEQ_LEN_CUTOFF {
        return EMPIRICAL_MU_A2 * s + EMPIRICAL_MU_B2;
    }
    let m_200 = EMPIRICAL_MU_A2 * s + EMPIRICAL_MU_B2;
    let m_10 = EMPIRICAL_MU_A1 * s + EMPIRICAL_MU_B1;
    let a = (m_200 - m_10) / 190.0;
    let b = m_200 - 200.0 * a;
    a * num_steps as f64 + b
}

/// Exponential time shift with exponent 1: `e^mu / (e^mu + (1/t - 1))`.
///
/// Maps `t` in `[0, 1]` onto itself (0 -> 0, 1 -> 1) and, for `mu > 0`, pushes the interior towards
/// 1 (more noise): larger images keep more steps at high noise, where global structure forms.
/// Used in f64 by the training 'shift' table; the inference schedule evaluates it in f32 (see the
/// module docs).
pub fn time_shift_exponential(mu: f64, t: f64) -> f64 {
    let e = mu.exp();
    e / (e + (1.0 / t - 1.0))
}

/// `numpy.linspace(start, stop, num)` (endpoint included), reproducing numpy's arithmetic
/// (`i * step + start`, last element set to `stop`) so derived values match bit for bit.
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let div = (num - 1) as f64;
            let delta = stop - start;
            let step = delta / div;
            let mut y: Vec<f64> = if step == 0.0 {
                (0..num).map(|i| (i as f64 / div) * delta + start).collect()
            } else {
                (0..num).map(|i| i as f64 * step + start).collect()
            };
            y[num - 1] = stop;
            y
        }
    }
}

/// FLUX.2 sampling schedule: `mu` and the `steps + 1` sigmas, from 1 down to the final 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flux2Schedule {
    /// The shift used, from [`compute_empirical_mu`].
    pub mu: f64,
    /// `steps + 1` float32 sigmas: `sigmas[0] == 1`, strictly decreasing, `sigmas[steps] == 0`.
    pub sigmas: Vec<f32>,
}

impl Flux2Schedule {
    /// Schedule for `image_seq_len` noisy image tokens and `steps` Euler steps, identical to what
    /// diffusers' `Flux2Pipeline` passes to its scheduler (bit for bit; see the module docs).
    pub fn new(image_seq_len: usize, steps: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::InvalidSteps { steps });
        }
        if image_seq_len == 0 {
            return Err(Error::InvalidImageSeqLen { image_seq_len });
        }
        let mu = compute_empirical_mu(image_seq_len, steps);
        let e = mu.exp() as f32;
        let mut sigmas: Vec<f32> = numpy_linspace(1.0, 1.0 / steps as f64, steps)
            .into_iter()
            .map(|s| {
                let t = s as f32;
                e / (e + (1.0f32 / t - 1.0f32))
            })
            .collect();
        sigmas.push(0.0);
        Ok(Self { mu, sigmas })
    }

    /// Number of Euler steps (`sigmas.len() - 1`).
    pub fn steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// The scheduler's `timesteps`: `sigma * 1000` in f32 for each of the `steps` steps (no final 0).
    /// diffusers feeds the transformer `timestep / 1000`, cast to the latents' dtype, which is not
    /// always bit-equal to the sigma itself.
    pub fn timesteps(&self) -> Vec<f32> {
        self.sigmas[..self.steps()].iter().map(|&s| s * 1000.0f32).collect()
    }

    /// `(sigma_i, sigma_{i+1})` for each step: the Euler update is `x += (next - cur) * v`.
    pub fn intervals(&self) -> impl Iterator<Item = (f32, f32)> + '_ {
        self.sigmas.windows(2).map(|w| (w[0], w[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::reference;

    #[test]
    fn empirical_mu_matches_diffusers() {
        for case in reference()["schedules"].as_array().unwrap() {
            let s = case["image_seq_len"].as_u64().unwrap() as usize;
            let n = case["steps"].as_u64().unwrap() as usize;
            let expect = case["mu"].as_f64().unwrap();
            let got = compute_empirical_mu(s, n);
            assert!((got - expect).abs() <= 1e-12 * expect.abs().max(1.0), "S={s} N={n}: {got} vs {expect}");
        }
    }

    #[test]
    fn sigmas_match_diffusers_bit_for_bit() {
        let cases = reference()["schedules"].as_array().unwrap();
        assert!(cases.len() >= 100);
        for case in cases {
            let s = case["image_seq_len"].as_u64().unwrap() as usize;
            let n = case["steps"].as_u64().unwrap() as usize;
            let sched = Flux2Schedule::new(s, n).unwrap();
            let expect: Vec<f32> =
                case["sigmas"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(sched.sigmas.len(), n + 1);
            assert_eq!(sched.steps(), n);
            assert_eq!(sched.sigmas, expect, "S={s} N={n}");
            if let Some(ts) = case.get("timesteps") {
                let ts: Vec<f32> = ts.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                assert_eq!(sched.timesteps(), ts, "timesteps S={s} N={n}");
            }
        }
    }

    #[test]
    fn schedule_shape_invariants() {
        for &(s, n) in &[(1usize, 1usize), (4096, 28), (4301, 50), (100_000, 7), (64, 1000)] {
            let sched = Flux2Schedule::new(s, n).unwrap();
            assert_eq!(sched.sigmas[0], 1.0);
            assert_eq!(*sched.sigmas.last().unwrap(), 0.0);
            // Strictly decreasing for realistic sizes; for huge token counts (mu ~ 17 at 100k tokens)
            // the first sigmas round to 1.0 in f32, in diffusers too.
            assert!(sched.sigmas.windows(2).all(|w| w[1] <= w[0]), "increasing for S={s} N={n}");
            if s <= 16384 {
                assert!(sched.sigmas.windows(2).all(|w| w[1] < w[0]), "not decreasing for S={s} N={n}");
            }
            assert_eq!(sched.intervals().count(), n);
        }
    }

    #[test]
    fn f64_formula_stays_within_1e6_of_the_f32_schedule() {
        let sched = Flux2Schedule::new(4096, 50).unwrap();
        let s = numpy_linspace(1.0, 1.0 / 50.0, 50);
        for (i, &t) in s.iter().enumerate() {
            let exact = time_shift_exponential(sched.mu, t);
            assert!((exact - sched.sigmas[i] as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn invalid_arguments_are_errors() {
        assert_eq!(Flux2Schedule::new(4096, 0), Err(Error::InvalidSteps { steps: 0 }));
        assert_eq!(Flux2Schedule::new(0, 4), Err(Error::InvalidImageSeqLen { image_seq_len: 0 }));
    }

    #[test]
    fn linspace_matches_numpy_edge_cases() {
        assert_eq!(numpy_linspace(1.0, 0.5, 1), vec![1.0]);
        assert_eq!(numpy_linspace(1.0, 0.5, 2), vec![1.0, 0.5]);
        let v = numpy_linspace(1000.0, 1.0, 1000);
        assert_eq!(v[0], 1000.0);
        assert_eq!(v[999], 1.0);
        assert_eq!(v[500], 500.0);
    }
}
