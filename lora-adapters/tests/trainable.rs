//! The trainable tensor list (`lora_adapters::trainable`): one adapter's factors only, keys and shapes in
//! the same order as values and gradients, written back with their ids kept, and lists of another
//! layout rejected by name.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use common::tiny;
use flux2_dit::{Flux2Transformer, PositionIds, RandomSource};
use lora_adapters::{Error, LoraConfig, Targets, inject, trainable};

type A = Autodiff<Flex>;

#[test]
fn walks_one_adapter_in_a_stable_order() {
    let device = Default::default();
    let mut model =
        Flux2Transformer::<A>::from_source(&tiny(1, 1), &mut RandomSource::new(0), burn::tensor::DType::F32, &device)
            .unwrap();
    let config = LoraConfig { rank: 2, alpha: 2.0, targets: Targets::Blocks, ..Default::default() };
    inject(&mut model, "mine", &config).unwrap();
    inject(&mut model, "other", &LoraConfig { rank: 3, ..config.clone() }).unwrap();

    let keys = trainable::keys(&model, "mine");
    let shapes = trainable::shapes(&model, "mine");
    let values = trainable::values(&model, "mine");
    assert_eq!(keys.len(), shapes.len());
    assert_eq!(values.iter().map(|v| v.dims()).collect::<Vec<_>>(), shapes);
    assert!(keys[0].ends_with(".lora_A") && keys[1].ends_with(".lora_B"), "{keys:?}");
    // "other" has rank 3: none of its factors is in "mine"'s list.
    assert!(shapes.chunks(2).all(|ab| ab[0][0] == 2 && ab[1][1] == 2), "{shapes:?}");

    // Gradients come in the same order and shapes; written-back values stay trainable.
    let c = &model.config;
    let x = Tensor::<A, 3>::ones([1, 4, c.in_channels], &device);
    let t = Tensor::<A, 3>::ones([1, 2, c.joint_attention_dim], &device);
    let rope = model.rope(&PositionIds::text(2), &PositionIds::image(2, 2));
    let s = Tensor::<A, 1>::from_floats([0.5], &device);
    let loss = model.forward(x.clone(), t.clone(), s.clone(), Some(s.clone()), &rope).square().sum();
    let grads = trainable::gradients(&model, "mine", &loss.backward());
    assert_eq!(grads.iter().map(|g| g.dims()).collect::<Vec<_>>(), shapes);
    let moved: Vec<_> = values.iter().map(|v| v.clone().add_scalar(0.5)).collect();
    trainable::set_values(&mut model, "mine", moved).unwrap();
    let loss = model.forward(x, t, s.clone(), Some(s), &rope).square().sum();
    let again = trainable::gradients(&model, "mine", &loss.backward());
    assert!(again.iter().any(|g| g.clone().abs().sum().into_scalar() > 0.0), "the new values are trainable");

    // A list of another layout is an error naming the adapter.
    let err = trainable::set_values(&mut model, "mine", values[1..].to_vec()).unwrap_err();
    assert!(matches!(&err, Error::TrainableCount { adapter, .. } if adapter == "mine"), "{err}");
    let mut swapped = values.clone();
    swapped.swap(0, 1);
    let err = trainable::set_values(&mut model, "mine", swapped).unwrap_err();
    assert!(matches!(err, Error::TrainableShape { .. }), "{err}");
}
