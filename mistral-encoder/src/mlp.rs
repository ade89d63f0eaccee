//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`, three bias-free projections.

use burn::module::Module;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use flux2_ops::Linear;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// [intermediate, hidden].
    pub gate_proj: Linear<B>,
    /// [intermediate, hidden].
    pub up_proj: Linear<B>,
    /// [hidden, intermediate].
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
