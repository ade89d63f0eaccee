//! Which kind of Burn backend a device belongs to, for the two defaults that differ between CPU and GPU
//! (convolution algorithm and row banding).

use burn::tensor::backend::Backend;

/// True for CubeCL backends (CUDA, ROCm, WGPU), also behind `Fusion`/`Autodiff` wrappers: their backend
/// names contain `cubecl` (e.g. `fusion<cubecl<cuda>>`).
pub(crate) fn is_cubecl<B: Backend>(device: &B::Device) -> bool {
    B::name(device).contains("cubecl")
}
