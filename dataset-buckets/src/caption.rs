//! Captions: reading `<stem>.<caption_ext>`, trigger words, dropout and tag shuffling.
//!
//! Semantics follow ai-toolkit where they are deliberate and fix its accidents:
//! - missing or empty (whitespace-only) caption file -> `default_caption` (or empty);
//! - `[trigger]` and `[name]` are replaced by the trigger word (by nothing without one);
//! - the trigger word is prepended (`"<trigger> <caption>"`) when the caption does not contain it,
//!   except for regularization sets;
//! - caption dropout yields the trigger word alone (regularization sets: the empty caption).
//!   ai-toolkit produces `"<trigger> "` with a trailing space; the space is not kept here.
//! - surrounding whitespace (the trailing newline of most caption files) is trimmed; ai-toolkit keeps it
//!   and the text encoder sees an extra newline token.
//! - tags are only split at commas when `shuffle_tokens` or `token_dropout_rate` needs it, so natural
//!   language captions reach the encoder unchanged (ai-toolkit always re-joins, doubling the space
//!   after every comma); when shuffling, the first `keep_tokens` tags stay in place (ai-toolkit honours
//!   `keep_tokens` only for tag dropout) and the trigger is prepended after the shuffle, so it stays
//!   first.

use std::path::{Path, PathBuf};

use crate::config::DatasetConfig;
use crate::problem::{Problem, ProblemKind};
use crate::rng::Rng;

/// Where a record's raw caption came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptionSource {
    /// The caption file.
    File,
    /// `default_caption` (no caption file, or an empty one).
    Default,
    /// No caption file and no `default_caption`: the caption is empty (plus the trigger).
    Empty,
}

/// The largest caption file read (1 MiB; FLUX.2's text encoder reads 512 tokens, about 2 KB of text).
pub const MAX_CAPTION_BYTES: u64 = 1 << 20;

/// The caption file path for an image: its extension replaced by `ext` (`a.b.png` -> `a.b.txt`).
pub fn caption_path(image: &Path, ext: &str) -> PathBuf {
    image.with_extension(ext)
}

/// Reads an image's caption file. `Ok(None)`: there is none. Unreadable or non-UTF-8 files are a
/// problem naming the caption file, not a silent fallback to the default caption.
pub(crate) fn read_caption_file(image: &Path, ext: &str) -> Result<Option<String>, Problem> {
    let path = caption_path(image, ext);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Problem::new(&path, ProblemKind::CaptionUnreadable, e.to_string())),
        // A named pipe or device would block the loader or never end.
        Ok(m) if !m.is_file() => {
            return Err(Problem::new(
                &path,
                ProblemKind::CaptionUnreadable,
                "not a regular file (a pipe, socket or device?)",
            ));
        }
        Ok(m) if m.len() > MAX_CAPTION_BYTES => {
            return Err(Problem::new(
                &path,
                ProblemKind::CaptionUnreadable,
                format!(
                    "{} bytes; captions are at most {MAX_CAPTION_BYTES} bytes (the text encoder reads 512 tokens)",
                    m.len()
                ),
            ));
        }
        Ok(_) => {}
    }
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))),
            Err(e) => Err(Problem::new(&path, ProblemKind::CaptionUnreadable, format!("not UTF-8 text: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Problem::new(&path, ProblemKind::CaptionUnreadable, e.to_string())),
    }
}

/// A step's caption and whether dropout replaced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepCaption {
    pub text: String,
    /// True when caption dropout fired: `text` is the dropout caption, and a cached text embedding
    /// should come from [`crate::Caches::text`] with `dropped = true`.
    pub dropped: bool,
}

/// The caption rules of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptionRules {
    pub trigger: Option<String>,
    pub is_reg: bool,
    pub default_caption: Option<String>,
    pub dropout_rate: f64,
    pub shuffle_tokens: bool,
    pub keep_tokens: usize,
    pub token_dropout_rate: f64,
    /// `(from, to)` text replacements applied to the raw caption.
    pub replacements: Vec<(String, String)>,
}

impl CaptionRules {
    /// Rules from a dataset config; `fallback_trigger` is the job-level trigger word.
    pub fn from_config(config: &DatasetConfig, fallback_trigger: Option<&str>) -> Self {
        let trigger = config
            .trigger_word
            .as_deref()
            .or(fallback_trigger)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        CaptionRules {
            trigger,
            is_reg: config.is_reg,
            default_caption: config.default_caption.clone(),
            dropout_rate: config.caption_dropout_rate,
            shuffle_tokens: config.shuffle_tokens,
            keep_tokens: config.keep_tokens,
            token_dropout_rate: config.token_dropout_rate,
            replacements: config
                .replacements
                .iter()
                .filter_map(|r| r.split_once('|'))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    /// The raw caption from the file contents (if any), falling back to `default_caption`.
    pub fn raw_caption(&self, file_text: Option<&str>) -> (String, CaptionSource) {
        match file_text.map(str::trim) {
            Some(text) if !text.is_empty() => (text.to_string(), CaptionSource::File),
            _ => match &self.default_caption {
                Some(d) => (d.trim().to_string(), CaptionSource::Default),
                None => (String::new(), CaptionSource::Empty),
            },
        }
    }

    /// The caption without per-step randomness: replacements, `[trigger]`, trigger prepended.
    /// This is what a text-embedding cache stores.
    pub fn caption(&self, raw: &str) -> String {
        self.inject_trigger(&self.replace(raw))
    }

    /// What caption dropout yields: the trigger alone (empty for regularization sets or without one).
    pub fn dropout_caption(&self) -> String {
        match (&self.trigger, self.is_reg) {
            (Some(t), false) => t.clone(),
            _ => String::new(),
        }
    }

    /// Whether captions vary from step to step beyond dropout.
    pub fn varies_per_step(&self) -> bool {
        self.shuffle_tokens || self.token_dropout_rate > 0.0
    }

    /// The caption for one training step: dropout, then tag dropout/shuffle, then the trigger.
    pub fn step_caption(&self, raw: &str, rng: &mut Rng) -> StepCaption {
        if self.dropout_rate > 0.0 && rng.uniform() < self.dropout_rate {
            return StepCaption { text: self.dropout_caption(), dropped: true };
        }
        if !self.varies_per_step() {
            return StepCaption { text: self.caption(raw), dropped: false };
        }
        let replaced = self.replace(raw);
        let mut tags: Vec<&str> = replaced.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
        let keep = self.keep_tokens.min(tags.len());
        if self.token_dropout_rate > 0.0 {
            let mut index = 0;
            let rate = self.token_dropout_rate;
            tags.retain(|_| {
                let kept = index < keep || (rate < 1.0 && rng.uniform() >= rate);
                index += 1;
                kept
            });
        }
        if self.shuffle_tokens {
            rng.shuffle(&mut tags[keep..]);
        }
        StepCaption { text: self.inject_trigger(&tags.join(", ")), dropped: false }
    }

    /// `caption` with the trigger word replaced by `class` (for differential output preservation).
    pub fn with_class(&self, caption: &str, class: &str) -> String {
        match &self.trigger {
            Some(t) => caption.replace(t.as_str(), class),
            None => caption.to_string(),
        }
    }

    fn replace(&self, raw: &str) -> String {
        let mut text = raw.to_string();
        for (from, to) in &self.replacements {
            text = text.replace(from.as_str(), to);
        }
        text
    }

    fn inject_trigger(&self, caption: &str) -> String {
        let trigger = self.trigger.as_deref().unwrap_or("");
        let text = caption.replace("[trigger]", trigger).replace("[name]", trigger);
        let text = text.trim();
        if trigger.is_empty() || self.is_reg || text.contains(trigger) {
            return text.to_string();
        }
        if text.is_empty() { trigger.to_string() } else { format!("{trigger} {text}") }
    }
}
