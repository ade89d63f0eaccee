//! One CUDA context, stream, cuBLAS handle and kernel module per device; device pointers, contiguous
//! copies and fresh outputs of Burn tensors for the kernels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::cubecl::server::Handle;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

/// The CUDA source of this crate's kernels, compiled with NVRTC on first use.
const KERNELS: &str = include_str!("kernels.cu");

/// The one-kernel attention ([`super::flash`]): tensor-core `mma.sync`, so compiled for compute 8.0 (the
/// driver translates the PTX for newer cards) and used only on cards of compute capability 8.0 or later.
const FLASH: &str = include_str!("flash.cu");

pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Uploads of offloaded weights ([`crate::offload`]), beside the compute.
    pub copy_stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    module: Option<Arc<CudaModule>>,
    flash: Option<Arc<CudaModule>>,
    /// (major, minor) compute capability.
    pub capability: (i32, i32),
}

impl Device {
    /// A kernel of `kernels.cu` by name (the module is compiled once per device).
    pub fn kernel(&mut self, name: &str) -> CudaFunction {
        let ctx = &self.ctx;
        let module = self.module.get_or_insert_with(|| {
            let ptx = cudarc::nvrtc::compile_ptx(KERNELS).unwrap_or_else(|e| panic!("NVRTC: flux2-ops kernels: {e}"));
            ctx.load_module(ptx).unwrap_or_else(|e| panic!("loading flux2-ops kernels: {e}"))
        });
        module.load_function(name).unwrap_or_else(|e| panic!("kernel {name}: {e}"))
    }

    /// A kernel of `flash.cu` by name; callers check [`Self::capability`] first.
    pub fn flash_kernel(&mut self, name: &str) -> CudaFunction {
        let ctx = &self.ctx;
        let module = self.flash.get_or_insert_with(|| {
            let opts = cudarc::nvrtc::CompileOptions { arch: Some("compute_80"), ..Default::default() };
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(FLASH, opts)
                .unwrap_or_else(|e| panic!("NVRTC: flux2-ops flash attention: {e}"));
            ctx.load_module(ptx).unwrap_or_else(|e| panic!("loading flux2-ops flash attention: {e}"))
        });
        module.load_function(name).unwrap_or_else(|e| panic!("kernel {name}: {e}"))
    }

    /// Waits for this device's own stream.
    pub fn synchronize(&self) {
        self.stream.synchronize().unwrap_or_else(|e| panic!("CUDA stream sync: {e}"));
    }
}

type Shared = Arc<Mutex<Device>>;

/// The device state for `ordinal`, locked (cuBLAS handles are not safe for concurrent use), with its
/// context bound to this thread.
pub(crate) fn device(ordinal: usize) -> DeviceGuard {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Shared>>> = OnceLock::new();
    let shared = {
        let mut devices = DEVICES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        devices.entry(ordinal).or_insert_with(|| Arc::new(Mutex::new(open(ordinal)))).clone()
    };
    DeviceGuard { shared }
}

fn open(ordinal: usize) -> Device {
    // `CudaContext::new` retains the device's primary context, the one cubecl uses.
    let ctx = CudaContext::new(ordinal).unwrap_or_else(|e| panic!("CUDA context for device {ordinal}: {e}"));
    let stream = ctx.new_stream().unwrap_or_else(|e| panic!("CUDA stream on device {ordinal}: {e}"));
    let copy_stream = ctx.new_stream().unwrap_or_else(|e| panic!("CUDA copy stream on device {ordinal}: {e}"));
    let blas = CudaBlas::new(stream.clone())
        .unwrap_or_else(|e| panic!("cuBLAS on device {ordinal} (is libcublas on the library path?): {e}"));
    let capability = ctx.compute_capability().unwrap_or((0, 0));
    Device { ctx, stream, copy_stream, blas, module: None, flash: None, capability }
}

pub(crate) struct DeviceGuard {
    shared: Shared,
}

impl DeviceGuard {
    pub fn lock(&self) -> MutexGuard<'_, Device> {
        let guard = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        guard.ctx.bind_to_thread().unwrap_or_else(|e| panic!("binding the CUDA context: {e}"));
        guard
    }
}

/// Device buffers of cubecl tensors, held (so cubecl cannot reuse them) while a foreign op uses their
/// pointers.
pub(crate) struct Buffers {
    held: Vec<Box<dyn std::any::Any + Send>>,
}

impl Buffers {
    pub fn new() -> Self {
        Self { held: Vec::new() }
    }

    /// Keeps `value` (a tensor whose buffer a queued op reads or writes) alive with the buffers.
    pub fn keep<T: Send + 'static>(&mut self, value: T) {
        self.held.push(Box::new(value));
    }

    /// The device address of the tensor's first element.
    pub fn ptr(&mut self, t: &CubeTensor<CudaRuntime>) -> u64 {
        self.handle_ptr(&t.client, t.handle.clone())
    }

    pub fn handle_ptr(
        &mut self,
        client: &burn_cubecl::cubecl::client::ComputeClient<CudaRuntime>,
        handle: Handle,
    ) -> u64 {
        let resource = client.get_resource(handle).unwrap_or_else(|e| panic!("device buffer: {e:?}"));
        let ptr = resource.resource().ptr;
        self.held.push(Box::new(resource));
        ptr
    }
}

/// The kernels' name suffix for values stored as `dtype` (`kernels.cu`, `flash.cu` exist per storage type).
pub(crate) fn suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("f32"),
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    }
}

/// `t` with contiguous row-major storage (the kernels index it as such).
pub(crate) fn contiguous(t: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    if t.is_contiguous() { t } else { into_contiguous(t) }
}

/// A new uninitialised contiguous tensor of `shape` and `dtype` on the device of `like` (at least one byte:
/// an empty allocation is not a buffer).
pub(crate) fn empty(like: &CubeTensor<CudaRuntime>, shape: &[usize], dtype: DType) -> CubeTensor<CudaRuntime> {
    let handle = like.client.empty(shape.iter().product::<usize>().max(1) * dtype.size());
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::from(shape.to_vec()), handle, dtype)
}

/// Waits until everything cubecl has queued on this thread's stream (the inputs' producers) is done.
pub(crate) fn wait_for_cubecl(client: &burn_cubecl::cubecl::client::ComputeClient<CudaRuntime>) {
    burn_cubecl::cubecl::future::block_on(client.sync()).unwrap_or_else(|e| panic!("cubecl sync: {e:?}"));
}

/// (free, total) bytes of device `ordinal` as the driver reports them (`cuMemGetInfo`): what every
/// process and pool on the device leaves. `None` when the device cannot be opened.
pub fn memory_info(ordinal: usize) -> Option<(u64, u64)> {
    let ctx = CudaContext::new(ordinal).ok()?;
    ctx.bind_to_thread().ok()?;
    let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
    Some((free as u64, total as u64))
}
