//! The quantization types a job can ask for, named as ai-toolkit names them (`model.qtype`,
//! `model.qtype_te`), and what each stores per weight.

use std::fmt;

/// How frozen base weights are stored. Each follows the quantizer ai-toolkit runs for that name, so
/// codes and scales equal the reference's (`tools/fixtures/gen_quant.py` checks them):
///
/// | name | reference | codes | scales |
/// |---|---|---|---|
/// | `qfloat8` | optimum-quanto `qfloat8` | fp8 e4m3 | one per output row: absmax / 448, `w / scale` |
/// | `float8` | torchao `Float8WeightOnlyConfig` | fp8 e4m3 | one per output row: absmax / 448, `w * (1 / scale)` |
/// | `qint8` | optimum-quanto `qint8` | int8 | one per output row: absmax / 127 |
/// | `int8` | torchao `Int8WeightOnlyConfig` | int8 | one per output row: absmax / 127.5 |
/// | `uint2` .. `uint8` | ai-toolkit's `UIntXQuantizer` (torchao `uintx`) | unsigned, N bits | per group of 64 inputs: scale and zero point |
///
/// Scales are computed and stored in the weight's dtype (bf16 for FLUX.2), as the references do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    /// optimum-quanto's qfloat8 (ai-toolkit's default `qtype`).
    QFloat8,
    /// torchao's float8 weight-only (ai-toolkit switches `qfloat8` to it under layer offloading).
    Float8,
    /// optimum-quanto's qint8.
    QInt8,
    /// torchao's int8 weight-only.
    Int8,
    /// Asymmetric unsigned `bits`-bit codes per group of [`UINT_GROUP`] inputs (2..=8).
    UInt(u8),
}

/// Inputs per scale/zero-point group of the `uintN` types (torchao's and ai-toolkit's group size).
pub const UINT_GROUP: usize = 64;

/// The names [`QType::parse`] accepts, for error messages.
pub const SUPPORTED: &str = "qfloat8, float8, qint8, int8, uint2, uint3, uint4, uint5, uint6, uint7, uint8";

/// A qtype this project does not implement; the message names the supported ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("qtype `{name}` is not supported{why}; supported: {SUPPORTED}")]
pub struct UnsupportedQType {
    pub name: String,
    why: String,
}

impl QType {
    /// An ai-toolkit qtype name. `uintN|<adapter>` (an accuracy-recovery adapter) and the other
    /// ai-toolkit backends (`nvfp4`, `convrot*`, `orbit*`, `qint4`, `qint2`, `qfloat8_e5m2`) are refused
    /// with the list of supported names.
    pub fn parse(name: &str) -> Result<Self, UnsupportedQType> {
        let refuse = |why: &str| UnsupportedQType { name: name.to_string(), why: why.to_string() };
        if name.contains('|') {
            return Err(refuse(" (accuracy-recovery adapters after `|` are not implemented)"));
        }
        Ok(match name {
            "qfloat8" | "qfloat8_e4m3fn" => QType::QFloat8,
            "float8" => QType::Float8,
            "qint8" => QType::QInt8,
            "int8" => QType::Int8,
            other => match other.strip_prefix("uint").and_then(|b| b.parse::<u8>().ok()) {
                Some(bits @ 2..=8) => QType::UInt(bits),
                _ => return Err(refuse("")),
            },
        })
    }

    /// Bits per code.
    pub fn bits(self) -> u8 {
        match self {
            QType::UInt(bits) => bits,
            _ => 8,
        }
    }

    /// Inputs sharing one scale: the whole row, or [`UINT_GROUP`] for the unsigned types (a row whose
    /// width is not a multiple of it, which FLUX.2 and Mistral do not have, is one group).
    pub fn group(self, in_features: usize) -> usize {
        match self {
            QType::UInt(_) if in_features % UINT_GROUP == 0 => UINT_GROUP,
            _ => in_features.max(1),
        }
    }

    /// Whether codes are fp8 e4m3 bytes (else integers).
    pub fn is_float8(self) -> bool {
        matches!(self, QType::QFloat8 | QType::Float8)
    }

    /// Stored bytes per weight for a layer with `in_features` inputs: codes (4-bit and narrower codes
    /// packed two per byte), scales and zero points in bf16.
    pub fn bytes_per_weight(self, in_features: usize) -> f64 {
        let code = if self.bits() <= 4 { 0.5 } else { 1.0 };
        let per_group = match self {
            QType::UInt(_) => 4.0,
            _ => 2.0,
        };
        code + per_group / self.group(in_features) as f64
    }
}

/// Written as its name (resolved job files, start-up lines).
impl serde::Serialize for QType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QType::QFloat8 => f.write_str("qfloat8"),
            QType::Float8 => f.write_str("float8"),
            QType::QInt8 => f.write_str("qint8"),
            QType::Int8 => f.write_str("int8"),
            QType::UInt(bits) => write!(f, "uint{bits}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai_toolkit_names_parse_and_others_are_refused_with_the_list() {
        assert_eq!(QType::parse("qfloat8"), Ok(QType::QFloat8));
        assert_eq!(QType::parse("float8"), Ok(QType::Float8));
        assert_eq!(QType::parse("int8"), Ok(QType::Int8));
        assert_eq!(QType::parse("uint4"), Ok(QType::UInt(4)));
        assert_eq!(QType::parse("uint4").map(|q| q.to_string()), Ok("uint4".to_string()));
        for bad in ["uint3|ostris/accuracy_recovery_adapters/x.safetensors", "nvfp4", "convrot4", "uint9", "fp8"] {
            let err = QType::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")) && err.contains("qfloat8, float8"), "{err}");
        }
        assert!((QType::UInt(4).bytes_per_weight(6144) - (0.5 + 4.0 / 64.0)).abs() < 1e-12);
        assert!((QType::QFloat8.bytes_per_weight(6144) - (1.0 + 2.0 / 6144.0)).abs() < 1e-12);
    }
}
