//! Reference-image (edit) tokens: the conditioning images of a FLUX.2 edit, as extra transformer tokens.
//!
//! FLUX.2 edits condition on reference images by appending their latents to the image token sequence,
//! after the noisy tokens, with position ids `(10 (k + 1), row, col, 0)` for reference `k` (0-based):
//! the time coordinate separates the images, the row/column coordinates stay those of each image's own
//! grid. The transformer attends to them like to any other image token; the caller drops their
//! predictions. This is what diffusers' `Flux2Pipeline.prepare_image_latents` builds (`_prepare_image_ids`,
//! then the packed latents concatenated in order along the sequence), and the same tokens serve edit
//! training, where the control image is appended to the noisy target in the same way.
//!
//! The inputs are *normalized, patchified* latents `[1, C, h_k, w_k]` (`C = 128` for FLUX.2, `h_k = H_k/16`),
//! i.e. what the VAE crate produces for a training latent; they are never noised.

use burn::tensor::{Tensor, backend::Backend};
use flux2_dit::{PositionIds, pack_latents};

use crate::error::{Error, Result};

/// Packed reference tokens and their position ids.
#[derive(Debug, Clone)]
pub struct ReferenceTokens<B: Backend> {
    /// `[1, sum_k h_k w_k, C]`: every reference packed row-major, concatenated in order.
    pub tokens: Tensor<B, 3>,
    /// `(10 (k + 1), row, col, 0)` for each token, in the same order.
    pub ids: PositionIds,
    /// `(h_k, w_k)` of each reference, in latent tokens.
    pub sizes: Vec<(usize, usize)>,
}

impl<B: Backend> ReferenceTokens<B> {
    /// Packs `references` (each `[1, channels, h_k, w_k]`, at least one) into tokens with their ids.
    ///
    /// All references must share a float type and device (the sampler casts them to the model's first).
    pub fn new(references: &[Tensor<B, 4>], channels: usize) -> Result<Self> {
        if references.is_empty() {
            return Err(Error::InvalidValue { what: "reference images", reason: "the list is empty".into() });
        }
        let mut tokens = Vec::with_capacity(references.len());
        let mut ids = Vec::with_capacity(references.len());
        let mut sizes = Vec::with_capacity(references.len());
        for (k, reference) in references.iter().enumerate() {
            let [b, c, h, w] = reference.dims();
            if b != 1 || c != channels || h == 0 || w == 0 {
                return Err(Error::InvalidValue {
                    what: "reference images",
                    reason: format!(
                        "reference {k} has shape {:?}, expected [1, {channels}, h, w] with h, w >= 1 \
                         (one normalized, patchified latent per reference; the batch is shared)",
                        reference.dims()
                    ),
                });
            }
            tokens.push(pack_latents(reference.clone()));
            ids.push(PositionIds::reference(k, h, w));
            sizes.push((h, w));
        }
        let ids = PositionIds::concat(&ids.iter().collect::<Vec<_>>());
        Ok(Self { tokens: Tensor::cat(tokens, 1), ids, sizes })
    }

    /// Number of reference tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a `ReferenceTokens` holds at least one reference.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    #[test]
    fn packs_in_order_with_reference_ids() {
        let device = Default::default();
        let a = Tensor::<B, 4>::from_data(
            TensorData::new((0..2 * 2 * 3).map(|v| v as f32).collect(), [1, 2, 2, 3]),
            &device,
        );
        let b = Tensor::<B, 4>::from_data(TensorData::new(vec![100.0f32, 101.0], [1, 2, 1, 1]), &device);
        let refs = ReferenceTokens::new(&[a, b], 2).unwrap();
        assert_eq!(refs.len(), 7);
        assert_eq!(refs.sizes, vec![(2, 3), (1, 1)]);
        assert_eq!(refs.tokens.dims(), [1, 7, 2]);
        let v: Vec<f32> = refs.tokens.into_data().to_vec().unwrap();
        // token 1 of reference 0 = (row 0, col 1): channels 0 and 1 at that position
        assert_eq!(&v[2..4], &[1.0, 7.0]);
        assert_eq!(&v[12..14], &[100.0, 101.0]);
        let rows: Vec<&[i64]> = refs.ids.rows().collect();
        assert_eq!(rows[0], &[10, 0, 0, 0]);
        assert_eq!(rows[5], &[10, 1, 2, 0]);
        assert_eq!(rows[6], &[20, 0, 0, 0]);
    }

    #[test]
    fn rejects_batched_or_mis_channelled_references() {
        let device = Default::default();
        let batched = Tensor::<B, 4>::zeros([2, 4, 1, 1], &device);
        let err = ReferenceTokens::new(&[batched], 4).unwrap_err().to_string();
        assert!(err.contains("reference 0") && err.contains("[2, 4, 1, 1]"), "{err}");
        let wrong = Tensor::<B, 4>::zeros([1, 3, 1, 1], &device);
        assert!(
            ReferenceTokens::new(&[Tensor::zeros([1, 4, 1, 1], &device), wrong], 4)
                .unwrap_err()
                .to_string()
                .contains("reference 1")
        );
        assert!(ReferenceTokens::<B>::new(&[], 4).is_err());
    }
}
