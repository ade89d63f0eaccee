//! Bias-free Linear keeping PyTorch's [out, in] weight layout.
//!
//! Keeping the checkpoint layout makes loading a straight copy of the memory-mapped bytes (no transposed
//! second copy of a 24B model); the matmul reads the weight transposed. (Burn's `nn::Linear` stores
//! [in, out].) No Linear in the Mistral language model has a bias.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// [out_features, in_features].
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
        }
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x @ W^T` over the last dimension of [B, L, in].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, l, d] = x.dims();
        let y = x.reshape([b * l, d]).matmul(self.weight.val().transpose());
        y.reshape([b, l, self.out_features()])
    }
}
