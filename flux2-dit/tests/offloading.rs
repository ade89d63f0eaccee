//! Layer offloading (`BaseStorage::offload`) moves where the base weights live, not what the model
//! computes: a model whose first blocks are in host memory gives the resident model's prediction, loss
//! and every LoRA gradient bit for bit, through the plain forward and the checkpointed step, dense and
//! quantized. On the CPU backends the uploads are plain copies (CUDA's page-locked copy stream is
//! checked on the device by `bench_train_step --offload`).

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use flux2_dit::{BaseStorage, BlockCheckpointing, Flux2Transformer, PositionIds, RandomSource};
use flux2_ops::quant::QType;
use lora_adapters::{LoraConfig, Targets, inject};

type B = Autodiff<Flex>;

use flux2_test_support::tiny_dit::tiny_config as tiny;

fn model(storage: BaseStorage) -> Flux2Transformer<B> {
    let device = Default::default();
    let mut m =
        Flux2Transformer::<B>::from_source_with(&tiny(), &mut RandomSource::new(3), DType::F32, storage, &device)
            .unwrap();
    inject(&mut m, "off", &LoraConfig { rank: 4, alpha: 4.0, dropout: 0.0, targets: Targets::Blocks, seed: 5 })
        .unwrap();
    // B starts at zero: give every up-factor values so that all gradients are non-trivial.
    for (_, l) in m.linears_mut() {
        for a in &mut l.adapters {
            let up = a.up.val();
            let values = Tensor::<B, 2>::full(up.dims(), 0.05, &device);
            a.up = burn::module::Param::initialized(a.up.id, values.require_grad());
        }
    }
    m
}

/// (prediction, checkpointed loss, every factor gradient) of one step.
fn step(m: &Flux2Transformer<B>) -> (Vec<f32>, f32, Vec<Vec<f32>>) {
    let device = Default::default();
    <Flex as Backend>::seed(&device, 7);
    let c = tiny();
    let normal = Distribution::Normal(0.0, 1.0);
    let (h, w, txt) = (3, 4, 5);
    let rope = m.rope(&PositionIds::text(txt), &PositionIds::image(h, w));
    let x = Tensor::<B, 3>::random([1, h * w, c.in_channels], normal, &device);
    let ctx = Tensor::<B, 3>::random([1, txt, c.joint_attention_dim], normal, &device);
    let t = Tensor::<B, 1>::from_data(TensorData::new(vec![0.4f32], [1]), &device);
    let g = Tensor::<B, 1>::from_data(TensorData::new(vec![3.0f32], [1]), &device);
    let plain = m.forward(x.clone(), ctx.clone(), t.clone(), Some(g.clone()), &rope);
    let plain: Vec<f32> = plain.into_data().to_vec().unwrap();
    let mut tape = BlockCheckpointing::new(m, 1);
    let loss = tape.forward(x, ctx, t, Some(g), &rope).square().mean();
    let value = loss.clone().into_scalar();
    let grads = tape.backward(loss);
    let mut factor_grads = Vec::new();
    for (path, l) in m.linears() {
        for a in &l.adapters {
            for p in [&a.down, &a.up] {
                let grad = p.val().grad(&grads).unwrap_or_else(|| panic!("{path}: no gradient"));
                factor_grads.push(grad.into_data().to_vec().unwrap());
            }
        }
    }
    (plain, value, factor_grads)
}

#[test]
fn offloaded_blocks_compute_exactly_what_resident_ones_do() {
    for quantize in [None, Some(QType::QFloat8), Some(QType::UInt(4))] {
        let resident = model(BaseStorage::quantized(quantize));
        let offloaded = model(BaseStorage { quantize, offload: 0.6 });
        let r = offloaded.storage_report();
        assert_eq!((r.offloaded_blocks, r.blocks), (3, 5), "{quantize:?}: the first 3 of 5 blocks");
        assert!(offloaded.double_blocks[1].img_attn.qkv.offloaded.is_some());
        assert!(offloaded.single_blocks[0].linear2.offloaded.is_some());
        assert!(offloaded.single_blocks[1].linear1.offloaded.is_none());
        assert!(offloaded.img_in.offloaded.is_none(), "embedders stay resident");
        assert!(r.host_bytes > 0 && r.device_bytes > 0 && !r.pinned, "{r:?}");
        assert_eq!(resident.storage_report().host_bytes, 0);
        let (want, got) = (step(&resident), step(&offloaded));
        assert_eq!(got.0, want.0, "{quantize:?}: prediction");
        assert_eq!(got.1, want.1, "{quantize:?}: loss");
        assert_eq!(got.2, want.2, "{quantize:?}: LoRA gradients");
        assert!(want.2.iter().all(|g| g.iter().any(|v| *v != 0.0)), "every gradient is non-trivial");
    }
}

#[test]
fn offloaded_layers_refuse_what_needs_their_weight_on_the_device() {
    let mut m = model(BaseStorage { quantize: None, offload: 1.0 });
    let e = m.double_blocks[0].img_attn.qkv.clone().quantize(QType::QFloat8).map(|_| ()).unwrap_err();
    assert!(e.contains("offloaded"), "{e}");
    let e = lora_adapters::merge(&mut m, "off").map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("offloaded"), "{e}");
}
