//! Quantized base weights on a device against the host quantizer (`flux2_ops::quant::quantize`, whose
//! codes equal optimum-quanto's and torchao's on the committed fixtures): for every qtype and weight dtype,
//! the device's codes, scales and zero points must equal the host's bit for bit, and its dequantized
//! weight must equal the host dequantization rounded to the dtype. Then the throughput of both kernels
//! on the largest FLUX.2 [dev] layer (the single blocks' fused input projection, 55296 x 6144).
//!
//! ```sh
//! cargo run --release --features cuda -p examples --example quant_check -- --device cuda:0
//! cargo run --release -p examples --example quant_check -- --device cpu   # the generic path
//! ```
//! On CUDA the kernels of `flux2-ops/src/cuda/kernels.cu` run; on the CPU the generic path (host
//! quantizer, Burn-op dequantization). Exits with status 1 on any mismatch.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Int, Tensor};
use flux2_ops::quant::{Arith, QType, QuantizedWeight, quantize};

fn bytes<B: Backend>(t: &Tensor<B, 2, Int>) -> Vec<u8> {
    t.clone().into_data().convert::<u8>().to_vec().expect("u8 codes")
}

fn floats<B: Backend>(t: &Tensor<B, 2>) -> Vec<f32> {
    t.clone().cast(DType::F32).into_data().to_vec().expect("f32 values")
}

/// One weight: returns whether the device matches the host.
fn case<B: Backend>(device: &B::Device, shape: [usize; 2], dtype: DType, qtype: QType) -> bool {
    let [out, inp] = shape;
    let mut w = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.05), device);
    if out > 2 {
        // An all-zero row (quanto divides by a zero scale there) and a row with one large outlier.
        let zeros = Tensor::<B, 2>::zeros([1, inp], device);
        w = w.slice_assign([1..2, 0..inp], zeros);
        let big = Tensor::<B, 2>::full([1, 1], 3.0, device);
        w = w.slice_assign([2..3, 0..1], big);
    }
    let w = w.cast(dtype);
    let arith = match dtype {
        DType::BF16 => Arith::Bf16,
        DType::F16 => Arith::F16,
        _ => Arith::F32,
    };
    let host = quantize(&floats(&w), shape, qtype, arith);
    let reference = QuantizedWeight::<B>::from_host(&host, dtype, device);
    let ours = match QuantizedWeight::quantize(w, qtype) {
        Ok(q) => q,
        Err(e) => {
            println!("FAIL {qtype} {dtype:?} {shape:?}: {e}");
            return false;
        }
    };
    let mut ok = true;
    let mut check = |what: &str, same: bool| {
        if !same {
            println!("FAIL {qtype} {dtype:?} {shape:?}: {what} differ from the host quantizer's");
            ok = false;
        }
    };
    check("codes", bytes(&ours.codes) == bytes(&reference.codes));
    check("scales", floats(&ours.scales) == floats(&reference.scales));
    check("zero points", ours.zero_points.as_ref().map(floats) == reference.zero_points.as_ref().map(|z| floats(z)));
    let want: Vec<f32> = {
        // NaN codes (a float16 all-zero row under torchao's 1 / eps overflows) read as 0 on every path.
        let host_values: Vec<f32> = host.dequantize().into_iter().map(|v| if v.is_nan() { 0.0 } else { v }).collect();
        let t =
            Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(host_values, [out * inp]), (device, DType::F32));
        floats(&t.cast(dtype).reshape([out, inp]))
    };
    let got = floats(&ours.dequantize(dtype));
    let same = got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        if let Some((i, (a, b))) = got.iter().zip(&want).enumerate().find(|(_, (a, b))| a.to_bits() != b.to_bits()) {
            println!("  first difference at {i}: {a:e} vs host {b:e}");
        }
    }
    check("dequantized weights", same);
    if ok {
        println!("PASS {qtype} {dtype:?} {shape:?}");
    }
    ok
}

fn run<B: Backend>(device: &B::Device, timing: bool) -> bool {
    let qtypes =
        [QType::QFloat8, QType::Float8, QType::QInt8, QType::Int8, QType::UInt(8), QType::UInt(4), QType::UInt(3)];
    let mut ok = true;
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for qtype in qtypes {
            // Per-row and grouped layouts, packed and unpacked, a partial block of threads, an odd width.
            for shape in [[96, 192], [40, 6144], [33, 130], [7, 129]] {
                ok &= case::<B>(device, shape, dtype, qtype);
            }
        }
    }
    if timing {
        let shape = [55_296, 6_144];
        let w = Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.02), device).cast(DType::BF16);
        for qtype in [QType::QFloat8, QType::UInt(4)] {
            let _ = B::sync(device);
            let t = Instant::now();
            let q = QuantizedWeight::quantize(w.clone(), qtype).expect("quantize");
            let _ = B::sync(device);
            let quantize_ms = t.elapsed().as_secs_f64() * 1e3;
            let _ = q.dequantize(DType::BF16);
            let _ = B::sync(device);
            let t = Instant::now();
            let reps = 10;
            for _ in 0..reps {
                let _ = q.dequantize(DType::BF16);
            }
            let _ = B::sync(device);
            let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let gb = (shape[0] * shape[1]) as f64 * (2.0 + qtype.bytes_per_weight(shape[1])) / 1e9;
            println!(
                "timing {qtype} {shape:?} bf16: quantize {quantize_ms:.1} ms, dequantize {ms:.2} ms ({:.0} GB/s)",
                gb / (ms / 1e3)
            );
        }
    }
    ok
}

fn main() {
    let device = std::env::args().skip_while(|a| a != "--device").nth(1).unwrap_or_else(|| "cpu".into());
    let ok = if device == "cpu" { run::<burn::backend::Flex>(&Default::default(), false) } else { run_cuda(&device) };
    if !ok {
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
fn run_cuda(device: &str) -> bool {
    let Some(index) = device.strip_prefix("cuda:").and_then(|i| i.parse().ok()) else {
        eprintln!("--device {device}: expected cpu or cuda:N");
        std::process::exit(2);
    };
    type B = burn::backend::Cuda;
    if !flux2_ops::quant::device::is_registered::<B>()
        || !flux2_ops::quant::device::is_registered::<burn::backend::Autodiff<B>>()
    {
        println!("FAIL the quantization kernels are not registered for Cuda / Autodiff<Cuda>");
        return false;
    }
    run::<B>(&burn::backend::cuda::CudaDevice::new(index), true)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(device: &str) -> bool {
    eprintln!("--device {device}: this build has no CUDA (build with --features cuda)");
    std::process::exit(2);
}
