//! Whether a tensor holds only finite values: the check every loader runs on each weight, so a damaged
//! checkpoint is named at load time instead of surfacing as a NaN loss that blames the learning rate.

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

/// One reduction and one scalar read-back. `sum(t * 0)` is 0 exactly unless some value is NaN or
/// infinite (then NaN), in any float dtype and on any backend (no bool tensor, whose element type
/// differs between backends, is read back).
pub fn all_finite<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    t.clone().mul_scalar(0.0).sum().into_scalar().elem::<f32>().is_finite()
}
