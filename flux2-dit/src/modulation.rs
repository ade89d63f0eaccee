//! Shared modulation: FLUX.2 computes shift/scale/gate ONCE per forward from the timestep embedding and
//! every block reuses them (FLUX.1 had per-block modulation weights). Three Linears in the whole model.

use burn::module::Module;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use crate::norm::layer_norm;
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

    /// `x + gate * y`, the residual update after an attention or MLP: one fused op where the backend has
    /// it ([`flux2_ops::fused_gates`]), else this composition.
    pub fn gated(&self, x: Tensor<B, 3>, y: Tensor<B, 3>) -> Tensor<B, 3> {
        flux2_ops::fused_gates::gated_residual(x, &self.gate, y).unwrap_or_else(|(x, y)| x + self.gate.clone() * y)
    }

    /// `(1 + scale) * LayerNorm(x) + shift`, the input of every attention and MLP: one fused kernel
    /// where the backend has it ([`flux2_ops::fused_norm`]), else this composition.
    pub fn modulate_norm(&self, x: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
        flux2_ops::fused_norm::modulated_layer_norm(x, &self.shift, &self.scale, eps)
            .unwrap_or_else(|x| self.modulate(layer_norm(x, eps)))
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
