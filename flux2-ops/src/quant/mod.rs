//! Quantized storage of frozen base weights (float8, int8, unsigned N-bit), for the transformer and the
//! text encoder alike: [`QType`] names them as ai-toolkit does, [`quantize`] computes codes and scales
//! as the reference quantizers do, and [`QuantizedWeight`] holds them on the device and dequantizes one
//! layer at a time for its product (the bf16 scratch is one layer, never the model).

pub mod device;
pub mod float8_file;
pub mod fp8;
pub mod product;
pub mod qtype;
pub mod quantizer;
pub mod weight;

pub use device::{QuantBackend, QuantLayout};
pub use product::quantized_product;
pub use qtype::{QType, SUPPORTED, UINT_GROUP, UnsupportedQType};
pub use quantizer::{Arith, HostQuantized, quantize};
pub use weight::QuantizedWeight;
