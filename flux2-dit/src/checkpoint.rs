//! Block-level activation checkpointing: the forward keeps only each block's input, the backward
//! recomputes one block at a time with its graph, back-propagates through it and frees it.
//!
//! Without it, one training step of FLUX.2 [dev] at 1024^2 keeps every block's activations until the
//! backward (far beyond 141 GB); with it, the step holds the weights, one small input per block
//! (`[B, L, D]`), and the graph of the one block being recomputed.
//!
//! # Why a driver and not a custom autodiff op
//! The natural design, a custom backward op wrapping a block whose backward re-runs the block under a
//! fresh graph, deadlocks in Burn 0.21: `backward()` holds the graph's mutex while it executes the
//! steps, and a nested `backward()` (the recomputed block's) ends by locking every graph to clean up,
//! the outer one included. So this is a driver around the model instead:
//!
//! 1. [`BlockCheckpointing::forward`] runs [`Flux2Transformer::embed`] with its graph (small, and it
//!    only trains when adapters sit on embedders or modulation), then the blocks on untracked copies
//!    (`no_grad` modules, detached streams: no graph, nothing kept but the block inputs), then
//!    [`Flux2Transformer::head`] from a leaf that requires grad, and returns the prediction. Whatever
//!    the caller computes from it (loss, DOP terms, several forwards summed) is an ordinary graph.
//! 2. [`BlockCheckpointing::backward`] back-propagates the caller's loss to the head's input leaf, then
//!    walks the blocks in reverse: recompute block `i` from its saved input with graph, back-propagate
//!    `sum(out * upstream)` (whose gradient at `out` is exactly `upstream`), keep the input gradient
//!    for block `i - 1` and add the block's parameter gradients to the caller's gradients. Last, when
//!    the embedding stage trains, one backward of `sum(output * gradient)` over its outputs.
//!
//! The invariant: the returned gradients equal those of `forward` + `loss.backward()` up to float
//! rounding (the same products, summed in another order), tested in `tests/checkpointing.rs`.
//!
//! LoRA dropout draws its masks from the backend RNG; the forward and the recompute must draw the same
//! ones (PyTorch saves the RNG state for this). When an adapter uses dropout, every block reseeds the
//! backend from the tape's seed and the block's index before it runs, in both passes.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::double_block::StreamMods;
use crate::model::{Conditioning, Flux2Transformer};
use crate::modulation::ModParams;
use crate::rope::RopeTable;

/// The recorded forwards of one loss and the driver of their backward (see the module docs).
pub struct BlockCheckpointing<'m, B: AutodiffBackend> {
    model: &'m Flux2Transformer<B>,
    seed: u64,
    records: Vec<Record<B>>,
    observer: Option<Box<dyn FnMut() + 'm>>,
}

/// A double block's (image, text) input, kept without graph.
type StreamPair<B> = (Tensor<<B as AutodiffBackend>::InnerBackend, 3>, Tensor<<B as AutodiffBackend>::InnerBackend, 3>);

/// One forward: what its backward needs.
struct Record<B: AutodiffBackend> {
    rope: RopeTable<B>,
    txt_len: usize,
    /// Per double block, its (image, text) input; per single block, its joint input.
    double_inputs: Vec<StreamPair<B>>,
    single_inputs: Vec<Tensor<B::InnerBackend, 3>>,
    /// The head's input: a leaf of the caller's graph.
    head_input: Tensor<B, 3>,
    cond: Cut<B>,
    /// Index of this forward in the tape (dropout seeds).
    call: u64,
}

/// The embedding stage's outputs as the blocks see them: leaves that require grad when the stage
/// trains (their gradients are summed over the blocks, then sent into the stage in one backward),
/// plain detached tensors otherwise.
struct Cut<B: AutodiffBackend> {
    /// `Some` when the stage trains: the stage's own outputs, with their graph (img, txt, cond).
    tracked: Option<(Tensor<B, 3>, Tensor<B, 3>, Conditioning<B>)>,
    leaves: Conditioning<B>,
}

impl<'m, B: AutodiffBackend> BlockCheckpointing<'m, B> {
    /// A tape for the forwards of one loss. `seed` feeds the per-block reseeding that keeps LoRA
    /// dropout masks equal between forward and recompute (unused without dropout).
    pub fn new(model: &'m Flux2Transformer<B>, seed: u64) -> Self {
        Self { model, seed, records: Vec::new(), observer: None }
    }

    /// Calls `f` after every block of the forward and after every recomputed block, before its
    /// backward: where the step's memory peaks. Benchmarks sample the allocator there.
    pub fn observe(mut self, f: impl FnMut() + 'm) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    fn notify(&mut self) {
        if let Some(f) = &mut self.observer {
            f()
        }
    }

    /// [`Flux2Transformer::forward`], keeping only the block inputs; the result is part of an ordinary
    /// graph, whose loss goes to [`Self::backward`] (not `loss.backward()`).
    pub fn forward(
        &mut self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        rope: &RopeTable<B>,
    ) -> Tensor<B, 3> {
        let model = self.model;
        // Leaves are the inputs of the embedding stage's graph only if someone asked for their gradient.
        let inputs_train = hidden_states.is_require_grad() || encoder_hidden_states.is_require_grad();
        model.prefetch_block(0);
        let (img, txt, cond) = model.embed(hidden_states, encoder_hidden_states, timestep, guidance, rope);
        let stage_trains = inputs_train || model.embed_linears().iter().any(|l| l.trains());
        let cut = if stage_trains {
            let leaves = detach_cond(&cond, true);
            Cut { tracked: Some((img.clone(), txt.clone(), cond)), leaves }
        } else {
            Cut { tracked: None, leaves: cond }
        };
        let untracked = detach_cond(&cut.leaves, false);
        let call = self.records.len() as u64;
        let dropout = self.uses_dropout();

        let (txt_len, img_len) = (txt.dims()[1], img.dims()[1]);
        let (mut img, mut txt) = (img.detach(), txt.detach());
        let mut double_inputs = Vec::with_capacity(model.double_blocks.len());
        for (i, block) in model.double_blocks.iter().enumerate() {
            double_inputs.push((img.clone().inner(), txt.clone().inner()));
            self.reseed(dropout, call, i);
            model.prefetch_block(i + 1);
            (img, txt) = block.clone().no_grad().forward(img, txt, &untracked.img_mods, &untracked.txt_mods, rope);
            self.notify();
        }
        let mut h = Tensor::cat(vec![txt, img], 1);
        let mut single_inputs = Vec::with_capacity(model.single_blocks.len());
        for (j, block) in model.single_blocks.iter().enumerate() {
            single_inputs.push(h.clone().inner());
            self.reseed(dropout, call, model.double_blocks.len() + j);
            model.prefetch_block(model.double_blocks.len() + j + 1);
            h = block.clone().no_grad().forward(h, &untracked.single_mod, rope);
            self.notify();
        }
        let head_input = Tensor::from_inner(h.inner()).require_grad();
        let out = model.head(head_input.clone().narrow(1, txt_len, img_len), cut.leaves.temb.clone());
        self.records.push(Record {
            rope: rope.clone(),
            txt_len,
            double_inputs,
            single_inputs,
            head_input,
            cond: cut,
            call,
        });
        out
    }

    /// Back-propagates `loss` through the caller's graph and every recorded forward. Returns the
    /// gradients as `loss.backward()` of an unckeckpointed forward would (parameters only: the
    /// tape's internal leaves are removed).
    pub fn backward(mut self, loss: Tensor<B, 1>) -> B::Gradients {
        let mut grads = loss.backward();
        let dropout = self.uses_dropout();
        let mut notify = self.observer.take();
        let mut notify = || {
            if let Some(f) = &mut notify {
                f()
            }
        };
        for record in std::mem::take(&mut self.records).into_iter().rev() {
            self.model.backward_record(record, &mut grads, dropout, self.seed, &mut notify);
        }
        grads
    }

    fn uses_dropout(&self) -> bool {
        uses_dropout(self.model)
    }

    fn reseed(&self, dropout: bool, call: u64, block: usize) {
        reseed::<B>(&self.model.device(), dropout, self.seed, call, block);
    }
}

/// Whether an active adapter inside the blocks draws dropout masks.
fn uses_dropout<B: AutodiffBackend>(model: &Flux2Transformer<B>) -> bool {
    let blocks =
        model.linears().into_iter().filter(|(p, _)| p.starts_with("double_blocks.") || p.starts_with("single_blocks."));
    blocks.into_iter().any(|(_, l)| l.adapters.iter().any(|a| a.dropout > 0.0 && a.is_active()))
}

/// [`Flux2Transformer::forward`] with all activations kept (one ordinary graph), reseeding the backend
/// before every block as forward number `call` of a tape seeded with `seed` does: a trainer that
/// switches checkpointing on or off draws the same LoRA dropout masks either way.
#[allow(clippy::too_many_arguments)]
pub fn forward_reseeded<B: AutodiffBackend>(
    model: &Flux2Transformer<B>,
    seed: u64,
    call: u64,
    hidden_states: Tensor<B, 3>,
    encoder_hidden_states: Tensor<B, 3>,
    timestep: Tensor<B, 1>,
    guidance: Option<Tensor<B, 1>>,
    rope: &RopeTable<B>,
) -> Tensor<B, 3> {
    let device = model.device();
    let dropout = uses_dropout(model);
    model.forward_hooked(hidden_states, encoder_hidden_states, timestep, guidance, rope, &mut |block| {
        reseed::<B>(&device, dropout, seed, call, block)
    })
}

/// The backend seed block `block` (doubles first, then singles) of forward `call` of a tape seeded
/// with `seed` runs under when LoRA dropout is on: splitmix64 of the three.
pub fn dropout_seed(seed: u64, call: u64, block: usize) -> u64 {
    let mut z = seed ^ (call << 32 | block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn reseed<B: AutodiffBackend>(device: &B::Device, dropout: bool, seed: u64, call: u64, block: usize) {
    if dropout {
        B::seed(device, dropout_seed(seed, call, block));
    }
}

impl<B: AutodiffBackend> Flux2Transformer<B> {
    fn backward_record(
        &self,
        record: Record<B>,
        grads: &mut B::Gradients,
        dropout: bool,
        seed: u64,
        notify: &mut dyn FnMut(),
    ) {
        let Record { rope, txt_len, double_inputs, single_inputs, head_input, cond, call } = record;
        // The prediction did not reach the loss: nothing flows back through this forward.
        let Some(mut upstream) = head_input.grad_remove(grads) else { return };
        let device = self.device();
        let mut cond_grads = CondGrads::default();
        let leaves = &cond.leaves;
        let blocks = self.double_blocks.len() + self.single_blocks.len();
        // Offloaded blocks: the one before is uploaded while this one recomputes and back-propagates.
        let prefetch_before = |index: usize| {
            if let Some(previous) = index.checked_sub(1) {
                self.prefetch_block(previous)
            }
        };
        self.prefetch_block(blocks.saturating_sub(1));

        for (j, (block, input)) in self.single_blocks.iter().zip(single_inputs).enumerate().rev() {
            let h = Tensor::<B, 3>::from_inner(input).require_grad();
            reseed::<B>(&device, dropout, seed, call, self.double_blocks.len() + j);
            prefetch_before(self.double_blocks.len() + j);
            let out = block.forward(h.clone(), &leaves.single_mod, &rope);
            notify();
            let local = (out * Tensor::from_inner(upstream)).sum().backward();
            upstream = h.grad(&local).expect("a single block's output depends on its input (residual)");
            add_parameter_grads(block, &local, grads);
            cond_grads.add(leaves, &local, cond.tracked.is_some());
        }
        let total = upstream.dims()[1];
        let mut txt_up = upstream.clone().narrow(1, 0, txt_len);
        let mut img_up = upstream.narrow(1, txt_len, total - txt_len);

        for (i, (block, (img_in, txt_in))) in self.double_blocks.iter().zip(double_inputs).enumerate().rev() {
            let img = Tensor::<B, 3>::from_inner(img_in).require_grad();
            let txt = Tensor::<B, 3>::from_inner(txt_in).require_grad();
            reseed::<B>(&device, dropout, seed, call, i);
            prefetch_before(i);
            let (img_out, txt_out) = block.forward(img.clone(), txt.clone(), &leaves.img_mods, &leaves.txt_mods, &rope);
            notify();
            let surrogate = (img_out * Tensor::from_inner(img_up)).sum() + (txt_out * Tensor::from_inner(txt_up)).sum();
            let local = surrogate.backward();
            img_up = img.grad(&local).expect("a double block's image output depends on its input (residual)");
            txt_up = txt.grad(&local).expect("a double block's text output depends on its input (residual)");
            add_parameter_grads(block, &local, grads);
            cond_grads.add(leaves, &local, cond.tracked.is_some());
        }

        let Some((img, txt, stage)) = cond.tracked else { return };
        // The head read `temb` through its leaf in the caller's graph.
        if let Some(g) = leaves.temb.grad_remove(grads) {
            cond_grads.temb = Some(match cond_grads.temb.take() {
                Some(acc) => acc + g,
                None => g,
            });
        }
        let mut surrogate = (img * Tensor::from_inner(img_up)).sum() + (txt * Tensor::from_inner(txt_up)).sum();
        for (output, g) in cond_tensors(&stage).into_iter().zip(cond_grads.mods) {
            if let Some(g) = g {
                surrogate = surrogate + (output * Tensor::from_inner(g)).sum();
            }
        }
        if let Some(g) = cond_grads.temb {
            surrogate = surrogate + (stage.temb * Tensor::from_inner(g)).sum();
        }
        let local = surrogate.backward();
        add_parameter_grads(self, &local, grads);
    }
}

/// Gradients of the embedding stage's outputs, summed over the blocks.
struct CondGrads<B: AutodiffBackend> {
    /// In [`cond_tensors`] order.
    mods: Vec<Option<Tensor<B::InnerBackend, 3>>>,
    temb: Option<Tensor<B::InnerBackend, 2>>,
}

impl<B: AutodiffBackend> Default for CondGrads<B> {
    fn default() -> Self {
        Self { mods: vec![None; 15], temb: None }
    }
}

impl<B: AutodiffBackend> CondGrads<B> {
    fn add(&mut self, leaves: &Conditioning<B>, local: &B::Gradients, tracked: bool) {
        if !tracked {
            return;
        }
        for (acc, leaf) in self.mods.iter_mut().zip(cond_tensors(leaves)) {
            if let Some(g) = leaf.grad(local) {
                *acc = Some(match acc.take() {
                    Some(a) => a + g,
                    None => g,
                });
            }
        }
    }
}

/// The 15 modulation tensors: image stream (2 triples), text stream (2), single blocks (1), each
/// triple as (shift, scale, gate).
fn cond_tensors<B: AutodiffBackend>(c: &Conditioning<B>) -> Vec<Tensor<B, 3>> {
    let triple = |m: &ModParams<B>| [m.shift.clone(), m.scale.clone(), m.gate.clone()];
    c.img_mods.iter().chain(&c.txt_mods).chain([&c.single_mod]).flat_map(triple).collect()
}

/// Detached copies of every tensor of `c`, as leaves that require grad when `leaves`.
fn detach_cond<B: AutodiffBackend>(c: &Conditioning<B>, leaves: bool) -> Conditioning<B> {
    let f = |t: Tensor<B, 3>| if leaves { t.detach().require_grad() } else { t.detach() };
    let triple =
        |m: &ModParams<B>| ModParams { shift: f(m.shift.clone()), scale: f(m.scale.clone()), gate: f(m.gate.clone()) };
    let stream = |s: &StreamMods<B>| [triple(&s[0]), triple(&s[1])];
    Conditioning {
        img_mods: stream(&c.img_mods),
        txt_mods: stream(&c.txt_mods),
        single_mod: triple(&c.single_mod),
        temb: if leaves { c.temb.clone().detach().require_grad() } else { c.temb.clone().detach() },
    }
}

/// Adds every parameter gradient of `module` found in `from` to `into`.
fn add_parameter_grads<B: AutodiffBackend, M: Module<B>>(module: &M, from: &B::Gradients, into: &mut B::Gradients) {
    struct Add<'a, B: AutodiffBackend> {
        from: &'a B::Gradients,
        into: &'a mut B::Gradients,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Add<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if let Some(g) = value.grad(self.from) {
                let sum = match value.grad_remove(self.into) {
                    Some(previous) => previous + g,
                    None => g,
                };
                value.grad_replace(self.into, sum);
            }
        }
    }
    module.visit(&mut Add { from, into });
}
