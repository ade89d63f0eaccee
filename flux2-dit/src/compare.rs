//! Comparing an output with a reference, the measure every parity example in the workspace reports.

use burn::tensor::TensorData;

/// ‖out − ref‖ / ‖ref‖ over all elements, accumulated in f64; errors on a shape mismatch.
pub fn relative_error(out: &TensorData, reference: &TensorData) -> Result<f64, String> {
    if out.shape != reference.shape {
        return Err(format!("output shape {:?} != expected {:?}", out.shape, reference.shape));
    }
    let a: Vec<f32> = out.to_vec().map_err(|e| format!("{e:?}"))?;
    let b: Vec<f32> = reference.to_vec().map_err(|e| format!("{e:?}"))?;
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        diff += ((x - y) as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    Ok((diff / norm.max(f64::MIN_POSITIVE)).sqrt())
}
