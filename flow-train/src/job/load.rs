//! From text to a typed [`JobFile`]: format detection, `${VAR}` substitution, YAML merge keys,
//! `[name]` replacement (all as ai-toolkit does), key classification, then a typed read section by
//! section, so one run reports every bad value with its key path instead of stopping at the first.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::diagnostics::{Diagnostic, JobError, Severity};
use super::keys;
use super::schema::{JobConfig, JobFile, ProcessConfig, SampleItem};

/// The text format of a job file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFormat {
    /// YAML (ai-toolkit's usual format; also reads JSON, which is YAML).
    Yaml,
    /// JSON (`.json`, `.jsonc` as ai-toolkit accepts them).
    Json,
    /// TOML, same schema (`[config]`, `[[config.process]]`, ...).
    Toml,
}

impl JobFormat {
    /// From the file extension; anything unrecognised is read as YAML.
    pub fn from_path(path: &Path) -> JobFormat {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") | Some("jsonc") => JobFormat::Json,
            Some("toml") => JobFormat::Toml,
            _ => JobFormat::Yaml,
        }
    }
}

/// Replaces `${VAR}` with the environment variable's value, as ai-toolkit does on the raw text (so it
/// works in any position, numbers included). An unset variable is an error naming it and its line.
pub fn substitute_env(text: &str, origin: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, JobError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else { break };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => {
                let line = text[..text.len() - rest.len() + start].matches('\n').count() + 1;
                return Err(JobError::Syntax {
                    origin: origin.to_string(),
                    message: format!("line {line}: environment variable {name} is not set (the file uses ${{{name}}})"),
                });
            }
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses text into a generic tree (map order kept).
/// Parser messages quote the offending line; a job file with a 200 KB line must not print it whole.
const MAX_MESSAGE: usize = 600;

/// The longest prefix of `s` of at most `n` bytes that ends on a char boundary.
fn cut(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn shorten(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    // Keep each line's start, cut at a char boundary.
    let lines: Vec<String> = message
        .lines()
        .map(|l| if l.len() > 160 { format!("{}... ({} bytes)", cut(l, 160), l.len()) } else { l.to_string() })
        .collect();
    let joined = lines.join("\n");
    if joined.len() <= MAX_MESSAGE { joined } else { format!("{}...", cut(&joined, MAX_MESSAGE)) }
}

pub fn parse_tree(text: &str, format: JobFormat, origin: &str) -> Result<Value, JobError> {
    let syntax = |message: String| JobError::Syntax { origin: origin.to_string(), message: shorten(message) };
    // Editors on Windows save a UTF-8 byte-order mark; serde_yaml skips it, the JSON and TOML parsers
    // do not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut value: Value = match format {
        JobFormat::Yaml => serde_yaml::from_str(text).map_err(|e| syntax(format!("not valid YAML: {e}")))?,
        JobFormat::Json => serde_json::from_str(text).map_err(|e| syntax(format!("not valid JSON: {e}")))?,
        JobFormat::Toml => toml::from_str(text).map_err(|e| syntax(format!("not valid TOML: {e}")))?,
    };
    value.apply_merge().map_err(|e| syntax(format!("YAML merge key (<<): {e}")))?;
    if !matches!(value, Value::Mapping(_)) {
        return Err(syntax("expected a mapping with `job:`, `config:` and `meta:` at the top".into()));
    }
    Ok(value)
}

/// ai-toolkit replaces `[name]` with `config.name` everywhere in the file.
pub fn replace_name(value: &mut Value, name: &str) {
    match value {
        Value::String(s) if s.contains("[name]") => *s = s.replace("[name]", name),
        Value::Sequence(items) => items.iter_mut().for_each(|v| replace_name(v, name)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| replace_name(v, name)),
        Value::Tagged(t) => replace_name(&mut t.value, name),
        _ => {}
    }
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_mapping().and_then(|m| m.get(key)).filter(|v| !v.is_null())
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// Reads `value` as `T`. A failure becomes an error at the exact key path (the section path plus the
/// path inside it); the offending key is then dropped (so it takes its default) and the read is
/// retried, so every bad value of a section is reported, not just the first.
fn typed<T: DeserializeOwned + Default>(value: Option<&Value>, path: &str, out: &mut Vec<Diagnostic>) -> T {
    let Some(value) = value.filter(|v| !v.is_null()) else { return T::default() };
    let mut value = value.clone();
    for _ in 0..64 {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return t,
            Err(e) => e,
        };
        let inner = e.path().to_string();
        let full = if inner == "." || inner.is_empty() {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            join(path, &inner)
        };
        let shown = lookup_path(&value, &inner).map(keys::show);
        let mut message = e.into_inner().to_string();
        if message.starts_with("data did not match any variant of untagged enum") {
            message = "expected one value or a list of values of the right type".to_string();
        }
        if let Some(v) = shown.as_deref() {
            if matches!(v.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off" | "y" | "n") {
                message.push_str(" (YAML 1.2 reads yes/no/on/off as text: write true or false)");
            } else if !message.contains(v) {
                message.push_str(&format!(" (got {v})"));
            }
        }
        push_unique(out, Diagnostic::error(full, message));
        if !remove_path(&mut value, &inner) {
            break;
        }
    }
    T::default()
}

/// Removes the mapping entry a serde_path_to_error path points into (the last key on the path), so a
/// retry uses its default. Returns false when there is nothing to remove.
fn remove_path(value: &mut Value, path: &str) -> bool {
    if path == "." || path.is_empty() || path.contains('?') {
        return false;
    }
    // Cut everything after the last key (list indices inside a key's value drop the whole key).
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = value;
    for (n, part) in parts.iter().enumerate() {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (*part, ""),
        };
        let last = n + 1 == parts.len();
        if key.is_empty() {
            return false;
        }
        let Some(map) = cur.as_mapping_mut() else { return false };
        if last {
            return map.remove(key).is_some();
        }
        let Some(next) = map.get_mut(key) else { return false };
        cur = next;
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Ok(i) = idx.parse::<usize>() else { return false };
            let Some(item) = cur.as_sequence_mut().and_then(|s| s.get_mut(i)) else { return false };
            cur = item;
        }
    }
    false
}

/// The value at a serde_path_to_error path (`a.b[0].c`) inside `value`, for hints.
fn lookup_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = value;
    if path == "." || path.is_empty() {
        return Some(cur);
    }
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.as_mapping()?.get(key)?;
        }
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.as_sequence()?.get(idx.parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Errors found by key classification come first; a type error at the same path adds nothing.
fn push_unique(out: &mut Vec<Diagnostic>, d: Diagnostic) {
    if !out.iter().any(|o| o.severity == Severity::Error && o.path == d.path) {
        out.push(d);
    }
}

/// Reads a parsed tree into a [`JobFile`] with every default filled, appending diagnostics.
pub fn read_tree(mut root: Value, out: &mut Vec<Diagnostic>) -> JobFile {
    let name: Option<String> =
        get(&root, "config").and_then(|c| get(c, "name")).and_then(|n| n.as_str().map(String::from));
    if let Some(name) = &name {
        replace_name(&mut root, name);
    }
    keys::classify(&root, out);

    let mut file = JobFile::default();
    if let Some(job) = get(&root, "job") {
        file.job = typed(Some(job), "job", out);
    } else {
        out.push(Diagnostic::error("job", "missing: ai-toolkit trainer jobs start with `job: extension`"));
    }
    file.meta = typed(get(&root, "meta"), "meta", out);

    let Some(config) = get(&root, "config") else {
        out.push(Diagnostic::error("config", "missing: the job's settings live under `config:`"));
        return file;
    };
    let mut job_config = JobConfig::default();
    match get(config, "name") {
        Some(n) => job_config.name = typed(Some(n), "config.name", out),
        None => out.push(Diagnostic::error("config.name", "missing: set the run name (output folder and file prefix)")),
    }
    match get(config, "process") {
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                job_config.process.push(read_process(item, &format!("config.process[{i}]"), out));
            }
        }
        Some(other) => out.push(Diagnostic::error(
            "config.process",
            format!("expected a list of processes (`- type: diffusion_trainer ...`), got {}", keys::show(other)),
        )),
        None => {
            out.push(Diagnostic::error("config.process", "missing: the training settings live in `config.process[0]`"))
        }
    }
    file.config = job_config;
    file
}

fn read_process(value: &Value, path: &str, out: &mut Vec<Diagnostic>) -> ProcessConfig {
    let mut p = ProcessConfig::default();
    if !matches!(value, Value::Mapping(_)) {
        out.push(Diagnostic::error(path, format!("expected a mapping of process settings, got {}", keys::show(value))));
        return p;
    }
    macro_rules! scalar {
        ($field:ident, $key:literal) => {
            if let Some(v) = get(value, $key) {
                p.$field = typed(Some(v), &join(path, $key), out);
            }
        };
    }
    scalar!(kind, "type");
    scalar!(training_folder, "training_folder");
    scalar!(device, "device");
    scalar!(trigger_word, "trigger_word");
    scalar!(training_seed, "training_seed");
    scalar!(network, "network");
    scalar!(save, "save");
    scalar!(train, "train");
    scalar!(model, "model");
    scalar!(sample, "sample");
    scalar!(logging, "logging");
    if get(value, "network").is_none() {
        out.push(Diagnostic::error(
            join(path, "network"),
            "missing: without it ai-toolkit fine-tunes the whole model, which is not supported yet; \
             add `network: {type: lora, linear: 16, linear_alpha: 16}`",
        ));
    }
    if get(value, "type").is_none() {
        out.push(Diagnostic::error(
            join(path, "type"),
            "missing: ai-toolkit requires it; write `type: diffusion_trainer`",
        ));
    }
    match get(value, "datasets") {
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                p.datasets.push(typed(Some(item), &format!("{path}.datasets[{i}]"), out));
            }
        }
        Some(other) => out.push(Diagnostic::error(
            join(path, "datasets"),
            format!("expected a list of dataset entries (`- folder_path: ...`), got {}", keys::show(other)),
        )),
        None => {}
    }
    normalize(&mut p, path, out);
    p
}

/// Fills the defaults that depend on other keys, as ai-toolkit resolves them, so the resolved file
/// shows the values that will be used.
fn normalize(p: &mut ProcessConfig, path: &str, out: &mut Vec<Diagnostic>) {
    let net = &mut p.network;
    if let Some(rank) = net.rank.take() {
        net.linear = rank;
    }
    let alpha = net.alpha.take();
    net.linear_alpha = Some(net.linear_alpha.or(alpha).unwrap_or(net.linear as f64));

    let model = &mut p.model;
    model.quantize_te = Some(model.quantize_te.unwrap_or(model.quantize));
    if let Some(arch) = &mut model.arch
        && let Some(i) = arch.find(':')
    {
        arch.truncate(i);
    }

    if p.train.cache_text_embeddings {
        for d in &mut p.datasets {
            d.cache_text_embeddings = true;
        }
    }

    let sample = &mut p.sample;
    let sample_path = join(path, "sample");
    let prompts = std::mem::take(&mut sample.prompts);
    if !prompts.is_empty() {
        if sample.samples.is_empty() {
            sample.samples = prompts.into_iter().map(|prompt| SampleItem { prompt, ..Default::default() }).collect();
        } else {
            out.push(Diagnostic::warning(
                join(&sample_path, "prompts"),
                "ignored because `samples` is also set (ai-toolkit uses `samples` then too)",
            ));
        }
    }
    let defaults = sample.clone();
    for (i, item) in sample.samples.iter_mut().enumerate() {
        apply_prompt_flags(item, &format!("{sample_path}.samples[{i}].prompt"), out);
        item.width.get_or_insert(defaults.width);
        item.height.get_or_insert(defaults.height);
        item.guidance_scale.get_or_insert(defaults.guidance_scale);
        item.sample_steps.get_or_insert(defaults.sample_steps);
        item.network_multiplier.get_or_insert(defaults.network_multiplier);
        if item.ctrl_img_1.is_none() {
            item.ctrl_img_1 = item.ctrl_img.take();
        } else {
            item.ctrl_img = None;
        }
    }
}

/// ai-toolkit's inline prompt flags: `a cat --w 768 --h 1024 --seed 3 --cfg 4 --steps 28 --m 0.8`.
/// The prompt keeps the text before the first `--`; a flag overrides the item's own key.
fn apply_prompt_flags(item: &mut SampleItem, path: &str, out: &mut Vec<Diagnostic>) {
    if !item.prompt.contains("--") {
        return;
    }
    let text = item.prompt.trim().to_string();
    let mut parts = text.split("--");
    item.prompt = parts.next().unwrap_or_default().trim().to_string();
    for part in parts {
        let flag = part.split(' ').next().unwrap_or_default().trim();
        let content = part[flag.len()..].trim();
        let bad = |what: &str| Diagnostic::error(path, format!("--{flag} {content}: expected {what}"));
        match flag {
            "w" => match content.parse() {
                Ok(v) => item.width = Some(v),
                Err(_) => out.push(bad("a width in pixels")),
            },
            "h" => match content.parse() {
                Ok(v) => item.height = Some(v),
                Err(_) => out.push(bad("a height in pixels")),
            },
            "d" | "seed" => match content.parse() {
                Ok(v) => item.seed = Some(v),
                Err(_) => out.push(bad("a seed (non-negative integer)")),
            },
            "l" | "cfg" => match content.parse() {
                Ok(v) => item.guidance_scale = Some(v),
                Err(_) => out.push(bad("a guidance scale")),
            },
            "s" | "steps" => match content.parse() {
                Ok(v) => item.sample_steps = Some(v),
                Err(_) => out.push(bad("a step count")),
            },
            "m" | "network_multiplier" => match content.parse() {
                Ok(v) => item.network_multiplier = Some(v),
                Err(_) => out.push(bad("a LoRA multiplier")),
            },
            "n" => item.neg = Some(content.to_string()),
            _ => out.push(Diagnostic::warning(
                path,
                format!("prompt flag --{flag} is not used for FLUX.2 samples, ignored"),
            )),
        }
    }
}
