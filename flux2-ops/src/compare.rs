//! The one error measure every parity check in the workspace reports.

/// ‖out − ref‖ / ‖ref‖ over all elements, accumulated in f64. A zero reference gives ‖out‖ / f64's
/// smallest normal (huge unless `out` is zero too: 0), so an all-zero fixture can never pass by accident.
/// Errors on a length mismatch.
pub fn relative_error_slices(out: &[f32], reference: &[f32]) -> Result<f64, String> {
    if out.len() != reference.len() {
        return Err(format!("output has {} values, the reference {}", out.len(), reference.len()));
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in out.iter().zip(reference) {
        diff += (f64::from(*x) - f64::from(*y)).powi(2);
        norm += f64::from(*y).powi(2);
    }
    Ok((diff / norm.max(f64::MIN_POSITIVE)).sqrt())
}

/// [`relative_error_slices`] of two tensors' host data (any float dtype); errors on a shape mismatch.
#[cfg(feature = "burn")]
pub fn relative_error(out: &burn::tensor::TensorData, reference: &burn::tensor::TensorData) -> Result<f64, String> {
    if out.shape != reference.shape {
        return Err(format!("output shape {:?} != expected {:?}", out.shape, reference.shape));
    }
    let as_f32 = |d: &burn::tensor::TensorData| -> Result<Vec<f32>, String> {
        d.clone().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))
    };
    relative_error_slices(&as_f32(out)?, &as_f32(reference)?)
}

#[cfg(test)]
mod tests {
    use super::relative_error_slices;

    #[test]
    fn measures_relative_to_the_reference() {
        assert_eq!(relative_error_slices(&[1.0, 2.0], &[1.0, 2.0]), Ok(0.0));
        let e = relative_error_slices(&[3.0, 4.0], &[0.0, 5.0]).expect("same length");
        assert!((e - (9.0f64 + 1.0).sqrt() / 5.0).abs() < 1e-12);
        assert!(relative_error_slices(&[1e-3], &[0.0]).expect("same length") > 1e100, "zero reference");
        assert_eq!(relative_error_slices(&[0.0], &[0.0]), Ok(0.0));
        assert!(relative_error_slices(&[1.0], &[1.0, 2.0]).is_err());
    }
}
