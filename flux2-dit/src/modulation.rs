//! Shared modulation: FLUX.2 computes shift/scale/gate ONCE per forward from the timestep embedding and
//! every block reuses them (FLUX.1 had per-block modulation weights). Three Linears in the whole model.

use burn::module::Module;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use flux2_ops::Linear;

/// One (shift, scale, gate) triple, each [B, 1, D] so it broadcasts over tokens.
#[derive(Debug, Clone)]
pub struct ModParams<B: Backend> {
    pub shift: Tensor<B, 3>,
    pub scale: Tensor<B, 3>,
    pub gate: Tensor<B, 3>,
}

impl<B: Backend> ModParams<B> {
    /// `(1 + scale) * x + shift`.
    pub fn modulate(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * (self.scale.clone() + 1.0) + self.shift.clone()
    }
}

/// `Linear(D -> 3 D sets)(SiLU(temb))`, split into `sets` triples.
#[derive(Module, Debug)]
pub struct Modulation<B: Backend> {
    /// BFL `lin`, diffusers `linear`.
    pub lin: Linear<B>,
}

impl<B: Backend> Modulation<B> {
    pub fn forward(&self, temb: Tensor<B, 2>) -> Vec<ModParams<B>> {
        let out = self.lin.forward(silu(temb)).unsqueeze_dim::<3>(1);
        let chunks = out.chunk(self.lin.out_features() / self.lin.in_features(), 2);
        chunks.chunks(3).map(|c| ModParams { shift: c[0].clone(), scale: c[1].clone(), gate: c[2].clone() }).collect()
    }
}
