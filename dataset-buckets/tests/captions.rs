//! Caption rules: defaults, trigger handling, dropout, tag shuffle with keep_tokens.

use dataset_buckets::{CaptionRules, CaptionSource, DatasetConfig, Rng};

fn rules(configure: impl FnOnce(&mut DatasetConfig)) -> CaptionRules {
    let mut c = DatasetConfig::for_folder("unused");
    configure(&mut c);
    CaptionRules::from_config(&c, None)
}

#[test]
fn file_text_is_trimmed_and_empty_falls_back_to_default() {
    let r = rules(|c| c.default_caption = Some("a photo".into()));
    assert_eq!(r.raw_caption(Some("  a red cat\n")), ("a red cat".to_string(), CaptionSource::File));
    assert_eq!(r.raw_caption(Some(" \n\t")), ("a photo".to_string(), CaptionSource::Default));
    assert_eq!(r.raw_caption(None), ("a photo".to_string(), CaptionSource::Default));
    let none = rules(|_| {});
    assert_eq!(none.raw_caption(None), (String::new(), CaptionSource::Empty));
}

#[test]
fn trigger_prepended_when_absent_and_placeholders_replaced() {
    let r = rules(|c| c.trigger_word = Some("sks".into()));
    assert_eq!(r.caption("a cat on a sofa"), "sks a cat on a sofa");
    assert_eq!(r.caption("a photo of [trigger] on a sofa"), "a photo of sks on a sofa");
    assert_eq!(r.caption("[name], portrait"), "sks, portrait");
    // Already present: not added twice.
    assert_eq!(r.caption("portrait of sks"), "portrait of sks");
    // Empty caption: the trigger alone.
    assert_eq!(r.caption(""), "sks");
}

#[test]
fn job_level_trigger_is_the_fallback() {
    let c = DatasetConfig::for_folder("unused");
    let r = CaptionRules::from_config(&c, Some("ohwx"));
    assert_eq!(r.caption("a dog"), "ohwx a dog");
    let mut own = DatasetConfig::for_folder("unused");
    own.trigger_word = Some("mine".into());
    assert_eq!(CaptionRules::from_config(&own, Some("ohwx")).caption("a dog"), "mine a dog");
}

#[test]
fn regularization_sets_replace_but_never_prepend() {
    let r = rules(|c| {
        c.trigger_word = Some("sks".into());
        c.is_reg = true;
    });
    assert_eq!(r.caption("a cat"), "a cat");
    assert_eq!(r.caption("a [trigger] cat"), "a sks cat");
    assert_eq!(r.dropout_caption(), "");
}

#[test]
fn without_trigger_placeholders_vanish() {
    let r = rules(|_| {});
    assert_eq!(r.caption("[trigger] a cat"), "a cat");
    assert_eq!(r.dropout_caption(), "");
}

#[test]
fn replacements_apply_to_the_raw_caption() {
    let r = rules(|c| c.replacements = vec!["man|person".into(), "red|blue".into()]);
    assert_eq!(r.caption("a man in red"), "a person in blue");
}

#[test]
fn dropout_yields_the_trigger_alone_at_the_configured_rate() {
    let r = rules(|c| {
        c.trigger_word = Some("sks".into());
        c.caption_dropout_rate = 0.25;
    });
    let mut rng = Rng::new(7);
    let n = 20_000;
    let mut dropped = 0;
    for _ in 0..n {
        let s = r.step_caption("a cat", &mut rng);
        if s.dropped {
            dropped += 1;
            assert_eq!(s.text, "sks");
        } else {
            assert_eq!(s.text, "sks a cat");
        }
    }
    let rate = f64::from(dropped) / f64::from(n);
    assert!((rate - 0.25).abs() < 0.02, "dropout rate {rate}");
}

#[test]
fn no_randomness_means_the_caption_is_untouched() {
    // Natural-language captions with commas pass through unchanged (no split/re-join).
    let r = rules(|c| c.trigger_word = Some("sks".into()));
    let mut rng = Rng::new(1);
    let s = r.step_caption("a cat, sitting,on a sofa", &mut rng);
    assert_eq!(s.text, "sks a cat, sitting,on a sofa");
    assert!(!s.dropped);
}

#[test]
fn shuffle_keeps_leading_tags_and_trigger_first() {
    let r = rules(|c| {
        c.trigger_word = Some("sks".into());
        c.shuffle_tokens = true;
        c.keep_tokens = 2;
    });
    let raw = "photo, cat, red, blue, green, yellow, sofa";
    let mut seen = std::collections::HashSet::new();
    let mut rng = Rng::new(3);
    for _ in 0..200 {
        let s = r.step_caption(raw, &mut rng).text;
        assert!(s.starts_with("sks photo, cat, "), "{s}");
        let mut tags: Vec<&str> = s.trim_start_matches("sks ").split(", ").collect();
        seen.insert(s.clone());
        tags.sort();
        let mut want: Vec<&str> = raw.split(", ").collect();
        want.sort();
        assert_eq!(tags, want, "shuffle must be a permutation");
    }
    assert!(seen.len() > 20, "only {} distinct orders", seen.len());
}

#[test]
fn shuffle_is_reproducible_from_the_seed() {
    let r = rules(|c| c.shuffle_tokens = true);
    let raw = "a, b, c, d, e, f, g, h";
    let a: Vec<String> = (0..5).map(|i| r.step_caption(raw, &mut Rng::derive(9, "caption", &[i])).text).collect();
    let b: Vec<String> = (0..5).map(|i| r.step_caption(raw, &mut Rng::derive(9, "caption", &[i])).text).collect();
    assert_eq!(a, b);
}

#[test]
fn token_dropout_never_drops_kept_tags() {
    let r = rules(|c| {
        c.token_dropout_rate = 1.0;
        c.keep_tokens = 1;
    });
    assert_eq!(r.step_caption("photo, cat, red", &mut Rng::new(0)).text, "photo");
    let half = rules(|c| c.token_dropout_rate = 0.5);
    let mut rng = Rng::new(5);
    let total: usize = (0..2000)
        .map(|_| half.step_caption("a, b, c, d", &mut rng).text.split(", ").filter(|t| !t.is_empty()).count())
        .sum();
    let mean = total as f64 / 2000.0;
    assert!((mean - 2.0).abs() < 0.15, "mean tags kept {mean}");
}

#[test]
fn class_replacement_for_output_preservation() {
    let r = rules(|c| c.trigger_word = Some("sks".into()));
    assert_eq!(r.with_class(&r.caption("a cat"), "cat"), "cat a cat");
}
