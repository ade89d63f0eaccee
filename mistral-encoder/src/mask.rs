//! The 4-D attention mask the decoder layers share: causal, optionally sliding-window, and padding.
//!
//! transformers 5.23 (`masking_utils.sdpa_mask`) builds a boolean [B, 1, L, L] mask where key `j` is
//! visible to query `i` iff `j <= i`, `j > i - window` (when a sliding window is set) and
//! `attention_mask[b, j] == 1`, and hands it to `torch.nn.functional.scaled_dot_product_attention`.
//! With FLUX.2's LEFT padding, every pad query row sees no key at all; torch's SDPA returns an all-zero
//! output for such a row (checked on torch 2.15, f32 and bf16). The pad rows still flow through the
//! residual stream and the MLP, and FLUX.2 feeds all L rows to the transformer, so their values matter:
//! we reproduce the zero attention output explicitly instead of trusting each backend's behaviour on an
//! all-masked softmax row (Burn's fallback gives zeros, other kernels may give NaN or a uniform average).
//! The mask is built on the host from the small [B, L] padding mask and uploaded once per forward.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

/// The score bias of a key a query does not see: finite (an all-masked row softmaxes to a uniform
/// average instead of NaN, and is then zeroed, see the module docs), and far below any real score.
pub const MASKED: f32 = -1e30;

/// Mask tensors for one batch, shared by all layers.
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    /// [B, 1, L, L] f32, added to the scores: 0 where the key is attended, [`MASKED`] where not.
    pub bias: Tensor<B, 4>,
    /// [B, 1, L, 1], `true` where a query row attends to no key at all.
    pub empty_rows: Tensor<B, 4, Bool>,
    /// Whether any row is empty (skips a mask_fill per layer when there is no padding).
    pub any_empty: bool,
}

/// Host form of the mask: `masked[b][i][j]`, flattened, and the empty-row flags `[b][i]`.
pub fn host_mask(
    padding_mask: &[i64],
    batch: usize,
    seq_len: usize,
    sliding_window: Option<usize>,
) -> (Vec<bool>, Vec<bool>) {
    assert_eq!(padding_mask.len(), batch * seq_len, "padding mask must be [batch, seq_len]");
    let mut masked = vec![true; batch * seq_len * seq_len];
    let mut empty = vec![true; batch * seq_len];
    for b in 0..batch {
        let keep = &padding_mask[b * seq_len..(b + 1) * seq_len];
        for i in 0..seq_len {
            let first = match sliding_window {
                // transformers' overlay: kv_idx > q_idx - window.
                Some(w) => (i + 1).saturating_sub(w),
                None => 0,
            };
            let row = &mut masked[(b * seq_len + i) * seq_len..(b * seq_len + i + 1) * seq_len];
            for j in first..=i {
                if keep[j] != 0 {
                    row[j] = false;
                    empty[b * seq_len + i] = false;
                }
            }
        }
    }
    (masked, empty)
}

impl<B: Backend> AttentionMask<B> {
    /// From a [B, L] padding mask (1 = real token, 0 = pad).
    pub fn new(
        padding_mask: &[i64],
        batch: usize,
        seq_len: usize,
        sliding_window: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let (masked, empty) = host_mask(padding_mask, batch, seq_len, sliding_window);
        let any_empty = empty.iter().any(|e| *e);
        let bias: Vec<f32> = masked.iter().map(|&m| if m { MASKED } else { 0.0 }).collect();
        Self {
            bias: Tensor::from_data(
                TensorData::new(bias, [batch, 1, seq_len, seq_len]),
                (device, burn::tensor::DType::F32),
            ),
            empty_rows: Tensor::from_data(TensorData::new(empty, [batch, 1, seq_len, 1]), device),
            any_empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_causal() {
        // one sequence: 2 pads then 3 tokens
        let (m, e) = host_mask(&[0, 0, 1, 1, 1], 1, 5, None);
        let row = |i: usize| -> Vec<bool> { m[i * 5..(i + 1) * 5].iter().map(|x| !x).collect() };
        assert_eq!(row(0), [false; 5]);
        assert_eq!(row(1), [false; 5]);
        assert_eq!(row(2), [false, false, true, false, false]);
        assert_eq!(row(4), [false, false, true, true, true]);
        assert_eq!(e, [true, true, false, false, false]);
    }

    #[test]
    fn sliding_window_keeps_last_w_keys() {
        let (m, _) = host_mask(&[1; 5], 1, 5, Some(2));
        let row4: Vec<bool> = m[20..25].iter().map(|x| !x).collect();
        assert_eq!(row4, [false, false, false, true, true]);
    }

    #[test]
    fn holes_in_the_mask_do_not_empty_later_rows() {
        // right padding: pad queries still see the earlier real tokens, as in SDPA.
        let (_, e) = host_mask(&[1, 1, 0, 0], 1, 4, None);
        assert_eq!(e, [false; 4]);
    }
}
