//! Position ids (t, h, w, l) for the joint token sequence, and latent pack/unpack helpers.
//!
//! Text token i is (0, 0, 0, i) — every padded position included; image token (0, row, col, 0) in
//! row-major order; reference image k (0-based) is (10(k+1), row, col, 0). The transformer uses the ids
//! of the first batch element only, so ids here are per sequence, not per batch.

use burn::tensor::{Tensor, backend::Backend};

/// A sequence of position ids, `axes` integers per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionIds {
    axes: usize,
    data: Vec<i64>,
}

impl PositionIds {
    /// Position ids stored as i64 [B, N, axes] (or [N, axes]) under `key` (fixtures, diffusers'
    /// `txt_ids` / `img_ids`); returns batch element 0's, the only ones the transformer uses.
    pub fn read(store: &flux2_ops::TensorStore, key: &str) -> crate::Result<Self> {
        let data = store.read(key, burn::tensor::DType::I64)?;
        let bad = |message: String| crate::Error::Safetensors { path: store.file_of(key), message };
        let (rows, axes) = match data.shape.as_slice() {
            [_, n, a] | [n, a] if *a > 0 => (*n, *a),
            other => return Err(bad(format!("`{key}` has shape {other:?}, expected [B, N, axes]"))),
        };
        let values: Vec<i64> = data.to_vec().map_err(|e| bad(format!("`{key}`: {e:?}")))?;
        let values = values.get(..rows * axes).ok_or_else(|| bad(format!("`{key}` holds too few values")))?;
        Ok(Self::from_flat(values.to_vec(), axes))
    }

    /// From a flat row-major [len, axes] buffer.
    pub fn from_flat(data: Vec<i64>, axes: usize) -> Self {
        assert!(
            axes > 0 && data.len().is_multiple_of(axes),
            "position ids: {} values are not rows of {axes}",
            data.len()
        );
        Self { axes, data }
    }

    /// `len` text tokens: (0, 0, 0, i).
    pub fn text(len: usize) -> Self {
        Self::from_flat((0..len as i64).flat_map(|i| [0, 0, 0, i]).collect(), 4)
    }

    /// A latent grid of `height` x `width` tokens at time coordinate `t` (0 for the generated image).
    pub fn grid(t: i64, height: usize, width: usize) -> Self {
        let data = (0..height as i64).flat_map(|r| (0..width as i64).flat_map(move |c| [t, r, c, 0])).collect();
        Self::from_flat(data, 4)
    }

    /// The generated image's tokens: (0, row, col, 0).
    pub fn image(height: usize, width: usize) -> Self {
        Self::grid(0, height, width)
    }

    /// Reference image `index` (0-based) of an edit: (10 (index + 1), row, col, 0).
    pub fn reference(index: usize, height: usize, width: usize) -> Self {
        Self::grid(10 * (index as i64 + 1), height, width)
    }

    /// Concatenation in order (the transformer wants [text; image; references]).
    pub fn concat(parts: &[&PositionIds]) -> Self {
        let axes = parts.first().map_or(4, |p| p.axes);
        assert!(parts.iter().all(|p| p.axes == axes), "position ids with different axis counts");
        Self { axes, data: parts.iter().flat_map(|p| p.data.iter().copied()).collect() }
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.axes
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn axes(&self) -> usize {
        self.axes
    }

    pub fn rows(&self) -> impl Iterator<Item = &[i64]> {
        self.data.chunks(self.axes)
    }
}

/// [B, C, H, W] latents to [B, H*W, C] tokens (row-major).
pub fn pack_latents<B: Backend>(latents: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, c, h, w] = latents.shape().dims();
    latents.reshape([b, c, h * w]).swap_dims(1, 2)
}

/// [B, H*W, C] tokens back to [B, C, H, W] latents; the inverse of [`pack_latents`].
pub fn unpack_latents<B: Backend>(tokens: Tensor<B, 3>, height: usize, width: usize) -> Tensor<B, 4> {
    let [b, n, c] = tokens.shape().dims();
    assert_eq!(n, height * width, "unpack_latents: {n} tokens do not fill {height}x{width}");
    tokens.swap_dims(1, 2).reshape([b, c, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_reference_layout() {
        let t = PositionIds::text(3);
        assert_eq!(t.rows().nth(2).unwrap(), &[0, 0, 0, 2]);
        let img = PositionIds::image(2, 3);
        assert_eq!(img.rows().nth(4).unwrap(), &[0, 1, 1, 0]);
        let r = PositionIds::reference(1, 2, 2);
        assert_eq!(r.rows().next().unwrap(), &[20, 0, 0, 0]);
        assert_eq!(PositionIds::concat(&[&t, &img, &r]).len(), 3 + 6 + 4);
    }

    #[test]
    fn packed_tokens_follow_the_image_ids_and_unpack_inverts() {
        use burn::backend::Flex;
        use burn::tensor::TensorData;
        let (b, c, h, w) = (2, 3, 2, 3);
        let values: Vec<f32> = (0..b * c * h * w).map(|v| v as f32).collect();
        let latents = Tensor::<Flex, 4>::from_data(TensorData::new(values.clone(), [b, c, h, w]), &Default::default());
        let tokens = pack_latents(latents);
        assert_eq!(tokens.shape().dims::<3>(), [b, h * w, c]);
        let packed: Vec<f32> = tokens.clone().into_data().to_vec().unwrap();
        // Token i carries pixel (row, col) of PositionIds::image(h, w) row i, every channel of it.
        for (i, id) in PositionIds::image(h, w).rows().enumerate() {
            let (row, col) = (id[1] as usize, id[2] as usize);
            for n in 0..b {
                for k in 0..c {
                    assert_eq!(
                        packed[(n * h * w + i) * c + k],
                        values[((n * c + k) * h + row) * w + col],
                        "batch {n} token {i} channel {k}"
                    );
                }
            }
        }
        let unpacked: Vec<f32> = unpack_latents(tokens, h, w).into_data().to_vec().unwrap();
        assert_eq!(unpacked, values);
    }
}
