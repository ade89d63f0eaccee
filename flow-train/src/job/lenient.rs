//! Serde helpers for the loose value types ai-toolkit accepts (Python reads whatever YAML gives it).

use serde::{Deserialize, Deserializer, Serializer};

use crate::TimestepBias;

/// `sample.neg`: ai-toolkit's default is `False`, users write a string or nothing.
pub(crate) fn string_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Neg {
        Text(String),
        Flag(bool),
    }
    Ok(match Option::<Neg>::deserialize(d)? {
        Some(Neg::Text(s)) => s,
        Some(Neg::Flag(false)) | None => String::new(),
        Some(Neg::Flag(true)) => {
            return Err(serde::de::Error::custom("expected a negative prompt (text), got `true`"));
        }
    })
}

/// Optional float written as a number or a numeric string (ai-toolkit converts
/// `network_multiplier: "0.8"` with `float()`).
pub(crate) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Number(f64),
        Text(String),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(None),
        Some(Num::Number(x)) => Ok(Some(x)),
        Some(Num::Text(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got \"{s}\""))),
    }
}

/// A multiplier written as a number or numeric string; `null` means 1.
pub(crate) fn multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(opt_f64(d)?.unwrap_or(1.0))
}

/// `null` or absent means the type's default (ai-toolkit's `kwargs.get(key, default)` keeps an explicit
/// `null`, which then usually behaves like the default or crashes; here it is simply the default).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list given as one value, a list, or `null`.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(x)) => vec![x],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Writes `content_or_style` with ai-toolkit's names (`balanced`, `content`, `style`), so a printed
/// resolved job stays an ai-toolkit job.
pub(crate) fn content_or_style<S: Serializer>(bias: &TimestepBias, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(bias_name(*bias))
}

/// ai-toolkit's name of a bias.
pub(crate) fn bias_name(bias: TimestepBias) -> &'static str {
    match bias {
        TimestepBias::Balanced => "balanced",
        TimestepBias::HighNoise => "content",
        TimestepBias::LowNoise => "style",
    }
}
