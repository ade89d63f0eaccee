//! `train.optimizer` + `train.optimizer_params` -> [`OptimizerPlan`] (the optimizers' own type, in
//! `crate::optim`): the name (with ai-toolkit's aliases), ai-toolkit's choices on top of each
//! optimizer's defaults (Prodigy's learning rate raised to 1.0 below 0.1, weight decay 0 for the
//! `adam8bit`/`adamw8` spellings), and checks that name the key at fault. A key the chosen optimizer
//! does not take is an error, as Python's keyword check makes it one in ai-toolkit.

use super::diagnostics::Diagnostic;
use super::schema::{OptimizerEps, OptimizerParams, TrainConfig};
use crate::optim::{
    AdafactorSettings, AdamW8bitSettings, AdamWSettings, LionSettings, OptimizerKind, OptimizerPlan, ProdigySettings,
};

/// Below this, ai-toolkit replaces Prodigy's learning rate by 1.0 (Prodigy's `lr` is a multiplier of
/// its own step-size estimate; a typical Adam rate such as 1e-4 would all but stop training).
pub const PRODIGY_MIN_LR: f64 = 0.1;

/// The optimizer name as ai-toolkit spells it (case-insensitive), with its aliases.
pub fn parse_optimizer(name: &str) -> Result<OptimizerKind, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "adamw" => Ok(OptimizerKind::AdamW),
        "adamw8bit" | "adam8bit" | "adamw8" => Ok(OptimizerKind::AdamW8bit),
        "adafactor" => Ok(OptimizerKind::Adafactor),
        "prodigy" | "prodigyopt" => Ok(OptimizerKind::Prodigy),
        "lion" => Ok(OptimizerKind::Lion),
        other => Err(format!(
            "{other} is not supported (supported: adamw, adamw8bit (also spelled adam8bit, adamw8), adafactor, \
             prodigy (also prodigyopt), lion; see docs/user-guide.md)"
        )),
    }
}

/// Which optimizers take each `optimizer_params` key (for the "not a parameter of" error).
const TAKEN_BY: &[(&str, &[OptimizerKind])] = {
    use OptimizerKind::*;
    &[
        ("weight_decay", &[AdamW, AdamW8bit, Adafactor, Prodigy, Lion]),
        ("betas", &[AdamW, AdamW8bit, Prodigy, Lion]),
        ("eps", &[AdamW, AdamW8bit, Adafactor, Prodigy]),
        ("block_size", &[AdamW8bit]),
        ("min_8bit_size", &[AdamW8bit]),
        ("clip_threshold", &[Adafactor]),
        ("decay_rate", &[Adafactor]),
        ("beta1", &[Adafactor]),
        ("scale_parameter", &[Adafactor]),
        ("relative_step", &[Adafactor]),
        ("warmup_init", &[Adafactor]),
        ("beta3", &[Prodigy]),
        ("d0", &[Prodigy]),
        ("d_coef", &[Prodigy]),
        ("growth_rate", &[Prodigy]),
        ("use_bias_correction", &[Prodigy]),
        ("safeguard_warmup", &[Prodigy]),
        ("decouple", &[Prodigy]),
        ("slice_p", &[Prodigy]),
        ("decoupled_weight_decay", &[Lion]),
    ]
};

/// The keys of `params` that are set.
fn set_keys(params: &OptimizerParams) -> Vec<&'static str> {
    let p = params;
    [
        ("weight_decay", p.weight_decay.is_some()),
        ("betas", p.betas.is_some()),
        ("eps", p.eps.is_some()),
        ("block_size", p.block_size.is_some()),
        ("min_8bit_size", p.min_8bit_size.is_some()),
        ("clip_threshold", p.clip_threshold.is_some()),
        ("decay_rate", p.decay_rate.is_some()),
        ("beta1", p.beta1.is_some()),
        ("scale_parameter", p.scale_parameter.is_some()),
        ("relative_step", p.relative_step.is_some()),
        ("warmup_init", p.warmup_init.is_some()),
        ("beta3", p.beta3.is_some()),
        ("d0", p.d0.is_some()),
        ("d_coef", p.d_coef.is_some()),
        ("growth_rate", p.growth_rate.is_some()),
        ("use_bias_correction", p.use_bias_correction.is_some()),
        ("safeguard_warmup", p.safeguard_warmup.is_some()),
        ("decouple", p.decouple.is_some()),
        ("slice_p", p.slice_p.is_some()),
        ("decoupled_weight_decay", p.decoupled_weight_decay.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

/// Collects range errors for one key path prefix.
struct Checks<'a> {
    prefix: String,
    out: &'a mut Vec<Diagnostic>,
    ok: bool,
}

impl Checks<'_> {
    fn fail(&mut self, key: &str, message: String) {
        self.out.push(Diagnostic::error(format!("{}.{key}", self.prefix), message));
        self.ok = false;
    }
    fn positive(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            self.fail(key, format!("{v} must be a number > 0"));
        }
    }
    fn unit(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v
            && !(0.0..1.0).contains(&v)
        {
            self.fail(key, format!("{v} must be in [0, 1)"));
        }
    }
}

/// Resolves the optimizer of process `path` (`config.process[0]`), pushing errors and notes to `out`.
/// `None` when there is an error. Weight decay and betas are range-checked by
/// [`super::validate::validate`] already.
pub fn resolve_optimizer(t: &TrainConfig, path: &str, out: &mut Vec<Diagnostic>) -> Option<OptimizerPlan> {
    let kind = match parse_optimizer(&t.optimizer) {
        Ok(kind) => kind,
        Err(message) => {
            out.push(Diagnostic::error(format!("{path}.train.optimizer"), message));
            return None;
        }
    };
    let spelled = t.optimizer.trim().to_ascii_lowercase();
    let p = &t.optimizer_params;
    let mut c = Checks { prefix: format!("{path}.train.optimizer_params"), out, ok: true };

    for key in set_keys(p) {
        let takers = TAKEN_BY.iter().find(|(k, _)| *k == key).map(|(_, t)| *t).unwrap_or(&[]);
        if !takers.contains(&kind) {
            let names: Vec<&str> = takers.iter().map(|k| k.name()).collect();
            c.fail(key, format!("{} does not take `{key}` (it is a parameter of {})", kind.name(), names.join(", ")));
        }
    }

    let lr = t.unet_lr.unwrap_or(t.lr);
    // ai-toolkit's spellings that build a different class with another weight-decay default.
    let no_decay_spelling = matches!(spelled.as_str(), "adam8bit" | "adamw8");
    if no_decay_spelling {
        let what = if spelled == "adam8bit" {
            "bitsandbytes' Adam8bit: the same kernel as AdamW8bit with weight_decay 0 by default"
        } else {
            "ai-toolkit's own per-tensor 8-bit Adam; here bitsandbytes' block-wise state, weight_decay 0 by default"
        };
        c.out
            .push(Diagnostic::note(format!("{path}.train.optimizer"), format!("{spelled} runs as adamw8bit ({what})")));
    }
    // `eps`: one number for all but Adafactor, which takes a pair.
    let mut eps = None;
    let mut eps_pair = None;
    match (kind, p.eps) {
        (_, None) => {}
        (OptimizerKind::Adafactor, Some(OptimizerEps::Pair(pair))) => {
            if pair.iter().any(|e| !(e.is_finite() && *e >= 0.0)) {
                c.fail("eps", format!("{pair:?} must be two numbers >= 0"));
            }
            eps_pair = Some(pair);
        }
        (OptimizerKind::Adafactor, Some(OptimizerEps::One(e))) => {
            c.fail("eps", format!("{e}: Adafactor takes a pair [eps1, eps2] (default [1e-30, 1e-3])"))
        }
        (_, Some(OptimizerEps::One(e))) => {
            c.positive("eps", Some(e));
            eps = Some(e);
        }
        (_, Some(OptimizerEps::Pair(pair))) => c.fail("eps", format!("{pair:?}: {} takes one number", kind.name())),
    }
    let adam = || {
        let mut a = AdamWSettings::new(lr);
        if no_decay_spelling {
            a.weight_decay = 0.0;
        }
        a.betas = p.betas.unwrap_or(a.betas);
        a.eps = eps.unwrap_or(a.eps);
        a.weight_decay = p.weight_decay.unwrap_or(a.weight_decay);
        a
    };

    let plan = match kind {
        OptimizerKind::AdamW => OptimizerPlan::AdamW(adam()),
        OptimizerKind::AdamW8bit => {
            let mut s = AdamW8bitSettings { adam: adam(), ..AdamW8bitSettings::new(lr) };
            if let Some(b) = p.block_size {
                if !(b.is_power_of_two() && (64..=65536).contains(&b)) {
                    c.fail(
                        "block_size",
                        format!("{b} must be a power of two from 64 to 65536 (bitsandbytes uses 256 or 2048)"),
                    );
                }
                s.block_size = b;
            }
            s.min_8bit_size = p.min_8bit_size.unwrap_or(s.min_8bit_size);
            OptimizerPlan::AdamW8bit(s)
        }
        OptimizerKind::Adafactor => {
            let mut s = AdafactorSettings::new(lr);
            s.weight_decay = p.weight_decay.unwrap_or(s.weight_decay);
            s.eps = eps_pair.unwrap_or(s.eps);
            c.positive("clip_threshold", p.clip_threshold);
            if let Some(d) = p.decay_rate
                && !(d.is_finite() && d <= 0.0)
            {
                c.fail(
                    "decay_rate",
                    format!("{d} must be a number <= 0 (the second-moment decay is 1 - t^decay_rate)"),
                );
            }
            c.unit("beta1", p.beta1);
            s.clip_threshold = p.clip_threshold.unwrap_or(s.clip_threshold);
            s.decay_rate = p.decay_rate.unwrap_or(s.decay_rate);
            s.beta1 = p.beta1;
            s.scale_parameter = p.scale_parameter.unwrap_or(s.scale_parameter);
            s.relative_step = p.relative_step.unwrap_or(s.relative_step);
            s.warmup_init = p.warmup_init.unwrap_or(s.warmup_init);
            if s.warmup_init && !s.relative_step {
                c.fail("warmup_init", "true needs `relative_step: true` (as in transformers)".into());
            }
            if s.relative_step {
                c.out.push(Diagnostic::note(
                    format!("{path}.train.optimizer_params.relative_step"),
                    "the learning rate and its schedule are ignored: Adafactor computes its own step size \
                     (ai-toolkit always passes lr, which transformers rejects with relative_step)",
                ));
            }
            OptimizerPlan::Adafactor(s)
        }
        OptimizerKind::Prodigy => {
            let mut s = ProdigySettings::new(lr);
            s.betas = p.betas.unwrap_or(s.betas);
            s.eps = eps.unwrap_or(s.eps);
            s.weight_decay = p.weight_decay.unwrap_or(s.weight_decay);
            c.unit("beta3", p.beta3);
            c.positive("d0", p.d0);
            c.positive("d_coef", p.d_coef);
            if let Some(g) = p.growth_rate
                && (g.is_nan() || g <= 0.0)
            {
                c.fail("growth_rate", format!("{g} must be > 0 (.inf: unbounded)"));
            }
            if p.slice_p == Some(0) {
                c.fail("slice_p", "0 is not allowed: must be at least 1".into());
            }
            s.beta3 = p.beta3;
            s.d0 = p.d0.unwrap_or(s.d0);
            s.d_coef = p.d_coef.unwrap_or(s.d_coef);
            s.growth_rate = p.growth_rate.unwrap_or(s.growth_rate);
            s.use_bias_correction = p.use_bias_correction.unwrap_or(s.use_bias_correction);
            s.safeguard_warmup = p.safeguard_warmup.unwrap_or(s.safeguard_warmup);
            s.decouple = p.decouple.unwrap_or(s.decouple);
            s.slice_p = p.slice_p.unwrap_or(s.slice_p);
            if s.lr < PRODIGY_MIN_LR {
                c.out.push(Diagnostic::note(
                    format!("{path}.train.lr"),
                    format!(
                        "{} is below {PRODIGY_MIN_LR}: Prodigy runs with lr 1.0, as ai-toolkit does (Prodigy's lr \
                         multiplies its own step-size estimate)",
                        s.lr
                    ),
                ));
                s.lr = 1.0;
            }
            OptimizerPlan::Prodigy(s)
        }
        OptimizerKind::Lion => {
            let mut s = LionSettings::new(lr);
            s.betas = p.betas.unwrap_or(s.betas);
            s.weight_decay = p.weight_decay.unwrap_or(s.weight_decay);
            s.decoupled_weight_decay = p.decoupled_weight_decay.unwrap_or_default();
            OptimizerPlan::Lion(s)
        }
    };
    c.ok.then_some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(optimizer: &str, params: serde_json::Value) -> TrainConfig {
        TrainConfig {
            optimizer: optimizer.into(),
            lr: 1e-4,
            optimizer_params: serde_json::from_value(params).unwrap(),
            ..TrainConfig::default()
        }
    }

    fn resolve(t: &TrainConfig) -> (Option<OptimizerPlan>, Vec<Diagnostic>) {
        let mut out = Vec::new();
        (resolve_optimizer(t, "p", &mut out), out)
    }

    #[test]
    fn defaults_follow_ai_toolkit() {
        let (plan, _) = resolve(&train("AdamW", serde_json::json!({})));
        assert_eq!(
            plan,
            Some(OptimizerPlan::AdamW(AdamWSettings { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-6, weight_decay: 0.01 }))
        );
        let (plan, out) = resolve(&train("adam8bit", serde_json::json!({})));
        let Some(OptimizerPlan::AdamW8bit(s)) = plan else { panic!("{plan:?}") };
        assert_eq!((s.adam.weight_decay, s.block_size, s.min_8bit_size), (0.0, 2048, 4096));
        assert!(out[0].message.contains("adam8bit runs as adamw8bit"), "{out:?}");
        let plan = resolve(&train("lion", serde_json::json!({}))).0;
        let Some(OptimizerPlan::Lion(s)) = plan else { panic!("{plan:?}") };
        assert_eq!((s.betas, s.weight_decay), ([0.9, 0.99], 0.0));
        let (plan, out) = resolve(&train("prodigyopt", serde_json::json!({"d_coef": 2.0})));
        let Some(OptimizerPlan::Prodigy(s)) = plan else { panic!("{plan:?}") };
        assert_eq!((s.lr, s.eps, s.d_coef), (1.0, 1e-6, 2.0));
        assert_eq!(out[0].path, "p.train.lr");
        let plan = resolve(&train("adafactor", serde_json::json!({"eps": [1e-30, 2e-3], "beta1": 0.9}))).0;
        let Some(OptimizerPlan::Adafactor(a)) = plan else { panic!("{plan:?}") };
        assert_eq!((a.eps, a.beta1, a.relative_step, a.scale_parameter), ([1e-30, 2e-3], Some(0.9), false, false));
    }

    #[test]
    fn keys_of_other_optimizers_and_bad_values_are_errors_with_paths() {
        let (plan, out) = resolve(&train("adamw", serde_json::json!({"d_coef": 2.0, "eps": [1.0, 2.0]})));
        assert!(plan.is_none());
        let text: Vec<String> = out.iter().map(|d| format!("{}: {}", d.path, d.message)).collect();
        assert!(
            text.contains(
                &"p.train.optimizer_params.d_coef: adamw does not take `d_coef` (it is a parameter of prodigy)"
                    .to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("p.train.optimizer_params.eps: [1.0, 2.0]: adamw takes one number")),
            "{text:?}"
        );
        let (plan, out) = resolve(&train("adafactor", serde_json::json!({"warmup_init": true, "decay_rate": 0.5})));
        assert!(plan.is_none());
        assert_eq!(out.len(), 2, "{out:?}");
        let (plan, out) = resolve(&train("adamw8bit", serde_json::json!({"block_size": 1000})));
        assert!(plan.is_none() && out[0].message.contains("power of two"), "{out:?}");
        let (plan, out) = resolve(&train("sgd", serde_json::json!({})));
        assert!(plan.is_none());
        assert!(out[0].message.starts_with("sgd is not supported (supported: adamw, adamw8bit"), "{out:?}");
    }
}
