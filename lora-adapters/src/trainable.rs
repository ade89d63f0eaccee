//! The trainable tensors of one named adapter, as a flat ordered list: its keys, shapes, values,
//! gradients, and writing updated values back.
//!
//! Why here: an optimizer works on a list of plain tensors, not on a model. Whoever trains an adapter
//! (the `flow-train` trainer, the training-step benchmark) must walk the same factors in the same order
//! every step, so optimizer state, EMA copies and checkpoints line up across steps and runs. That order
//! is a property of the adapter (the model's Linear order, A then B per layer), so the walk lives with
//! the rest of the LoRA concept, once, instead of in every training loop.
//!
//! Values and gradients are returned on the inner (non-autodiff) backend: the update is plain tensor
//! math outside the autodiff graph, and [`set_values`] puts the results back as fresh leaves that
//! require gradients again, keeping each parameter's id (so Burn's gradient lookup keeps working).

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use flux2_dit::{Flux2Transformer, LowRankAdapter};

use crate::error::{Error, Result};

/// The adapter's layers in the model's Linear order, each with its module path.
fn layers<'m, B: Backend>(model: &'m Flux2Transformer<B>, adapter: &str) -> Vec<(String, &'m LowRankAdapter<B>)> {
    model
        .linears()
        .into_iter()
        .flat_map(|(path, l)| l.adapters.iter().filter(|a| a.name == adapter).map(move |a| (path.clone(), a)))
        .collect()
}

/// Keys of the trainable tensors, `<BFL module>.lora_A` / `.lora_B`, in list order (checkpoints store
/// them to check that a saved state belongs to the same adapter layout).
pub fn keys<B: Backend>(model: &Flux2Transformer<B>, adapter: &str) -> Vec<String> {
    layers(model, adapter)
        .into_iter()
        .flat_map(|(path, _)| [format!("{path}.lora_A"), format!("{path}.lora_B")])
        .collect()
}

/// Shapes of the trainable tensors in list order (what an optimizer allocates its state for).
pub fn shapes<B: Backend>(model: &Flux2Transformer<B>, adapter: &str) -> Vec<[usize; 2]> {
    layers(model, adapter).into_iter().flat_map(|(_, a)| [a.down.val().dims(), a.up.val().dims()]).collect()
}

/// Current values on the inner backend (no autodiff graph), in list order.
pub fn values<B: AutodiffBackend>(model: &Flux2Transformer<B>, adapter: &str) -> Vec<Tensor<B::InnerBackend, 2>> {
    layers(model, adapter).into_iter().flat_map(|(_, a)| [a.down.val().inner(), a.up.val().inner()]).collect()
}

/// Gradients of the factors after `backward()`, in list order. A factor without gradient (its layer
/// took no part in the loss) gets zeros, so an optimizer always sees the full, stable list it was built
/// for.
pub fn gradients<B: AutodiffBackend>(
    model: &Flux2Transformer<B>,
    adapter: &str,
    grads: &B::Gradients,
) -> Vec<Tensor<B::InnerBackend, 2>> {
    let grad = |p: &Param<Tensor<B, 2>>| {
        let value = p.val();
        value.grad(grads).unwrap_or_else(|| value.inner().zeros_like())
    };
    layers(model, adapter).into_iter().flat_map(|(_, a)| [grad(&a.down), grad(&a.up)]).collect()
}

/// Writes new values (list order) back as trainable parameters, keeping their ids. Checks count and
/// shapes first, so a list from another adapter layout (a stale checkpoint) is an error, not a
/// silently mismatched model.
pub fn set_values<B: AutodiffBackend>(
    model: &mut Flux2Transformer<B>,
    adapter: &str,
    values: Vec<Tensor<B::InnerBackend, 2>>,
) -> Result<()> {
    let expected = shapes(model, adapter);
    if values.len() != expected.len() {
        return Err(Error::TrainableCount {
            adapter: adapter.to_string(),
            given: values.len(),
            expected: expected.len(),
        });
    }
    if let Some((given, expected)) = values.iter().map(|v| v.dims()).zip(expected).find(|(g, e)| g != e) {
        return Err(Error::TrainableShape { adapter: adapter.to_string(), given, expected });
    }
    let mut values = values.into_iter();
    for (_, linear) in model.linears_mut() {
        for a in linear.adapters.iter_mut().filter(|a| a.name == adapter) {
            for p in [&mut a.down, &mut a.up] {
                // Count checked above: every factor has its value.
                if let Some(v) = values.next() {
                    *p = Param::initialized(p.id, Tensor::from_inner(v).require_grad());
                }
            }
        }
    }
    Ok(())
}
