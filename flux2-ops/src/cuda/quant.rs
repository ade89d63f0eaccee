//! Quantizing and dequantizing base weights on CUDA: one NVRTC kernel each (`kernels.cu`), on this
//! crate's stream, with the arithmetic of the host quantizer (`quant/quantizer.rs`).

use burn::tensor::DType;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::{Buffers, contiguous, device, empty, suffix, wait_for_cubecl};
use crate::quant::QType;
use crate::quant::device::{DeviceQuantized, QuantBackend, QuantLayout};

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

/// The kernels' suffix; callers check the dtype (`quant::device`).
fn kernel_suffix(dtype: DType) -> &'static str {
    suffix(dtype).unwrap_or_else(|| panic!("quantized weights on CUDA: unsupported dtype {dtype:?} (callers check)"))
}

/// The kernels' `kind` argument.
fn kind(qtype: QType) -> i32 {
    match qtype {
        QType::QFloat8 => 0,
        QType::Float8 => 1,
        QType::QInt8 => 2,
        QType::Int8 => 3,
        QType::UInt(_) => 4,
    }
}

fn int(x: usize, what: &str) -> i32 {
    i32::try_from(x).unwrap_or_else(|_| panic!("quantized weight: {what} {x} over i32"))
}

fn quantize(weight: T, l: QuantLayout) -> DeviceQuantized<Cuda> {
    let weight = contiguous(weight);
    let (out, inp, groups) = (l.out_features, l.in_features, l.groups());
    let code_cols = if l.packed { inp / 2 } else { inp };
    let codes = empty(&weight, &[out, code_cols], DType::U8);
    let scales = empty(&weight, &[out, groups], DType::F32);
    let zeros = empty(&weight, &[out, groups], DType::F32);
    let mut buf = Buffers::new();
    let (wp, cp, sp, zp) = (buf.ptr(&weight), buf.ptr(&codes), buf.ptr(&scales), buf.ptr(&zeros));
    wait_for_cubecl(&weight.client);
    let guard = device(weight.device.index);
    let mut dev = guard.lock();
    let kernel = dev.kernel(&format!("quantize_rows_{}", kernel_suffix(weight.dtype)));
    let (in_i, group_i, groups_i) = (int(inp, "width"), int(l.group, "group"), int(groups, "groups"));
    let (kind_i, bits_i, packed_i) = (kind(l.qtype), i32::from(l.qtype.bits()), i32::from(l.packed));
    let cfg = LaunchConfig {
        grid_dim: (groups as u32, u32::try_from(out).unwrap_or_else(|_| panic!("{out} rows")), 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    if out > 0 && groups > 0 {
        let mut a = dev.stream.launch_builder(&kernel);
        a.arg(&wp).arg(&cp).arg(&sp).arg(&zp).arg(&in_i).arg(&group_i).arg(&groups_i);
        a.arg(&kind_i).arg(&bits_i).arg(&packed_i);
        // SAFETY: `weight` holds out * in values, `codes` out * code_cols bytes, `scales`/`zeros` out * groups
        // f32; every buffer is held in `buf` until the stream sync below.
        unsafe { a.launch(cfg) }.unwrap_or_else(|e| panic!("quantize_rows launch: {e}"));
    }
    dev.synchronize();
    drop(dev);
    drop(buf);
    (codes, scales, matches!(l.qtype, QType::UInt(_)).then_some(zeros))
}

fn dequantize(codes: T, scales: T, zeros: Option<T>, l: QuantLayout) -> T {
    let (codes, scales) = (contiguous(codes), contiguous(scales));
    let zeros = zeros.map(contiguous);
    let dtype = scales.dtype;
    let (out, inp) = (l.out_features, l.in_features);
    let weight = empty(&scales, &[out, inp], dtype);
    let mut buf = Buffers::new();
    let (cp, sp, wp) = (buf.ptr(&codes), buf.ptr(&scales), buf.ptr(&weight));
    // The dequantizer reads zero points only for the unsigned types; others get the scales' address.
    let zp = match &zeros {
        Some(z) => buf.ptr(z),
        None => sp,
    };
    wait_for_cubecl(&scales.client);
    let guard = device(scales.device.index);
    let mut dev = guard.lock();
    let kernel = dev.kernel(&format!("dequantize_{}", kernel_suffix(dtype)));
    let n = (out * inp) as i64;
    let (in_i, group_i, groups_i) = (int(inp, "width"), int(l.group, "group"), int(l.groups(), "groups"));
    let (kind_i, packed_i) = (kind(l.qtype), i32::from(l.packed));
    // Grid-stride: enough blocks to fill the device, no more than the elements need.
    let blocks = (out * inp).div_ceil(256).clamp(1, 65_536) as u32;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    if n > 0 {
        let mut a = dev.stream.launch_builder(&kernel);
        a.arg(&cp).arg(&sp).arg(&zp).arg(&wp).arg(&n).arg(&in_i).arg(&group_i).arg(&groups_i);
        a.arg(&kind_i).arg(&packed_i);
        // SAFETY: `codes` covers out * in codes (packed or not, as `l` says), `scales`/`zeros` out * groups
        // values, `weight` out * in; all held in `buf` until the sync below.
        unsafe { a.launch(cfg) }.unwrap_or_else(|e| panic!("dequantize launch: {e}"));
    }
    dev.synchronize();
    drop(dev);
    drop(buf);
    weight
}

impl QuantBackend for Cuda {
    fn quantize_weight(weight: T, layout: QuantLayout) -> DeviceQuantized<Cuda> {
        quantize(weight, layout)
    }

    fn dequantize_weight(codes: T, scales: T, zeros: Option<T>, layout: QuantLayout) -> T {
        dequantize(codes, scales, zeros, layout)
    }
}
