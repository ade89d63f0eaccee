//! Offloaded weights on CUDA ([`crate::offload`]): page-locked host copies, uploaded on a copy stream of
//! this crate's while cubecl's stream computes.
//!
//! Ordering: the destination is a fresh cubecl buffer; cubecl may just have freed it from work still
//! queued on its stream, so the upload waits for cubecl's stream first (one host wait per weight, when
//! the previous block's kernels are already running). The copy then runs beside the current block's
//! compute; [`finish`] waits for it (an event) before cubecl sees the buffer.

use std::any::Any;
use std::sync::Arc;

use burn::tensor::{DType, Shape, TensorData};
use burn_cubecl::cubecl::Runtime;
use burn_cubecl::cubecl::client::ComputeClient;
use burn_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use burn_cubecl::cubecl::server::Handle;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{CudaEvent, PinnedHostSlice};

use super::device::{Buffers, device, wait_for_cubecl};
use crate::offload::OffloadBackend;

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

struct InFlight {
    client: ComputeClient<CudaRuntime>,
    device: CudaDevice,
    handle: Handle,
    shape: Vec<usize>,
    dtype: DType,
    done: CudaEvent,
    /// The destination's resource and the host copy, alive until the copy is done.
    _buffers: Buffers,
    _host: Arc<dyn Any + Send + Sync>,
}

fn pin(data: &TensorData, cuda: &CudaDevice) -> Result<Arc<dyn Any + Send + Sync>, String> {
    let bytes = data.as_bytes();
    let guard = device(cuda.index);
    let dev = guard.lock();
    let failed = |e| {
        format!(
            "cannot lock {:.2} GiB of host memory for an offloaded weight ({e}): the offloaded share needs that much free RAM; lower layer_offloading_transformer_percent or use a smaller qtype",
            bytes.len() as f64 / (1u64 << 30) as f64
        )
    };
    // SAFETY: the buffer is filled completely right below, before anyone reads it.
    let mut pinned: PinnedHostSlice<u8> =
        unsafe { dev.ctx.alloc_pinned_with_flags(bytes.len().max(1), 0) }.map_err(failed)?;
    let dst = pinned.as_mut_ptr().map_err(failed)?;
    // SAFETY: `dst` holds at least `bytes.len()` bytes and does not overlap `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    Ok(Arc::new(pinned))
}

fn start(host: &Arc<dyn Any + Send + Sync>, shape: &[usize], dtype: DType, cuda: &CudaDevice) -> Box<dyn Any + Send> {
    let pinned = host.downcast_ref::<PinnedHostSlice<u8>>().expect("offloaded weights are pinned by `pin`");
    let n = shape.iter().product::<usize>() * dtype.size();
    let client = CudaRuntime::client(cuda);
    let handle = client.empty(n.max(1));
    let mut buffers = Buffers::new();
    let dst = buffers.handle_ptr(&client, handle.clone());
    wait_for_cubecl(&client);
    let guard = device(cuda.index);
    let dev = guard.lock();
    let src = pinned.as_ptr().unwrap_or_else(|e| panic!("page-locked host memory: {e}"));
    // SAFETY: `src` holds `n` bytes (the part's size) and lives in `_host` until the copy is done;
    // `dst` is a buffer of `n` bytes held in `_buffers`.
    unsafe {
        let src = std::slice::from_raw_parts(src, n);
        cudarc::driver::result::memcpy_htod_async(dst, src, dev.copy_stream.cu_stream())
    }
    .unwrap_or_else(|e| panic!("uploading an offloaded weight ({n} bytes): {e}"));
    let done = dev.copy_stream.record_event(None).unwrap_or_else(|e| panic!("CUDA event: {e}"));
    drop(dev);
    Box::new(InFlight {
        client,
        device: cuda.clone(),
        handle,
        shape: shape.to_vec(),
        dtype,
        done,
        _buffers: buffers,
        _host: host.clone(),
    })
}

fn finish(upload: Box<dyn Any + Send>) -> T {
    let f = upload.downcast::<InFlight>().unwrap_or_else(|_| panic!("not an upload of cuda::offload"));
    f.done.synchronize().unwrap_or_else(|e| panic!("waiting for an offloaded weight's upload: {e}"));
    CubeTensor::new_contiguous(
        f.client.clone(),
        f.device.clone(),
        Shape::from(f.shape.clone()),
        f.handle.clone(),
        f.dtype,
    )
}

impl OffloadBackend for Cuda {
    fn pin(data: &TensorData, device: &CudaDevice) -> Result<Arc<dyn Any + Send + Sync>, String> {
        pin(data, device)
    }
    fn start_upload(
        pinned: &Arc<dyn Any + Send + Sync>,
        shape: &[usize],
        dtype: DType,
        device: &CudaDevice,
    ) -> Box<dyn Any + Send> {
        start(pinned, shape, dtype, device)
    }
    fn finish_float(upload: Box<dyn Any + Send>) -> T {
        finish(upload)
    }
    fn finish_int(upload: Box<dyn Any + Send>) -> T {
        finish(upload)
    }
}
