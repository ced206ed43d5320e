//! Shared-prefix KV on the real SmolLM2 model: a tournament of 16 candidates gives the
//! same probabilities (within 1e-5) and bracket as computing every prompt in full, while
//! computing at most half of the naive prefill tokens.

mod common;

use std::cell::RefCell;

use common::smollm2_path;
use self_judge::engine::scorer::CachedScorer;
use self_judge::engine::DirectScorer;
use self_judge::judge::{
    run_tournament, Judge, JudgeConfig, JudgeOptions, OrderProbs, Pair, Scorer,
};
use self_judge::model::{LoadOptions, LoadedModel};

/// Wraps a scorer and records every prompt and result.
struct Recording<'a, S: Scorer> {
    inner: &'a S,
    prompts: RefCell<Vec<Vec<u32>>>,
    probs: RefCell<Vec<OrderProbs>>,
}

impl<S: Scorer> Scorer for Recording<'_, S> {
    fn score(
        &self,
        prompts: &[Vec<u32>],
    ) -> Result<Vec<OrderProbs>, self_judge::judge::JudgeError> {
        let p = self.inner.score(prompts)?;
        self.prompts.borrow_mut().extend(prompts.iter().cloned());
        self.probs.borrow_mut().extend(p.iter().copied());
        Ok(p)
    }
}

fn candidates() -> Vec<String> {
    let openers = [
        "Sure.",
        "Well,",
        "Honestly,",
        "In short,",
        "Good question!",
        "Let me think.",
        "Yes:",
        "Hmm,",
    ];
    let bodies = [
        "a warm bath and a dark, quiet room help most people fall asleep faster.",
        "keep a regular schedule, even on weekends, and avoid screens before bed.",
        "caffeine late in the day is the usual culprit; stop after lunch.",
        "try reading a paper book for twenty minutes with a dim light.",
    ];
    (0..16)
        .map(|i| format!("{} {} (tip {i})", openers[i % 8], bodies[(i / 2) % 4]))
        .collect()
}

#[test]
fn tournament_of_16_matches_the_unshared_path_with_half_the_prefill() {
    let model = LoadedModel::load(&smollm2_path(), &LoadOptions::default()).unwrap();
    let cfg = JudgeConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smollm2_hh_judge.yaml"),
    )
    .unwrap();
    let judge = Judge::new(&model, &cfg, &JudgeOptions::default()).unwrap();
    let contexts = vec!["User: I keep waking up at night and feel tired all day. Any advice on how to sleep better? I already tried counting sheep.".to_string()];
    let responses = vec![candidates()];

    let cached = CachedScorer::new(&model.decoder, judge.token_ids, 8192, 1 << 30);
    let shared = Recording {
        inner: &cached,
        prompts: RefCell::default(),
        probs: RefCell::default(),
    };
    let a = run_tournament(&contexts, &responses, Some(42), |pairs: &[Pair]| {
        judge.judge(pairs, &shared)
    })
    .unwrap();

    let direct = DirectScorer {
        decoder: &model.decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 8192,
    };
    let full = Recording {
        inner: &direct,
        prompts: RefCell::default(),
        probs: RefCell::default(),
    };
    let b = run_tournament(&contexts, &responses, Some(42), |pairs: &[Pair]| {
        judge.judge(pairs, &full)
    })
    .unwrap();

    assert_eq!(shared.prompts.borrow().len(), 2 * 15);
    assert_eq!(*shared.prompts.borrow(), *full.prompts.borrow());
    assert_eq!(shared.probs.borrow().len(), full.probs.borrow().len());
    for (x, y) in shared.probs.borrow().iter().zip(full.probs.borrow().iter()) {
        assert!(
            (x.p_a - y.p_a).abs() < 1e-5 && (x.p_b - y.p_b).abs() < 1e-5,
            "{x:?} vs {y:?}"
        );
    }
    assert_eq!(a[0].winner_index, b[0].winner_index);
    let naive: usize = full.prompts.borrow().iter().map(Vec::len).sum();
    let stats = cached.stats();
    eprintln!(
        "prefill: computed {} reused {} naive {naive}",
        stats.computed, stats.reused
    );
    // Every prompt starts from a cached prefix (the shared context, or later a prompt
    // of an earlier round with the same response in position A).
    assert_eq!(stats.hits, 30);
    assert!(
        (stats.computed as f64) <= 0.5 * naive as f64,
        "computed {} of {naive} naive prefill tokens",
        stats.computed
    );
}
