//! Bias-free Linear with PyTorch's [out, in] weight layout, plus optional low-rank adapters.
//!
//! The weight keeps the checkpoint layout so loading is a straight copy of memory-mapped bytes (no
//! transposed second copy), and matmul reads it transposed. Burn's `nn::Linear` stores [in, out].
//! A frozen base can instead be held quantized ([`Linear::quantize`]): then each forward dequantizes
//! it for its one product, and adapters add their deltas on top as before. It can also live in host
//! memory ([`Linear::offload`]) and be uploaded for each use.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

use crate::low_rank::LowRankAdapter;
use crate::offload::{OffloadedBase, StoredBase};
use crate::quant::{HostQuantized, QType, QuantizedWeight, quantized_product};

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// [out_features, in_features]; a one-element placeholder of the compute dtype while `quantized`
    /// holds the base.
    pub weight: Param<Tensor<B, 2>>,
    /// The frozen base in quantized form ([`crate::quant`]), when the layer was quantized.
    pub quantized: Option<QuantizedWeight<B>>,
    /// The frozen base (dense or quantized) in host memory ([`crate::offload`]), when the layer was
    /// offloaded; uploaded for each use.
    #[module(skip)]
    pub offloaded: Option<OffloadedBase>,
    /// LoRA-style deltas added to the output; empty for a plain model. See [`LowRankAdapter`].
    pub adapters: Vec<LowRankAdapter<B>>,
}

impl<B: Backend> Linear<B> {
    /// A frozen layer: base weights never get gradients (a trainer unfreezes them explicitly for full
    /// fine-tuning), so autodiff keeps nothing weight-sized for them.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            quantized: None,
            offloaded: None,
            adapters: Vec::new(),
        }
    }

    /// A zero-filled layer, used as the target the loader copies checkpoint tensors into.
    pub fn zeros(out_features: usize, in_features: usize, dtype: DType, device: &B::Device) -> Self {
        Self::new(Tensor::zeros([out_features, in_features], (device, dtype)))
    }

    pub fn out_features(&self) -> usize {
        match (&self.offloaded, &self.quantized) {
            (Some(o), _) => o.out_features(),
            (None, Some(q)) => q.out_features,
            (None, None) => self.weight.shape().dims::<2>()[0],
        }
    }

    pub fn in_features(&self) -> usize {
        match (&self.offloaded, &self.quantized) {
            (Some(o), _) => o.in_features(),
            (None, Some(q)) => q.in_features,
            (None, None) => self.weight.shape().dims::<2>()[1],
        }
    }

    /// The compute dtype (the weight's, or the quantized base's placeholder's).
    pub fn dtype(&self) -> DType {
        self.weight.val().dtype()
    }

    /// Stores the base weight as `qtype` (codes equal to the reference quantizer's, see [`QType`]);
    /// the dense weight is freed. A layer that already is quantized, or whose weight trains, is an
    /// error: adapters train on top of a frozen base, and merging into it needs the dense weight.
    pub fn quantize(self, qtype: QType) -> Result<Self, String> {
        if self.quantized.is_some() {
            return Err("the layer is quantized already".into());
        }
        if self.offloaded.is_some() {
            return Err("an offloaded layer cannot be quantized (quantize first, then offload)".into());
        }
        if self.weight.val().is_require_grad() {
            return Err("a trained weight cannot be quantized (quantized bases are frozen)".into());
        }
        let weight = self.weight.val();
        let (dtype, device) = (weight.dtype(), weight.device());
        let quantized = QuantizedWeight::quantize(weight, qtype)?;
        Ok(Self { adapters: self.adapters, ..Self::from_quantized(quantized, dtype, &device) })
    }

    /// A frozen layer over an already quantized base (a pre-quantized checkpoint's), computing in `dtype`.
    pub fn from_quantized(quantized: QuantizedWeight<B>, dtype: DType, device: &B::Device) -> Self {
        Self { weight: placeholder(dtype, device), quantized: Some(quantized), offloaded: None, adapters: Vec::new() }
    }

    /// A frozen layer over host codes and scales (a float8 file's layer), uploaded to `device`.
    pub fn from_host_quantized(host: &HostQuantized, dtype: DType, device: &B::Device) -> Self {
        Self::from_quantized(QuantizedWeight::from_host(host, dtype, device), dtype, device)
    }

    /// Moves the frozen base (dense or quantized, in its stored form) to host memory; each forward then
    /// uploads it ([`crate::offload`]). Offloading an offloaded layer is a no-op; a trained weight is
    /// an error.
    pub fn offload(self) -> Result<Self, String> {
        if self.offloaded.is_some() {
            return Ok(self);
        }
        if self.weight.val().is_require_grad() {
            return Err("a trained weight cannot be offloaded (offloaded bases are frozen)".into());
        }
        let dtype = self.dtype();
        let device = self.weight.val().device();
        let offloaded = match self.quantized {
            Some(q) => OffloadedBase::quantized(q)?,
            None => OffloadedBase::dense(self.weight.val())?,
        };
        Ok(Self {
            weight: placeholder(dtype, &device),
            quantized: None,
            offloaded: Some(offloaded),
            adapters: self.adapters,
        })
    }

    /// Starts uploading an offloaded base ahead of its use (no-op otherwise).
    pub fn prefetch(&self) {
        if let Some(o) = &self.offloaded {
            o.prefetch::<B>();
        }
    }

    /// The dense base weight [out, in]: the stored one, or the quantized base dequantized (a fresh
    /// layer-sized tensor).
    pub fn base_weight(&self) -> Tensor<B, 2> {
        match self.stored_base() {
            StoredBase::Dense(w) => w,
            StoredBase::Quantized(q) => q.dequantize(self.dtype()),
        }
    }

    /// The base on the device in its stored form: the dense weight, the quantized one, or an offloaded
    /// one uploaded (quantized codes stay quantized).
    fn stored_base(&self) -> StoredBase<B> {
        match (&self.offloaded, &self.quantized) {
            (Some(o), _) => o.upload_stored::<B>(),
            (None, Some(q)) => StoredBase::Quantized(q.clone()),
            (None, None) => StoredBase::Dense(self.weight.val()),
        }
    }

    /// Whether a forward through this layer now builds autodiff graph: its weight trains (full
    /// fine-tuning) or an active adapter's factors do.
    pub fn trains(&self) -> bool {
        self.weight.val().is_require_grad()
            || self
                .adapters
                .iter()
                .any(|a| a.is_active() && (a.down.val().is_require_grad() || a.up.val().is_require_grad()))
    }

    /// `x @ W^T (+ adapters)` over the last dimension of a [.., in] tensor of any rank.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.shape().dims::<D>();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
        // A quantized base goes through its own product, whose backward dequantizes again instead of
        // keeping a dense copy in the graph (`quant::product`).
        let mut y = match self.stored_base() {
            StoredBase::Dense(w) => crate::matmul::matmul(x2.clone(), w.transpose()),
            StoredBase::Quantized(q) => quantized_product(x2.clone(), &q, self.dtype()),
        };
        for adapter in &self.adapters {
            if let Some(delta) = adapter.forward(x2.clone()) {
                let dtype = y.dtype();
                y = y + delta.cast(dtype);
            }
        }
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}

/// The weight of a layer whose base is held elsewhere (quantized, offloaded): one element of the compute
/// dtype, not [0, in], because a zero-size fill is an invalid (zero-grid) kernel launch on CUDA.
fn placeholder<B: Backend>(dtype: DType, device: &B::Device) -> Param<Tensor<B, 2>> {
    Param::from_tensor(Tensor::zeros([1, 1], (device, dtype))).set_require_grad(false)
}
