//! float8 e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities, one NaN pattern
//! per sign, largest finite 448): the byte codes of FLUX.2's float8 weights, exactly as PyTorch's
//! `tensor.to(torch.float8_e4m3fn)` produces them (round to nearest, ties to even, from the f32 value).

/// Largest finite e4m3fn value.
pub const E4M3_MAX: f32 = 448.0;

/// The value of code `c` (NaN for 0x7f / 0xff).
pub fn e4m3_to_f32(c: u8) -> f32 {
    let sign = if c & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((c >> 3) & 0x0f);
    let man = f32::from(c & 0x07);
    if exp == 15 && man == 7.0 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 { man / 8.0 * 2f32.powi(-6) } else { (1.0 + man / 8.0) * 2f32.powi(exp - 7) };
    sign * magnitude
}

/// The code of `x` rounded to nearest e4m3fn (ties to even); values beyond ±448 saturate to ±448 (callers
/// clamp first, as the reference quantizers do), NaN gives the NaN code.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs().min(E4M3_MAX);
    // Every e4m3fn value is a multiple of the spacing of its binade; round |x| to that grid, ties to even
    // (on the mantissa's last bit), which is what the bit-level conversion does.
    let code = if a < 2f32.powi(-6) {
        // Subnormals: multiples of 2^-9 (codes 0..=7, and 8 = the smallest normal on rounding up).
        (a / 2f32.powi(-9)).round_ties_even() as u8
    } else {
        let exp = a.log2().floor() as i32; // -6 ..= 8
        let step = 2f32.powi(exp - 3);
        let m = (a / step).round_ties_even() as i32; // 8 ..= 16
        let (exp, m) = if m == 16 { (exp + 1, 8) } else { (exp, m) };
        (((exp + 7) as u8) << 3) | (m - 8) as u8
    };
    sign | code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_the_grid_is_monotone() {
        let mut previous = f32::NEG_INFINITY;
        for c in 0u8..=0x7e {
            let v = e4m3_to_f32(c);
            assert_eq!(f32_to_e4m3(v), c, "code {c:#x} = {v}");
            assert_eq!(f32_to_e4m3(-v), c | 0x80);
            assert!(v > previous, "{c:#x}");
            previous = v;
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(e4m3_to_f32(0x7f).is_nan());
    }

    #[test]
    fn rounds_to_nearest_ties_to_even_and_saturates() {
        // 1.0 = 0x38, next 1.125 = 0x39: the midpoint goes to the even mantissa (1.0), above it up.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.0626), 0x39);
        // 1.125 (m=1) and 1.25 (m=2): the midpoint 1.1875 goes to the even m=2.
        assert_eq!(f32_to_e4m3(1.1875), 0x3a);
        // Rounding up across a binade: 1.97 -> 2.0.
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1.97)), 2.0);
        assert_eq!(f32_to_e4m3(1000.0), 0x7e);
        assert_eq!(f32_to_e4m3(-1000.0), 0xfe);
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00, "half the smallest subnormal rounds to even (0)");
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02);
    }
}
