//! Layer offloading: a frozen base weight (dense, or its quantized codes and scales) kept in host memory
//! and uploaded to the device for each use, as ai-toolkit's `layer_offloading` does for 24 GB cards.
//!
//! A weight is needed on the device only while its block runs. With block checkpointing that is twice
//! per training step (the forward, then the recompute whose graph also serves the block's backward),
//! once per sampling step. [`OffloadedBase::prefetch`] starts the next block's uploads while the
//! current block computes; [`OffloadedBase::upload_stored`] takes them (or uploads now). The copies travel in the
//! stored form: float8 codes are one byte per weight, half of bf16's traffic.
//!
//! Backends: on CUDA ([`crate::cuda`]) the host copy is page-locked and uploads run on a copy stream of
//! their own, overlapping the compute of the block before; other backends keep the host data as it is
//! and upload with `Tensor::from_data` when the weight is used (on the CPU backends that is a copy in
//! the same memory: offloading saves nothing there, and the trainer says so).
//!
//! The type is not generic over the backend (the device is kept type-erased) so that modules holding it
//! convert between `Autodiff<B>` and `B` as Burn's module derive needs.

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};

use crate::backend_registry::{OpMap, OpRegistry};
use crate::quant::{QuantLayout, QuantizedWeight};

/// One tensor of an offloaded base in host memory.
#[derive(Clone)]
struct HostPart {
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    /// Plain host data (backends without pinned uploads).
    Data(TensorData),
    /// The backend's own host copy (CUDA: page-locked memory).
    Pinned(Arc<dyn Any + Send + Sync>),
}

/// What the parts are: a dense weight, or a quantized one's codes, scales and (a third part, for the
/// unsigned types) zero points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Dense,
    Quantized(QuantLayout),
}

struct Inner {
    form: Form,
    out_features: usize,
    in_features: usize,
    parts: Vec<HostPart>,
    /// The backend's device (`B::Device`, also `Autodiff<B>`'s).
    device: Arc<dyn Any + Send + Sync>,
    /// Uploads started by [`OffloadedBase::prefetch`], one per part.
    pending: Mutex<Option<Vec<Box<dyn Any + Send>>>>,
}

/// A frozen Linear base held in host memory (see the module docs). Clones share the host copy.
#[derive(Clone)]
pub struct OffloadedBase {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OffloadedBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadedBase")
            .field("form", &self.inner.form)
            .field("shape", &[self.inner.out_features, self.inner.in_features])
            .field("host_bytes", &self.host_bytes())
            .finish()
    }
}

/// The parts of a base as host data, read back from the device.
fn read_back<B: Backend, const D: usize, K>(t: Tensor<B, D, K>) -> Result<TensorData, String>
where
    K: burn::tensor::BasicOps<B>,
{
    t.try_into_data().map_err(|e| format!("reading the weight back from the device: {e:?}"))
}

impl OffloadedBase {
    /// Moves a dense weight [out, in] to host memory.
    pub fn dense<B: Backend>(weight: Tensor<B, 2>) -> Result<Self, String> {
        let [out, inp] = weight.dims();
        let device = weight.device();
        let parts = vec![host_part::<B>(read_back(weight)?, &device)?];
        Ok(Self::new::<B>(Form::Dense, out, inp, parts, device))
    }

    /// Moves a quantized weight's codes, scales and zero points to host memory.
    pub fn quantized<B: Backend>(q: QuantizedWeight<B>) -> Result<Self, String> {
        let device = q.codes.device();
        let form = Form::Quantized(q.layout());
        let (out, inp) = (q.out_features, q.in_features);
        let mut parts =
            vec![host_part::<B>(read_back(q.codes)?, &device)?, host_part::<B>(read_back(q.scales)?, &device)?];
        if let Some(z) = q.zero_points {
            parts.push(host_part::<B>(read_back(z)?, &device)?);
        }
        Ok(Self::new::<B>(form, out, inp, parts, device))
    }

    fn new<B: Backend>(form: Form, out: usize, inp: usize, parts: Vec<HostPart>, device: B::Device) -> Self {
        let inner = Inner {
            form,
            out_features: out,
            in_features: inp,
            parts,
            device: Arc::new(device),
            pending: Mutex::new(None),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn out_features(&self) -> usize {
        self.inner.out_features
    }

    pub fn in_features(&self) -> usize {
        self.inner.in_features
    }

    /// Bytes held in host memory (what each use uploads).
    pub fn host_bytes(&self) -> usize {
        self.inner.parts.iter().map(|p| p.shape.iter().product::<usize>() * p.dtype.size()).sum()
    }

    /// Whether the host copy is page-locked (uploads overlap compute).
    pub fn is_pinned(&self) -> bool {
        self.inner.parts.iter().all(|p| matches!(p.storage, Storage::Pinned(_)))
    }

    fn device<B: Backend>(&self) -> B::Device {
        match self.inner.device.downcast_ref::<B::Device>() {
            Some(d) => d.clone(),
            None => panic!("an offloaded weight used with another backend than the one that offloaded it"),
        }
    }

    /// Starts uploading the base (when the backend uploads asynchronously and nothing is pending yet),
    /// so that [`Self::upload_stored`] finds it there.
    pub fn prefetch<B: Backend>(&self) {
        let Some(ops) = REGISTRY.get::<B, Entry<B>>() else { return };
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            let device = self.device::<B>();
            *pending = Some(self.inner.parts.iter().map(|p| start::<B>(&ops, p, &device)).collect());
        }
    }

    /// The base on the device in its stored form (quantized codes stay quantized).
    pub fn upload_stored<B: Backend>(&self) -> StoredBase<B> {
        let device = self.device::<B>();
        let ops = REGISTRY.get::<B, Entry<B>>();
        let pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut started = match (pending, &ops) {
            (Some(p), _) => p.into_iter().map(Some).collect(),
            (None, Some(ops)) => self.inner.parts.iter().map(|p| Some(start::<B>(ops, p, &device))).collect(),
            (None, None) => Vec::new(),
        };
        let mut part = |i: usize| -> Uploaded<B> {
            let p = &self.inner.parts[i];
            match (started.get_mut(i).and_then(Option::take), &ops, &p.storage) {
                (Some(f), Some(ops), _) => {
                    if p.dtype.is_float() {
                        Uploaded::Float(Tensor::from_primitive(TensorPrimitive::Float((ops.finish_float)(f))))
                    } else {
                        Uploaded::Int(Tensor::from_primitive((ops.finish_int)(f)))
                    }
                }
                (_, _, Storage::Data(data)) => {
                    if p.dtype.is_float() {
                        Uploaded::Float(Tensor::from_data(data.clone(), (&device, p.dtype)))
                    } else {
                        Uploaded::Int(Tensor::from_data(data.clone(), (&device, p.dtype)))
                    }
                }
                (_, _, Storage::Pinned(_)) => panic!("a pinned offloaded weight without its backend's uploader"),
            }
        };
        match self.inner.form {
            Form::Dense => StoredBase::Dense(part(0).float()),
            Form::Quantized(layout) => {
                let codes = part(0).int();
                let scales = part(1).float();
                let zero_points = (self.inner.parts.len() == 3).then(|| part(2).float());
                StoredBase::Quantized(QuantizedWeight::from_parts(codes, scales, zero_points, layout))
            }
        }
    }
}

/// An uploaded base in its stored form.
pub enum StoredBase<B: Backend> {
    Dense(Tensor<B, 2>),
    Quantized(QuantizedWeight<B>),
}

enum Uploaded<B: Backend> {
    Float(Tensor<B, 2>),
    Int(Tensor<B, 2, Int>),
}

/// The parts keep their stored dtype (codes integer, scales float): a mismatch is a bug here, not data
/// to convert.
impl<B: Backend> Uploaded<B> {
    fn float(self) -> Tensor<B, 2> {
        match self {
            Uploaded::Float(t) => t,
            Uploaded::Int(_) => unreachable!("an offloaded float part uploaded as integers"),
        }
    }
    fn int(self) -> Tensor<B, 2, Int> {
        match self {
            Uploaded::Int(t) => t,
            Uploaded::Float(_) => unreachable!("offloaded codes uploaded as floats"),
        }
    }
}

fn host_part<B: Backend>(data: TensorData, device: &B::Device) -> Result<HostPart, String> {
    let (shape, dtype) = (data.shape.to_vec(), data.dtype);
    let storage = match REGISTRY.get::<B, Entry<B>>() {
        Some(ops) => Storage::Pinned((ops.pin)(&data, device)?),
        None => Storage::Data(data),
    };
    Ok(HostPart { shape, dtype, storage })
}

fn start<B: Backend>(ops: &Entry<B>, part: &HostPart, device: &B::Device) -> Box<dyn Any + Send> {
    match &part.storage {
        Storage::Pinned(pinned) => (ops.start)(pinned, &part.shape, part.dtype, device),
        Storage::Data(_) => panic!("offloaded host data that was not pinned by its backend"),
    }
}

/// A backend with asynchronous uploads from page-locked host memory.
pub trait OffloadBackend: Backend {
    /// A page-locked copy of `data` for uploads to `device`.
    /// Fails (with the reason) when the host cannot lock that much memory.
    fn pin(data: &TensorData, device: &Self::Device) -> Result<Arc<dyn Any + Send + Sync>, String>;
    /// Starts copying a pinned part (`shape`, `dtype`) to `device`; the result goes to a `finish_*`.
    fn start_upload(
        pinned: &Arc<dyn Any + Send + Sync>,
        shape: &[usize],
        dtype: DType,
        device: &Self::Device,
    ) -> Box<dyn Any + Send>;
    /// Waits for the copy and hands the tensor to the backend.
    fn finish_float(upload: Box<dyn Any + Send>) -> FloatTensor<Self>;
    fn finish_int(upload: Box<dyn Any + Send>) -> IntTensor<Self>;
}

/// Offloaded weights are frozen: under autodiff the uploads are untracked constants of the inner backend.
impl<B: OffloadBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> OffloadBackend
    for burn::backend::Autodiff<B, C>
{
    fn pin(data: &TensorData, device: &Self::Device) -> Result<Arc<dyn Any + Send + Sync>, String> {
        B::pin(data, device)
    }
    fn start_upload(
        pinned: &Arc<dyn Any + Send + Sync>,
        shape: &[usize],
        dtype: DType,
        device: &Self::Device,
    ) -> Box<dyn Any + Send> {
        B::start_upload(pinned, shape, dtype, device)
    }
    fn finish_float(upload: Box<dyn Any + Send>) -> FloatTensor<Self> {
        <Self as burn::tensor::backend::AutodiffBackend>::from_inner(B::finish_float(upload))
    }
    fn finish_int(upload: Box<dyn Any + Send>) -> IntTensor<Self> {
        B::finish_int(upload)
    }
}

#[allow(clippy::type_complexity)]
struct Entry<B: Backend> {
    pin: fn(&TensorData, &B::Device) -> Result<Arc<dyn Any + Send + Sync>, String>,
    start: fn(&Arc<dyn Any + Send + Sync>, &[usize], DType, &B::Device) -> Box<dyn Any + Send>,
    finish_float: fn(Box<dyn Any + Send>) -> FloatTensor<B>,
    finish_int: fn(Box<dyn Any + Send>) -> IntTensor<B>,
}

impl<B: Backend> Clone for Entry<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Entry<B> {}

fn entry<B: OffloadBackend>() -> Entry<B> {
    Entry { pin: B::pin, start: B::start_upload, finish_float: B::finish_float, finish_int: B::finish_int }
}

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

fn builtin(map: &mut OpMap) {
    crate::backend_registry::cuda_entries!(map, entry);
}

/// Registers `B`'s pinned uploads (CUDA and its autodiff wrappers are registered already).
pub fn register<B: OffloadBackend>() {
    REGISTRY.insert::<B, Entry<B>>(entry::<B>());
}

/// Whether `B` keeps offloaded weights page-locked and uploads them asynchronously (else offloading
/// holds plain host data, which on a CPU backend saves no memory).
pub fn is_accelerated<B: Backend>() -> bool {
    REGISTRY.contains::<B>()
}
