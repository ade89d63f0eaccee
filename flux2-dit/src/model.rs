//! `Flux2Transformer`: embedders, shared modulation, double and single blocks, final layer.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, TensorData, activation::silu, backend::Backend};

use crate::config::Flux2Config;
use crate::double_block::{DoubleBlock, QkNorm, StreamAttention, StreamMods, SwiGlu};
use crate::embeddings::{MlpEmbedder, TimeGuidanceEmbed};
use crate::error::{Error, Result};
use crate::modulation::{ModParams, Modulation};
use crate::norm::{RmsNorm, layer_norm};
use crate::position_ids::PositionIds;
use crate::rope::RopeTable;
use crate::single_block::SingleBlock;
use crate::storage::BaseStorage;
use crate::weight_source::WeightSource;
use flux2_ops::{Linear, all_finite};

/// Output head: adaptive LayerNorm from the timestep embedding, then the projection to latent channels.
#[derive(Module, Debug)]
pub struct FinalLayer<B: Backend> {
    /// D -> 2D, rows [shift; scale] (BFL order; diffusers stores [scale; shift]).
    pub ada_ln_modulation: Linear<B>,
    pub linear: Linear<B>,
}

/// What every block reads besides its stream: the modulation triples (computed once per forward) and
/// the timestep embedding the final layer reads.
#[derive(Clone, Debug)]
pub struct Conditioning<B: Backend> {
    pub img_mods: StreamMods<B>,
    pub txt_mods: StreamMods<B>,
    pub single_mod: ModParams<B>,
    /// [B, D].
    pub temb: Tensor<B, 2>,
}

#[derive(Module, Debug)]
pub struct Flux2Transformer<B: Backend> {
    pub img_in: Linear<B>,
    pub txt_in: Linear<B>,
    pub time_guidance: TimeGuidanceEmbed<B>,
    pub double_stream_modulation_img: Modulation<B>,
    pub double_stream_modulation_txt: Modulation<B>,
    pub single_stream_modulation: Modulation<B>,
    pub double_blocks: Vec<DoubleBlock<B>>,
    pub single_blocks: Vec<SingleBlock<B>>,
    pub final_layer: FinalLayer<B>,
    pub config: Flux2Config,
}

/// Where the builder's tensors come from.
trait Provide<B: Backend> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>>;
    /// The Linear `module` when the source stores it pre-quantized (float8 files).
    fn float8_linear(&mut self, module: &str, shape: [usize; 2]) -> Result<Option<Linear<B>>> {
        let _ = (module, shape);
        Ok(None)
    }
    fn finish(&mut self) -> Result<()>;
}

/// A [`WeightSource`] (checkpoint, [`crate::RandomSource`]): host data, uploaded tensor by tensor.
struct FromSource<'a, B: Backend, S: WeightSource> {
    source: &'a mut S,
    dtype: DType,
    device: &'a B::Device,
}

impl<B: Backend, S: WeightSource> Provide<B> for FromSource<'_, B, S> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let data: TensorData = self.source.take(name, &shape, self.dtype)?;
        let tensor = Tensor::from_data(data, (self.device, self.dtype));
        // NaN/Inf in a weight gives black images and NaN losses far from the cause: name it here
        // (one reduction on the device per tensor).
        if !all_finite(&tensor) {
            return Err(crate::Error::NonFinite { key: name.into(), origin: self.source.origin(name) });
        }
        Ok(tensor)
    }
    fn float8_linear(&mut self, module: &str, shape: [usize; 2]) -> Result<Option<Linear<B>>> {
        Ok(self
            .source
            .take_float8(module, shape)?
            .map(|host| Linear::from_host_quantized(&host, self.dtype, self.device)))
    }
    fn finish(&mut self) -> Result<()> {
        self.source.finish()
    }
}

/// Weights drawn on the device by the backend's RNG, with [`crate::RandomSource`]'s scales.
struct OnDevice<'a, B: Backend> {
    dtype: DType,
    device: &'a B::Device,
}

impl<B: Backend> Provide<B> for OnDevice<'_, B> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        if name.ends_with(".scale") {
            return Ok(Tensor::ones(shape, (self.device, self.dtype)));
        }
        let std = 1.0 / (*shape.last().unwrap_or(&1) as f64).sqrt();
        // Drawn in f32 one Linear at a time, so the f32 scratch is one layer, not the model.
        Ok(Tensor::<B, D>::random(shape, burn::tensor::Distribution::Normal(0.0, std), self.device).cast(self.dtype))
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Records each parameter's name and shape and gives a zero-element placeholder in its place: the
/// builder run for its key list alone ([`Flux2Transformer::checkpoint_layout`]).
struct Names<'a, B: Backend> {
    names: Vec<(String, Vec<usize>)>,
    device: &'a B::Device,
}

impl<B: Backend> Provide<B> for Names<'_, B> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.names.push((name.to_string(), shape.to_vec()));
        Ok(Tensor::empty([0; D], self.device))
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Builds modules from a [`Provide`]r, asking for each parameter by BFL name.
struct Builder<'c, B, P> {
    source: P,
    config: &'c Flux2Config,
    /// Every Linear is quantized (and, in offloaded blocks, moved to host memory) right after it is
    /// built: streaming, one dense layer at a time.
    storage: BaseStorage,
    backend: std::marker::PhantomData<B>,
}

impl<B: Backend, P: Provide<B>> Builder<'_, B, P> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.source.tensor(name, shape)
    }

    fn linear(&mut self, module: &str, out_features: usize, in_features: usize) -> Result<Linear<B>> {
        // A layer the checkpoint holds in float8 stays as stored (re-quantizing it would only lose more).
        let layer = match self.source.float8_linear(module, [out_features, in_features])? {
            Some(layer) => layer,
            None => {
                let layer = Linear::new(self.tensor(&format!("{module}.weight"), [out_features, in_features])?);
                match self.storage.quantize {
                    Some(qtype) => layer
                        .quantize(qtype)
                        .map_err(|message| Error::Input { name: "qtype", message: format!("`{module}`: {message}") })?,
                    None => layer,
                }
            }
        };
        if self.storage.offloads(self.config, module) {
            return layer.offload().map_err(|message| Error::Input {
                name: "layer_offloading",
                message: format!("`{module}`: {message}"),
            });
        }
        Ok(layer)
    }

    fn rms_norm(&mut self, module: &str, dim: usize, eps: f64) -> Result<RmsNorm<B>> {
        let weight = self.tensor(&format!("{module}.scale"), [dim])?;
        Ok(RmsNorm { weight: Param::from_tensor(weight).set_require_grad(false), eps })
    }

    fn qk_norm(&mut self, module: &str, c: &Flux2Config) -> Result<QkNorm<B>> {
        Ok(QkNorm {
            query_norm: self.rms_norm(&format!("{module}.query_norm"), c.attention_head_dim, c.eps)?,
            key_norm: self.rms_norm(&format!("{module}.key_norm"), c.attention_head_dim, c.eps)?,
        })
    }

    fn mlp_embedder(&mut self, module: &str, c: &Flux2Config) -> Result<MlpEmbedder<B>> {
        let d = c.inner_dim();
        Ok(MlpEmbedder {
            in_layer: self.linear(&format!("{module}.in_layer"), d, c.timestep_guidance_channels)?,
            out_layer: self.linear(&format!("{module}.out_layer"), d, d)?,
        })
    }

    fn stream(&mut self, module: &str, c: &Flux2Config) -> Result<(StreamAttention<B>, SwiGlu<B>)> {
        let (d, f) = (c.inner_dim(), c.mlp_hidden_dim());
        let attn = StreamAttention {
            qkv: self.linear(&format!("{module}_attn.qkv"), 3 * d, d)?,
            norm: self.qk_norm(&format!("{module}_attn.norm"), c)?,
            proj: self.linear(&format!("{module}_attn.proj"), d, d)?,
        };
        let mlp = SwiGlu {
            fc_in: self.linear(&format!("{module}_mlp.0"), 2 * f, d)?,
            fc_out: self.linear(&format!("{module}_mlp.2"), d, f)?,
        };
        Ok((attn, mlp))
    }

    fn model(&mut self) -> Result<Flux2Transformer<B>> {
        let c = self.config;
        c.validate()?;
        let (d, f) = (c.inner_dim(), c.mlp_hidden_dim());
        let img_in = self.linear("img_in", d, c.in_channels)?;
        let txt_in = self.linear("txt_in", d, c.joint_attention_dim)?;
        let time_in = self.mlp_embedder("time_in", c)?;
        let guidance_in = if c.guidance_embeds { Some(self.mlp_embedder("guidance_in", c)?) } else { None };
        let modulation = |b: &mut Self, name: &str, sets: usize| -> Result<Modulation<B>> {
            Ok(Modulation { lin: b.linear(&format!("{name}.lin"), 3 * sets * d, d)? })
        };
        let double_stream_modulation_img = modulation(self, "double_stream_modulation_img", 2)?;
        let double_stream_modulation_txt = modulation(self, "double_stream_modulation_txt", 2)?;
        let single_stream_modulation = modulation(self, "single_stream_modulation", 1)?;
        let mut double_blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let (img_attn, img_mlp) = self.stream(&format!("double_blocks.{i}.img"), c)?;
            let (txt_attn, txt_mlp) = self.stream(&format!("double_blocks.{i}.txt"), c)?;
            double_blocks.push(DoubleBlock {
                img_attn,
                txt_attn,
                img_mlp,
                txt_mlp,
                heads: c.num_attention_heads,
                eps: c.eps,
            });
        }
        let mut single_blocks = Vec::with_capacity(c.num_single_layers);
        for i in 0..c.num_single_layers {
            single_blocks.push(SingleBlock {
                linear1: self.linear(&format!("single_blocks.{i}.linear1"), 3 * d + 2 * f, d)?,
                linear2: self.linear(&format!("single_blocks.{i}.linear2"), d, d + f)?,
                norm: self.qk_norm(&format!("single_blocks.{i}.norm"), c)?,
                heads: c.num_attention_heads,
                eps: c.eps,
            });
        }
        let final_layer = FinalLayer {
            ada_ln_modulation: self.linear("final_layer.adaLN_modulation.1", 2 * d, d)?,
            linear: self.linear("final_layer.linear", c.out_channels(), d)?,
        };
        self.source.finish()?;
        Ok(Flux2Transformer {
            img_in,
            txt_in,
            time_guidance: TimeGuidanceEmbed { time_in, guidance_in, channels: c.timestep_guidance_channels },
            double_stream_modulation_img,
            double_stream_modulation_txt,
            single_stream_modulation,
            double_blocks,
            single_blocks,
            final_layer,
            config: c.clone(),
        })
    }
}

impl<B: Backend> Flux2Transformer<B> {
    /// Builds the model parameter by parameter from `source` (a checkpoint or [`crate::RandomSource`]).
    pub fn from_source<S: WeightSource>(
        config: &Flux2Config,
        source: &mut S,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_with(config, source, dtype, BaseStorage::default(), device)
    }

    /// [`Self::from_source`] with the base stored as `storage` says ([`BaseStorage`]: quantized Linears,
    /// as ai-toolkit's `model.quantize` + `qtype` quantizes the whole transformer; offloaded blocks),
    /// each Linear converted as soon as it is read, so the dense model is never on the device or the
    /// host at once. Norms, biases-free modulation vectors and the adapters' factors stay in full
    /// precision.
    pub fn from_source_with<S: WeightSource>(
        config: &Flux2Config,
        source: &mut S,
        dtype: DType,
        storage: BaseStorage,
        device: &B::Device,
    ) -> Result<Self> {
        let source = FromSource::<B, S> { source, dtype, device };
        Builder { source, config, storage, backend: std::marker::PhantomData }.model()
    }

    /// A model with random weights drawn on the device by the backend's RNG (seed it with
    /// `B::seed`), at [`crate::RandomSource`]'s scales: N(0, 1/fan_in) matrices, unit norm scales.
    /// Seconds for the full 32B model on a GPU where the host fill takes minutes; the values depend
    /// on the backend, so tests that compare numbers use [`Self::from_source`].
    pub fn random_on_device(config: &Flux2Config, dtype: DType, device: &B::Device) -> Result<Self> {
        Self::random_on_device_with(config, dtype, BaseStorage::default(), device)
    }

    /// [`Self::random_on_device`] with the base stored as `storage` says (see [`Self::from_source_with`]).
    pub fn random_on_device_with(
        config: &Flux2Config,
        dtype: DType,
        storage: BaseStorage,
        device: &B::Device,
    ) -> Result<Self> {
        let source = OnDevice::<B> { dtype, device };
        Builder { source, config, storage, backend: std::marker::PhantomData }.model()
    }

    /// Every parameter's BFL checkpoint key and shape for `config`, in the order the loaders read them:
    /// the builder itself run with zero-element placeholders on `device` (nothing is allocated, any
    /// backend), so the list is exactly the keys and shapes a BFL file must hold
    /// ([`crate::sparse_file`] writes files from it).
    pub fn checkpoint_layout(config: &Flux2Config, device: &B::Device) -> Result<Vec<(String, Vec<usize>)>> {
        let mut builder = Builder {
            source: Names::<B> { names: Vec::new(), device },
            config,
            storage: BaseStorage::default(),
            backend: std::marker::PhantomData,
        };
        builder.model()?;
        Ok(builder.source.names)
    }

    /// Starts uploading the offloaded Linears of block `index` (execution order: the double blocks,
    /// then the single ones) while the current block computes ([`flux2_ops::offload`]); a no-op for
    /// resident blocks and indices past the end.
    pub fn prefetch_block(&self, index: usize) {
        let nd = self.double_blocks.len();
        if let Some(block) = self.double_blocks.get(index) {
            block.linears().iter().for_each(|l| l.prefetch());
        } else if let Some(block) = index.checked_sub(nd).and_then(|j| self.single_blocks.get(j)) {
            block.linears().iter().for_each(|l| l.prefetch());
        }
    }

    /// The dtype of the weights; activations run in it.
    pub fn dtype(&self) -> DType {
        self.img_in.weight.val().dtype()
    }

    pub fn device(&self) -> B::Device {
        self.img_in.weight.val().device()
    }

    /// RoPE tables for a joint sequence of `txt_ids` followed by `img_ids` (image + reference tokens).
    pub fn rope(&self, txt_ids: &PositionIds, img_ids: &PositionIds) -> RopeTable<B> {
        let ids = PositionIds::concat(&[txt_ids, img_ids]);
        RopeTable::new(&ids, &self.config.axes_dims_rope, self.config.rope_theta, &self.device())
    }

    /// Predicted velocity [B, N, out_channels] for every image token, reference tokens included (the
    /// caller drops those).
    ///
    /// * `hidden_states` [B, N, in_channels] packed latents (+ reference tokens after them)
    /// * `encoder_hidden_states` [B, L, joint_attention_dim] prompt embeddings
    /// * `timestep` [B] sigma in [0, 1]; `guidance` [B] (ignored by models without guidance embedding)
    /// * `rope` from [`Self::rope`] over the L text then N image ids
    ///
    /// Training at full size goes through [`crate::checkpoint::BlockCheckpointing`] instead, which runs
    /// the same three stages ([`Self::embed`], the blocks, [`Self::head`]) without keeping the blocks'
    /// activations.
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        rope: &RopeTable<B>,
    ) -> Tensor<B, 3> {
        self.forward_hooked(hidden_states, encoder_hidden_states, timestep, guidance, rope, &mut |_| {})
    }

    /// [`Self::forward`] calling `before_block(i)` before block `i` runs (double blocks first, then
    /// single blocks): where checkpointing reseeds LoRA dropout (`checkpoint::forward_reseeded`).
    pub fn forward_hooked(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        rope: &RopeTable<B>,
        before_block: &mut dyn FnMut(usize),
    ) -> Tensor<B, 3> {
        self.prefetch_block(0);
        let (mut img, mut txt, cond) = self.embed(hidden_states, encoder_hidden_states, timestep, guidance, rope);
        let txt_len = txt.dims()[1];
        let img_len = img.dims()[1];
        for (i, block) in self.double_blocks.iter().enumerate() {
            before_block(i);
            self.prefetch_block(i + 1);
            (img, txt) = block.forward(img, txt, &cond.img_mods, &cond.txt_mods, rope);
        }
        let mut h = Tensor::cat(vec![txt, img], 1);
        for (j, block) in self.single_blocks.iter().enumerate() {
            let index = self.double_blocks.len() + j;
            before_block(index);
            self.prefetch_block(index + 1);
            h = block.forward(h, &cond.single_mod, rope);
        }
        self.head(h.narrow(1, txt_len, img_len), cond.temb)
    }

    /// The stage before the blocks: timestep/guidance embedding, the shared modulation (computed once
    /// per forward), and the input projections. Returns (image stream, text stream, conditioning).
    pub fn embed(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        rope: &RopeTable<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Conditioning<B>) {
        let dtype = self.dtype();
        let txt_len = encoder_hidden_states.shape().dims::<3>()[1];
        let img_len = hidden_states.shape().dims::<3>()[1];
        assert_eq!(
            rope.len(),
            txt_len + img_len,
            "RoPE table covers {} tokens, input has {txt_len} text + {img_len} image",
            rope.len()
        );

        // The reference casts sigma to the model dtype before scaling by 1000.
        let timestep = timestep.cast(dtype) * 1000.0;
        let guidance = guidance.map(|g| g.cast(dtype) * 1000.0);
        let temb = self.time_guidance.forward(timestep, guidance);

        let img_mods = self.double_stream_modulation_img.forward(temb.clone());
        let txt_mods = self.double_stream_modulation_txt.forward(temb.clone());
        let single_mod = self.single_stream_modulation.forward(temb.clone()).remove(0);
        let cond = Conditioning {
            img_mods: [img_mods[0].clone(), img_mods[1].clone()],
            txt_mods: [txt_mods[0].clone(), txt_mods[1].clone()],
            single_mod,
            temb,
        };
        let img = self.img_in.forward(hidden_states.cast(dtype));
        let txt = self.txt_in.forward(encoder_hidden_states.cast(dtype));
        (img, txt, cond)
    }

    /// The stage after the blocks: adaptive LayerNorm from `temb`, then the projection to latent
    /// channels, on the image tokens of the joint stream.
    pub fn head(&self, img: Tensor<B, 3>, temb: Tensor<B, 2>) -> Tensor<B, 3> {
        let d = self.config.inner_dim();
        let m = self.final_layer.ada_ln_modulation.forward(silu(temb)).unsqueeze_dim::<3>(1);
        let shift = m.clone().narrow(2, 0, d);
        let scale = m.narrow(2, d, d);
        let x = layer_norm(img, self.config.eps) * (scale + 1.0) + shift;
        self.final_layer.linear.forward(x)
    }

    /// The Linears of [`Self::embed`] (embedders, modulation, input projections), in [`Self::linears`]
    /// order: block checkpointing asks whether any of them trains.
    pub fn embed_linears(&self) -> Vec<&Linear<B>> {
        let mut out = vec![
            &self.img_in,
            &self.txt_in,
            &self.time_guidance.time_in.in_layer,
            &self.time_guidance.time_in.out_layer,
        ];
        if let Some(g) = &self.time_guidance.guidance_in {
            out.extend([&g.in_layer, &g.out_layer]);
        }
        out.extend([
            &self.double_stream_modulation_img.lin,
            &self.double_stream_modulation_txt.lin,
            &self.single_stream_modulation.lin,
        ]);
        out
    }

    /// Checks input shapes against the config; the forward itself asserts, this returns errors.
    pub fn check_inputs(&self, hidden_states: &[usize], encoder_hidden_states: &[usize]) -> Result<()> {
        let c = &self.config;
        if hidden_states.len() != 3 || hidden_states[2] != c.in_channels {
            return Err(Error::Input {
                name: "hidden_states",
                message: format!("shape {hidden_states:?}, expected [B, N, {}]", c.in_channels),
            });
        }
        if encoder_hidden_states.len() != 3
            || encoder_hidden_states[2] != c.joint_attention_dim
            || encoder_hidden_states[0] != hidden_states[0]
        {
            return Err(Error::Input {
                name: "encoder_hidden_states",
                message: format!(
                    "shape {encoder_hidden_states:?}, expected [{}, L, {}]",
                    hidden_states[0], c.joint_attention_dim
                ),
            });
        }
        Ok(())
    }
}
