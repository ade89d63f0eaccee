//! Adding named adapters to a model, switching them, and reading them back out.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use flux2_dit::{AdapterSwitch, Flux2Transformer, LowRankAdapter};
use flux2_ops::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::targets::Targets;

/// How to create a fresh adapter (the `network:` section of an ai-toolkit job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    /// `scale = alpha / rank`; ai-toolkit calls it `linear_alpha` (and, unlike ai-toolkit, we honour it).
    pub alpha: f32,
    pub dropout: f64,
    pub targets: Targets,
    /// Seed of the kaiming-uniform initialisation of A.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: 16, alpha: 16.0, dropout: 0.0, targets: Targets::Blocks, seed: 0 }
    }
}

/// A named adapter living inside a model: its shared on/off switch and multiplier.
#[derive(Debug, Clone)]
pub struct AdapterHandle {
    pub name: String,
    pub switch: Arc<AdapterSwitch>,
}

impl AdapterHandle {
    pub fn enable(&self) {
        self.switch.set_enabled(true)
    }
    pub fn disable(&self) {
        self.switch.set_enabled(false)
    }
    pub fn set_multiplier(&self, multiplier: f32) {
        self.switch.set_multiplier(multiplier)
    }
    /// Runs `f` with the adapter off and restores its previous state (DOP's prior pass).
    pub fn without<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.switch.enabled();
        self.switch.set_enabled(false);
        let out = f();
        self.switch.set_enabled(was);
        out
    }
}

/// One layer's factors on the host, f32: A [rank, in], B [out, rank], and `scale = alpha / rank`.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    pub down: TensorData,
    pub up: TensorData,
    pub scale: f32,
}

impl Factors {
    pub fn rank(&self) -> usize {
        self.down.shape[0]
    }
}

/// PEFT's default init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0, so a new
/// adapter leaves the model unchanged.
pub fn init_factors(rank: usize, in_features: usize, out_features: usize, rng: &mut Rng) -> (TensorData, TensorData) {
    let bound = 1.0 / (in_features as f32).sqrt();
    let down: Vec<f32> = (0..rank * in_features).map(|_| (2.0 * rng.uniform() as f32 - 1.0) * bound).collect();
    (TensorData::new(down, [rank, in_features]), TensorData::new(vec![0f32; out_features * rank], [out_features, rank]))
}

fn adapter_names<B: Backend>(model: &Flux2Transformer<B>) -> Vec<String> {
    let mut names: Vec<String> =
        model.linears().iter().flat_map(|(_, l)| l.adapters.iter().map(|a| a.name.clone())).collect();
    names.sort();
    names.dedup();
    names
}

/// Attaches `factors` (by BFL module path) to the model as adapter `name`.
pub fn attach<B: Backend>(
    model: &mut Flux2Transformer<B>,
    name: &str,
    factors: impl IntoIterator<Item = (String, Factors)>,
    multiplier: f32,
    dropout: f64,
) -> Result<AdapterHandle> {
    if adapter_names(model).iter().any(|n| n == name) {
        return Err(Error::DuplicateAdapter(name.into()));
    }
    let switch = AdapterSwitch::new(multiplier);
    let device = model.device();
    let mut by_path: std::collections::HashMap<String, Factors> = factors.into_iter().collect();
    for (path, linear) in model.linears_mut() {
        let Some(f) = by_path.remove(&path) else { continue };
        let param = |d: TensorData| Param::from_tensor(Tensor::<B, 2>::from_data(d, (&device, DType::F32)));
        linear.adapters.push(LowRankAdapter {
            down: param(f.down),
            up: param(f.up),
            scale: f.scale,
            dropout,
            merged: false,
            merged_factor: 0.0,
            name: name.to_string(),
            switch: switch.clone(),
        });
    }
    if let Some(path) = by_path.keys().next() {
        return Err(Error::NoTargets(format!("module `{path}` does not exist in this model")));
    }
    Ok(AdapterHandle { name: name.into(), switch })
}

/// Creates a fresh adapter (A random, B zero) on every Linear `config.targets` selects.
pub fn inject<B: Backend>(model: &mut Flux2Transformer<B>, name: &str, config: &LoraConfig) -> Result<AdapterHandle> {
    let mut rng = Rng::new(config.seed);
    let scale = config.alpha / config.rank as f32;
    // Before any factor is allocated: a rank beyond the layer's width is an error, not gigabytes.
    for (path, l) in model.linears().into_iter().filter(|(path, _)| config.targets.selects(path)) {
        let max = l.in_features().min(l.out_features());
        if config.rank == 0 || config.rank > max {
            return Err(Error::Rank {
                rank: config.rank,
                module: path,
                input: l.in_features(),
                out: l.out_features(),
                max,
            });
        }
    }
    let factors: Vec<(String, Factors)> = model
        .linears()
        .into_iter()
        .filter(|(path, _)| config.targets.selects(path))
        .map(|(path, l)| {
            let (down, up) = init_factors(config.rank, l.in_features(), l.out_features(), &mut rng);
            (path, Factors { down, up, scale })
        })
        .collect();
    if factors.is_empty() {
        return Err(Error::NoTargets(config.targets.label()));
    }
    attach(model, name, factors, 1.0, config.dropout)
}

/// The factors of adapter `name`, by BFL module path, copied to the host in f32.
pub fn extract<B: Backend>(model: &Flux2Transformer<B>, name: &str) -> Result<Vec<(String, Factors)>> {
    let out: Vec<(String, Factors)> = model
        .linears()
        .into_iter()
        .filter_map(|(path, l)| {
            let a = l.adapters.iter().find(|a| a.name == name)?;
            Some((path, Factors { down: a.down.val().into_data(), up: a.up.val().into_data(), scale: a.scale }))
        })
        .collect();
    if out.is_empty() {
        return Err(Error::UnknownAdapter(name.into()));
    }
    Ok(out)
}

/// Removes adapter `name` from every layer (unmerging it first where merged).
pub fn remove<B: Backend>(model: &mut Flux2Transformer<B>, name: &str) -> Result<()> {
    crate::merge::unmerge(model, name).ok();
    let mut found = false;
    for (_, linear) in model.linears_mut() {
        let before = linear.adapters.len();
        linear.adapters.retain(|a| a.name != name);
        found |= linear.adapters.len() != before;
    }
    if found { Ok(()) } else { Err(Error::UnknownAdapter(name.into())) }
}
