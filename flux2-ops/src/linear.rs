//! Bias-free Linear with PyTorch's [out, in] weight layout, plus optional low-rank adapters.
//!
//! The weight keeps the checkpoint layout so loading is a straight copy of memory-mapped bytes (no
//! transposed second copy), and matmul reads it transposed. Burn's `nn::Linear` stores [in, out].

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

use crate::low_rank::LowRankAdapter;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// [out_features, in_features].
    pub weight: Param<Tensor<B, 2>>,
    /// LoRA-style deltas added to the output; empty for a plain model. See [`LowRankAdapter`].
    pub adapters: Vec<LowRankAdapter<B>>,
}

impl<B: Backend> Linear<B> {
    /// A frozen layer: base weights never get gradients (a trainer unfreezes them explicitly for full
    /// fine-tuning), so autodiff keeps nothing weight-sized for them.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self { weight: Param::from_tensor(weight).set_require_grad(false), adapters: Vec::new() }
    }

    /// A zero-filled layer, used as the target the loader copies checkpoint tensors into.
    pub fn zeros(out_features: usize, in_features: usize, dtype: DType, device: &B::Device) -> Self {
        Self::new(Tensor::zeros([out_features, in_features], (device, dtype)))
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Whether a forward through this layer now builds autodiff graph: its weight trains (full
    /// fine-tuning) or an active adapter's factors do.
    pub fn trains(&self) -> bool {
        self.weight.val().is_require_grad()
            || self
                .adapters
                .iter()
                .any(|a| a.is_active() && (a.down.val().is_require_grad() || a.up.val().is_require_grad()))
    }

    /// `x @ W^T (+ adapters)` over the last dimension of a [.., in] tensor of any rank.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.shape().dims::<D>();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        let mut y = crate::matmul::matmul(x2.clone(), self.weight.val().transpose());
        for adapter in &self.adapters {
            if let Some(delta) = adapter.forward(x2.clone()) {
                let dtype = y.dtype();
                y = y + delta.cast(dtype);
            }
        }
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}
