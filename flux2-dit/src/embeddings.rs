//! Timestep and guidance embedding: sinusoidal features of `1000 * sigma` fed through a two-layer MLP.

use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorData, activation::silu, backend::Backend};

use flux2_ops::Linear;

/// `Linear -> SiLU -> Linear` (diffusers `TimestepEmbedding`, BFL `MLPEmbedder`).
#[derive(Module, Debug)]
pub struct MlpEmbedder<B: Backend> {
    /// BFL `in_layer`, diffusers `linear_1`.
    pub in_layer: Linear<B>,
    /// BFL `out_layer`, diffusers `linear_2`.
    pub out_layer: Linear<B>,
}

impl<B: Backend> MlpEmbedder<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.out_layer.forward(silu(self.in_layer.forward(x)))
    }
}

/// Sinusoidal features `[cos(s f_k) | sin(s f_k)]`, f_k = exp(-ln(10000) k / half), in f32.
///
/// `values` are already scaled by 1000. The reference casts sigma to the model dtype *before* scaling, so
/// a bf16 model sees bf16-rounded timesteps; the caller passes them that way (see `Flux2Transformer`).
pub fn sinusoidal_embedding<B: Backend>(values: Tensor<B, 1>, channels: usize) -> Tensor<B, 2> {
    let half = channels / 2;
    let freqs: Vec<f32> = (0..half).map(|k| (-(10000f32).ln() * k as f32 / half as f32).exp()).collect();
    let device = values.device();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), (&device, DType::F32));
    let args = values.cast(DType::F32).unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim::<2>(0);
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

/// `temb = MLP_t(emb(1000 sigma)) (+ MLP_g(emb(1000 guidance)))`.
#[derive(Module, Debug)]
pub struct TimeGuidanceEmbed<B: Backend> {
    pub time_in: MlpEmbedder<B>,
    pub guidance_in: Option<MlpEmbedder<B>>,
    pub channels: usize,
}

impl<B: Backend> TimeGuidanceEmbed<B> {
    /// `timestep` and `guidance` are [B] in model dtype, already multiplied by 1000.
    pub fn forward(&self, timestep: Tensor<B, 1>, guidance: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
        let dtype = timestep.dtype();
        let t = self.time_in.forward(sinusoidal_embedding(timestep, self.channels).cast(dtype));
        match (&self.guidance_in, guidance) {
            (Some(embedder), Some(g)) => t + embedder.forward(sinusoidal_embedding(g, self.channels).cast(dtype)),
            _ => t,
        }
    }
}
