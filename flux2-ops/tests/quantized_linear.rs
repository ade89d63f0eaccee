//! Quantized base weights on the device (CPU backend): the device dequantization equals the host one
//! for every type (packed 4-bit codes included), and a quantized Linear trains its adapters as a dense
//! one does, with no gradient to the base.

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::{DType, Tensor, TensorData};
use flux2_ops::quant::{Arith, QType, QuantizedWeight, quantize};
use flux2_ops::{AdapterSwitch, Linear, LowRankAdapter, Rng};

type B = Flex;
type AD = Autodiff<Flex>;

fn random(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| half::bf16::from_f32(rng.normal() as f32 * std).to_f32()).collect()
}

const TYPES: [QType; 7] =
    [QType::QFloat8, QType::Float8, QType::QInt8, QType::Int8, QType::UInt(8), QType::UInt(4), QType::UInt(3)];

#[test]
fn device_dequantization_equals_the_host_one() {
    let (out, inp) = (24, 128);
    let w = random(&mut Rng::new(1), out * inp, 0.05);
    let device = Default::default();
    for qtype in TYPES {
        let host = quantize(&w, [out, inp], qtype, Arith::Bf16);
        let q = QuantizedWeight::<B>::from_host(&host, DType::BF16, &device);
        assert_eq!(q.packed, qtype.bits() <= 4, "{qtype}");
        let got: Vec<f32> = q.dequantize(DType::F32).into_data().to_vec().expect("f32");
        // The host values rounded to bf16 as the reference's bf16 dequantization rounds them.
        let want: Vec<f32> = host.dequantize().iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        let got_bf16: Vec<f32> = got.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        assert_eq!(got_bf16, want, "{qtype}");
    }
}

fn linear<Bk: burn::tensor::backend::Backend>(w: &[f32], out: usize, inp: usize, rank: usize) -> Linear<Bk> {
    let device = Default::default();
    let mut rng = Rng::new(9);
    let mut layer = Linear::<Bk>::new(Tensor::from_data(TensorData::new(w.to_vec(), [out, inp]), &device));
    let down = Tensor::from_data(TensorData::new(random(&mut rng, rank * inp, 0.1), [rank, inp]), &device);
    let up = Tensor::from_data(TensorData::new(random(&mut rng, out * rank, 0.1), [out, rank]), &device);
    layer.adapters.push(LowRankAdapter {
        down: Param::from_tensor(down),
        up: Param::from_tensor(up),
        scale: 1.0,
        dropout: 0.0,
        merged: false,
        merged_factor: 0.0,
        name: "t".into(),
        switch: Arc::new(AdapterSwitch::default()).clone(),
    });
    layer.adapters[0].switch.set_enabled(true);
    layer.adapters[0].switch.set_multiplier(1.0);
    layer
}

#[test]
fn a_quantized_base_trains_its_adapters_like_the_dequantized_dense_layer() {
    let (out, inp, rank) = (16, 64, 4);
    let w = random(&mut Rng::new(2), out * inp, 0.05);
    let device = Default::default();
    let x = Tensor::<AD, 2>::from_data(TensorData::new(random(&mut Rng::new(3), 5 * inp, 1.0), [5, inp]), &device)
        .require_grad();
    assert!(flux2_ops::quant::product::is_registered::<AD>(), "the quantized product op serves Autodiff<Flex>");
    for qtype in [QType::QFloat8, QType::Int8, QType::UInt(4)] {
        let quantized = linear::<AD>(&w, out, inp, rank).quantize(qtype).expect("frozen base");
        assert_eq!((quantized.out_features(), quantized.in_features()), (out, inp));
        assert_eq!(quantized.weight.val().dims(), [1, 1], "the dense weight is freed");
        // The dense twin holds exactly the dequantized base.
        let base: Vec<f32> = quantized.base_weight().into_data().to_vec().expect("f32");
        let dense = linear::<AD>(&base, out, inp, rank);
        let grads_of = |layer: &Linear<AD>| {
            let y = layer.forward(x.clone());
            let loss = y.clone().powi_scalar(2).sum();
            let grads = loss.backward();
            let g = |p: &Param<Tensor<AD, 2>>| -> Vec<f32> {
                p.val().grad(&grads).expect("adapter gradient").into_data().to_vec().expect("f32")
            };
            let out: Vec<f32> = y.into_data().to_vec().expect("f32");
            let dx: Vec<f32> = x.grad(&grads).expect("input gradient").into_data().to_vec().expect("f32");
            let no_base_grad = layer.weight.val().grad(&grads).is_none();
            (out, g(&layer.adapters[0].down), g(&layer.adapters[0].up), dx, no_base_grad)
        };
        let (yq, dq, uq, xq, no_base_grad) = grads_of(&quantized);
        let (yd, dd, ud, xd, _) = grads_of(&dense);
        assert!(no_base_grad, "{qtype}: the quantized base gets no gradient");
        let pairs = [(&yq, &yd, "output"), (&dq, &dd, "down grad"), (&uq, &ud, "up grad"), (&xq, &xd, "input grad")];
        for (a, b, what) in pairs {
            let err = flux2_ops::relative_error_slices(a, b).expect("same length");
            assert!(err < 1e-6, "{qtype} {what}: {err}");
        }
        // And close to the unquantized layer (quantization error only).
        let exact: Vec<f32> = linear::<AD>(&w, out, inp, rank).forward(x.clone()).into_data().to_vec().expect("f32");
        let err = flux2_ops::relative_error_slices(&yq, &exact).expect("same length");
        assert!(err < 0.1, "{qtype}: {err}");
        // Offloaded (host copy, uploaded per use): the same output and gradients, bit for bit.
        let offloaded = quantized.clone().offload().expect("frozen base");
        let (yo, dqo, uqo, xo, _) = grads_of(&offloaded);
        assert_eq!((yo, dqo, uqo, xo), (yq.clone(), dq.clone(), uq.clone(), xq.clone()), "{qtype}: offloaded");
        assert!(quantized.quantize(QType::Int8).is_err(), "quantizing twice is refused");
    }
}
