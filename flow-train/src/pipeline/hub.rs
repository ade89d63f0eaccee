//! Hugging Face Hub repositories as model sources: which files of a FLUX.2 pipeline repository are needed,
//! and bringing them into (or finding them in) the local Hub cache.
//!
//! The cache is the one the Python `huggingface_hub` library and the `hf` command share
//! (`<cache>/models--<owner>--<name>/snapshots/<commit>/<file>`), so a model downloaded by either is reused
//! and the other way round. Settings come from the same environment variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `HF_HUB_CACHE` | the cache folder (default `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) |
//! | `HF_HOME` | parent of the default cache and of the stored `token` file |
//! | `HF_TOKEN` | access token for gated/private repositories (FLUX.2 [dev] is gated); else `HF_TOKEN=` in a `.env` file of the working folder (as ai-toolkit reads one); else the stored token. Never printed (`Debug` shows `<set>`) |
//! | `HF_HUB_OFFLINE` | `1`/`true`/`yes`/`on`: never touch the network; every needed file must be cached |
//! | `HF_ENDPOINT` | another Hub endpoint (a mirror) |
//!
//! Only the files the pipeline reads are fetched: `model_index.json`, `scheduler/scheduler_config.json`,
//! each requested component's `config.json` and weights (a sharded `*.safetensors.index.json` and the shards
//! it lists, else the single `.safetensors` file), and `tokenizer/tokenizer.json` with the text encoder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Where and how to reach the Hub.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The Hub cache folder; `None` means no cache could be located (no `HF_HUB_CACHE`, `HF_HOME` or home
    /// folder), which only matters when a repository id is given.
    pub cache_dir: Option<PathBuf>,
    /// Access token (`None`: the token file stored next to the cache, if any).
    pub token: Option<String>,
    /// Use the cache only.
    pub offline: bool,
    /// Hub endpoint (`None`: the default).
    pub endpoint: Option<String>,
}

impl HubOptions {
    /// Settings from the environment (see the module docs).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| Path::new(&h).join("hub")))
            .or_else(|| {
                var("HOME")
                    .or_else(|| var("USERPROFILE"))
                    .map(|home| Path::new(&home).join(".cache").join("huggingface").join("hub"))
            });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let token = var("HF_TOKEN").or_else(|| token_from_dotenv(Path::new(".env")));
        Self { cache_dir, token, offline, endpoint: var("HF_ENDPOINT") }
    }
}

/// The token is a secret: debug output (job dumps, error reports) says only whether one is set.
impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// `HF_TOKEN` from a dotenv file (`KEY=value` lines, optional `export `, quotes, `#` comments), as
/// ai-toolkit loads one from its working folder; the environment takes precedence over it.
fn token_from_dotenv(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=')?;
        if key.trim() != "HF_TOKEN" {
            return None;
        }
        let value = value.trim();
        let value = value.split_once(" #").map_or(value, |(v, _)| v).trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod dotenv_tests {
    use super::{HubOptions, token_from_dotenv};

    #[test]
    fn dotenv_tokens_are_read_and_never_printed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(".env");
        std::fs::write(&path, "# comment\nOTHER=1\nexport HF_TOKEN=\"hf_secret\" # mine\n").expect("write");
        assert_eq!(token_from_dotenv(&path).as_deref(), Some("hf_secret"));
        std::fs::write(&path, "HF_TOKEN=\n").expect("write");
        assert_eq!(token_from_dotenv(&path), None, "empty value");
        assert_eq!(token_from_dotenv(&dir.path().join("missing")), None);
        let options = HubOptions { cache_dir: None, token: Some("hf_secret".into()), offline: false, endpoint: None };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hf_secret") && shown.contains("<set>"), "{shown}");
    }
}

impl Default for HubOptions {
    /// [`HubOptions::from_env`].
    fn default() -> Self {
        Self::from_env()
    }
}

/// A model repository on the Hub: `owner/name`, optionally `owner/name@revision` (branch, tag or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub id: String,
    pub revision: String,
}

impl RepoId {
    /// Parses `owner/name[@revision]`; `None` when the text cannot be a repository id (a path, say).
    pub fn parse(text: &str) -> Option<Self> {
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) if !rev.is_empty() && !rev.contains(char::is_whitespace) => (id, rev),
            Some(_) => return None,
            None => (text, "main"),
        };
        let (owner, name) = id.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part_ok(owner) && part_ok(name)).then(|| Self { id: id.to_string(), revision: revision.to_string() })
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.id.clone(), RepoType::Model, self.revision.clone())
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" { write!(f, "{}", self.id) } else { write!(f, "{}@{}", self.id, self.revision) }
    }
}

/// A component folder of a diffusers FLUX.2 pipeline and the stem of its weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `transformer/diffusion_pytorch_model*.safetensors`
    Transformer,
    /// `vae/diffusion_pytorch_model*.safetensors`
    Vae,
    /// `text_encoder/model*.safetensors` and `tokenizer/tokenizer.json`
    TextEncoder,
}

impl Component {
    fn folder(self) -> &'static str {
        match self {
            Component::Transformer => "transformer",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
        }
    }

    fn weights_stem(self) -> &'static str {
        match self {
            Component::TextEncoder => "model",
            _ => "diffusion_pytorch_model",
        }
    }
}

/// The shard file names listed by a `*.safetensors.index.json` (its `weight_map` values).
fn shards_of_index(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Invalid(format!("{}: no `weight_map` object", index.display())))?;
    let mut shards = BTreeSet::new();
    for (key, file) in map {
        let file = file.as_str().filter(|f| !f.contains("..") && !f.starts_with('/')).ok_or_else(|| {
            Error::Invalid(format!("{}: `weight_map.{key}` is not a plain file name", index.display()))
        })?;
        shards.insert(file.to_string());
    }
    Ok(shards.into_iter().collect())
}

/// Where files come from while a snapshot is assembled.
trait FileSource {
    /// Whether the repository has `file` (for the offline cache: whether it is cached).
    fn has(&self, file: &str) -> bool;
    /// The local path of `file`, fetching it if needed; `None` if it is not available.
    fn fetch(&mut self, file: &str) -> Result<Option<PathBuf>>;
}

/// Fetches every file `components` need into a local snapshot, recording what is missing.
fn collect(source: &mut dyn FileSource, components: &[Component], missing: &mut Vec<String>) -> Result<()> {
    let mut want = |source: &mut dyn FileSource, file: &str| -> Result<Option<PathBuf>> {
        let got = source.fetch(file)?;
        if got.is_none() {
            missing.push(file.to_string());
        }
        Ok(got)
    };
    want(source, "model_index.json")?;
    if source.has("scheduler/scheduler_config.json") {
        want(source, "scheduler/scheduler_config.json")?;
    }
    for &component in components {
        let folder = component.folder();
        want(source, &format!("{folder}/config.json"))?;
        let index = format!("{folder}/{}.safetensors.index.json", component.weights_stem());
        let single = format!("{folder}/{}.safetensors", component.weights_stem());
        if source.has(&index) {
            if let Some(index_path) = want(source, &index)? {
                for shard in shards_of_index(&index_path)? {
                    want(source, &format!("{folder}/{shard}"))?;
                }
            }
        } else {
            want(source, &single)?;
        }
        if component == Component::TextEncoder {
            want(source, "tokenizer/tokenizer.json")?;
        }
    }
    Ok(())
}

/// The local snapshot folder of `repo` (a diffusers pipeline layout) with every file `components` need.
///
/// Online: asks the Hub for the revision's commit and file list, downloads what the cache lacks (with a
/// progress bar) and returns `<cache>/models--<owner>--<name>/snapshots/<commit>`. Offline
/// (`options.offline`): resolves the revision through the cache's `refs/` and requires every needed file
/// to be there; the error lists each missing file.
pub fn snapshot(repo: &RepoId, components: &[Component], options: &HubOptions) -> Result<PathBuf> {
    let cache_dir = options.cache_dir.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "{repo}: no Hugging Face cache folder (set HF_HUB_CACHE or HF_HOME, or give a local folder instead of a repository id)"
        ))
    })?;
    let repo_dir = cache_dir.join(repo.repo().folder_name());
    if options.offline {
        offline_snapshot(repo, components, &repo_dir)
    } else {
        online_snapshot(repo, components, options, &cache_dir, &repo_dir)
    }
}

struct CachedFiles<'a> {
    snapshot: &'a Path,
}

impl FileSource for CachedFiles<'_> {
    fn has(&self, file: &str) -> bool {
        self.snapshot.join(file).is_file()
    }
    fn fetch(&mut self, file: &str) -> Result<Option<PathBuf>> {
        let path = self.snapshot.join(file);
        Ok(path.is_file().then_some(path))
    }
}

fn offline_snapshot(repo: &RepoId, components: &[Component], repo_dir: &Path) -> Result<PathBuf> {
    let is_commit = repo.revision.len() == 40 && repo.revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        repo.revision.clone()
    } else {
        let reference = repo_dir.join("refs").join(&repo.revision);
        std::fs::read_to_string(&reference).map(|s| s.trim().to_string()).map_err(|_| {
            Error::Invalid(format!(
                "{repo}: HF_HUB_OFFLINE is set and the repository is not in the Hugging Face cache ({} does not exist); \
                 download it once online (or unset HF_HUB_OFFLINE), or pass a local folder",
                reference.display()
            ))
        })?
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let mut missing = Vec::new();
    collect(&mut CachedFiles { snapshot: &snapshot }, components, &mut missing)?;
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "{repo}: HF_HUB_OFFLINE is set and these files are not in the cached snapshot {}: {}; download them once online \
             (or unset HF_HUB_OFFLINE)",
            snapshot.display(),
            missing.join(", ")
        )));
    }
    Ok(snapshot)
}

struct HubFiles<'a> {
    repo: &'a RepoId,
    api: hf_hub::api::sync::ApiRepo,
    listing: BTreeSet<String>,
    snapshot: PathBuf,
}

impl FileSource for HubFiles<'_> {
    fn has(&self, file: &str) -> bool {
        self.listing.contains(file)
    }
    fn fetch(&mut self, file: &str) -> Result<Option<PathBuf>> {
        if !self.listing.contains(file) {
            return Ok(None);
        }
        let local = self.snapshot.join(file);
        if local.is_file() {
            return Ok(Some(local));
        }
        let got =
            self.api.download(file).map_err(|e| Error::Invalid(format!("{}: downloading `{file}`: {e}", self.repo)))?;
        if got != local {
            return Err(Error::Invalid(format!(
                "{}: `{file}` arrived as {} instead of {} (the revision moved during the download); run again",
                self.repo,
                got.display(),
                local.display()
            )));
        }
        Ok(Some(local))
    }
}

fn online_snapshot(
    repo: &RepoId,
    components: &[Component],
    options: &HubOptions,
    cache_dir: &Path,
    repo_dir: &Path,
) -> Result<PathBuf> {
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf())).with_progress(true);
    if let Some(token) = &options.token {
        builder = builder.with_token(Some(token.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| Error::Invalid(format!("{repo}: cannot set up the Hub client: {e}")))?;
    let api = api.repo(repo.repo());
    let info = api.info().map_err(|e| {
        Error::Invalid(format!(
            "{repo}: cannot read the repository from the Hub ({e}); check the id, the network and HF_TOKEN (FLUX.2 [dev] \
             is gated: accept its license on the Hub first), or set HF_HUB_OFFLINE=1 to use the cache only"
        ))
    })?;
    let listing: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    let mut source = HubFiles { repo, api, listing, snapshot: snapshot.clone() };
    let mut missing = Vec::new();
    collect(&mut source, components, &mut missing)?;
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "{repo} (commit {}) is not a diffusers FLUX.2 pipeline repository: it has no {}",
            info.sha,
            missing.join(", ")
        )));
    }
    // Record the revision -> commit mapping the way huggingface_hub does, so offline runs find it.
    let reference = repo_dir.join("refs").join(&repo.revision);
    if repo.revision != info.sha {
        if let Some(parent) = reference.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&reference, &info.sha).map_err(|e| Error::io(&reference, e))?;
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert_eq!(
            RepoId::parse("black-forest-labs/FLUX.2-dev"),
            Some(RepoId { id: "black-forest-labs/FLUX.2-dev".into(), revision: "main".into() })
        );
        assert_eq!(RepoId::parse("a/b@v1.0").map(|r| r.revision), Some("v1.0".into()));
        for not_id in ["FLUX.2-dev", "./a/b", "/abs/path", "a/b/c", "../x", "a/..", "a/b@", "", "a /b"] {
            assert_eq!(RepoId::parse(not_id), None, "{not_id}");
        }
    }

    fn temp(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(tag).tempdir().unwrap()
    }

    #[test]
    fn offline_snapshot_lists_every_missing_file() {
        let cache = temp("hub-cache");
        let repo = RepoId::parse("owner/model").unwrap();
        let repo_dir = cache.path().join("models--owner--model");
        let options =
            HubOptions { cache_dir: Some(cache.path().to_path_buf()), token: None, offline: true, endpoint: None };
        let err = snapshot(&repo, &[Component::Transformer], &options).unwrap_err().to_string();
        assert!(err.contains("refs/main") && err.contains("HF_HUB_OFFLINE"), "{err}");

        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
        let snap = repo_dir.join("snapshots").join(commit);
        std::fs::create_dir_all(snap.join("transformer")).unwrap();
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        std::fs::write(snap.join("transformer/config.json"), "{}").unwrap();
        std::fs::write(
            snap.join("transformer/diffusion_pytorch_model.safetensors.index.json"),
            r#"{"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors", "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(snap.join("transformer/diffusion_pytorch_model-00001-of-00002.safetensors"), "").unwrap();
        let err = snapshot(&repo, &[Component::Transformer, Component::TextEncoder], &options).unwrap_err().to_string();
        for file in [
            "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "tokenizer/tokenizer.json",
        ] {
            assert!(err.contains(file), "{file} not named in: {err}");
        }
        assert!(!err.contains("00001-of"), "{err}");

        std::fs::write(snap.join("transformer/diffusion_pytorch_model-00002-of-00002.safetensors"), "").unwrap();
        assert_eq!(snapshot(&repo, &[Component::Transformer], &options).unwrap(), snap);
        // A commit hash as revision needs no ref.
        let pinned = RepoId::parse(&format!("owner/model@{commit}")).unwrap();
        std::fs::remove_file(repo_dir.join("refs/main")).unwrap();
        assert_eq!(snapshot(&pinned, &[Component::Transformer], &options).unwrap(), snap);
    }
}
