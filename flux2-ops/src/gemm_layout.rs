//! How a BLAS GEMM reads a strided tensor: the last two dims as a row- or column-major matrix with a
//! leading dimension, and one stride between batch entries. Used by the cuBLAS path (`cuda::gemm`, feature `cuda`);
//! kept apart so the CPU test suite checks it.

/// One GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    /// Stored column-major (a transposed row-major view, as `swap_dims` makes).
    pub col_major: bool,
    /// Elements between consecutive rows (row-major) or columns (column-major).
    pub ld: usize,
    /// Elements between batch entries (0 when there is one entry).
    pub batch_stride: usize,
}

/// The GEMM view of a [.., rows, cols] tensor with these strides (in elements), or `None` when it has
/// none: neither of the last two dims is unit-stride, or the batch dims do not step by one stride.
pub fn operand(shape: &[usize], strides: &[usize]) -> Option<Operand> {
    let d = shape.len();
    if d < 2 || strides.len() != d {
        return None;
    }
    let (rows, cols) = (shape[d - 2], shape[d - 1]);
    let (sr, sc) = (strides[d - 2], strides[d - 1]);
    let (col_major, ld) = if (sc == 1 || cols == 1) && (sr >= cols || rows == 1) {
        (false, if rows == 1 { cols.max(1) } else { sr })
    } else if (sr == 1 || rows == 1) && (sc >= rows || cols == 1) {
        (true, if cols == 1 { rows.max(1) } else { sc })
    } else {
        return None;
    };
    // Size-1 batch dims are ignored; each other outer stride must be the inner one times its size.
    let mut batch_stride = None;
    let mut expected = None;
    for i in (0..d - 2).rev() {
        if shape[i] == 1 {
            continue;
        }
        if expected.is_some_and(|e| e != strides[i]) {
            return None;
        }
        batch_stride.get_or_insert(strides[i]);
        expected = Some(strides[i] * shape[i]);
    }
    Some(Operand { col_major, ld, batch_stride: batch_stride.unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::{Operand, operand};

    #[test]
    fn views() {
        let op = |col_major, ld, batch_stride| Some(Operand { col_major, ld, batch_stride });
        // Contiguous [2, 3, 4] and its transpose (strides swapped).
        assert_eq!(operand(&[2, 3, 4], &[12, 4, 1]), op(false, 4, 12));
        assert_eq!(operand(&[2, 4, 3], &[12, 1, 4]), op(true, 4, 12));
        // A row block narrowed out of [2, 8, 4] keeps the parent's ld and batch stride.
        assert_eq!(operand(&[2, 3, 4], &[32, 4, 1]), op(false, 4, 32));
        // [B, H, S, d] heads view of a [B, S, H, d] buffer: batch dims do not collapse ...
        assert_eq!(operand(&[2, 3, 5, 4], &[60, 4, 12, 1]), None);
        // ... unless B == 1.
        assert_eq!(operand(&[1, 3, 5, 4], &[60, 4, 12, 1]), op(false, 12, 4));
        // Contiguous 4-d batch collapses to one stride.
        assert_eq!(operand(&[2, 3, 5, 4], &[60, 20, 4, 1]), op(false, 4, 20));
        // Single row / single column.
        assert_eq!(operand(&[1, 7], &[7, 1]), op(false, 7, 0));
        assert_eq!(operand(&[7, 1], &[1, 1]), op(false, 1, 0));
        // Neither of the last dims unit-stride.
        assert_eq!(operand(&[3, 4], &[8, 2]), None);
    }
}
