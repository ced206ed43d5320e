//! The judge service on its own (no HTTP): it gives what the synchronous judge gives,
//! admits or refuses work as a whole, and validates once.

mod common;

use std::sync::Arc;

use common::{judge_config, tiny_chat};
use self_judge::engine::{spawn_engine, DirectScorer, EngineMetrics, EngineSettings};
use self_judge::judge::{run_tournament, Judge, JudgeOptions, Pair};
use self_judge::model::{LoadOptions, LoadedModel};
use self_judge::service::{BestOfN, JudgeService, Limits, Prompt, SamplingRequest, ServiceError};
use self_judge::tokenizer::ChatMessage;

const CONFIG: &str = "smollm2_hh_judge.yaml";

struct Fixture {
    service: JudgeService,
    judge: Judge,
    model: Arc<LoadedModel>,
    rejected: prometheus::IntCounter,
}

fn fixture(max_concurrent_requests: usize) -> Fixture {
    let model = Arc::new(LoadedModel::load(&tiny_chat(), &LoadOptions::default()).unwrap());
    let judge = Judge::new(&*model, &judge_config(CONFIG), &JudgeOptions::default()).unwrap();
    let settings = EngineSettings {
        max_batch_tokens: 4096,
        max_batch_size: 64,
        prefix_cache_bytes: 1 << 20,
        failing_judge_batches: 0,
    };
    let registry = prometheus::Registry::new();
    let engine = spawn_engine(
        vec![model.clone()],
        judge.token_ids,
        settings,
        EngineMetrics::new(&registry).unwrap(),
    );
    let limits = Limits {
        max_batch_tokens: 4096,
        max_batch_size: 64,
        max_concurrent_requests,
        max_input_tokens: judge.prompts.max_length(),
        truncate: true,
        max_new_tokens: 16,
        max_n: 4,
        max_body_bytes: 1 << 20,
        kv_budget_bytes: 1 << 30,
    };
    let rejected = prometheus::IntCounter::new("rejected", "refused").unwrap();
    let service = JudgeService::new(
        model.clone(),
        judge.clone(),
        engine,
        limits,
        rejected.clone(),
    )
    .unwrap();
    Fixture {
        service,
        judge,
        model,
        rejected,
    }
}

fn pairs() -> Vec<Pair> {
    ["Paris.", "Blue.", "Four."]
        .iter()
        .zip(["Lyon.", "The sky is green.", "Five."])
        .map(|(a, b)| Pair {
            context: "User: a question".into(),
            response_a: a.to_string(),
            response_b: b.to_string(),
        })
        .collect()
}

fn direct(f: &Fixture) -> DirectScorer<'_> {
    DirectScorer {
        decoder: &f.model.decoder,
        token_ids: f.judge.token_ids,
        max_batch_tokens: 4096,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_and_brackets_equal_the_synchronous_judge() {
    let f = fixture(64);
    let want = f.judge.judge(&pairs(), &direct(&f)).unwrap();
    let got = f.service.judge(pairs(), None).await.unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.winner, w.winner);
        assert!((g.score_a - w.score_a).abs() < 1e-5, "{g:?} vs {w:?}");
        assert!((g.score_b - w.score_b).abs() < 1e-5, "{g:?} vs {w:?}");
    }

    let contexts = vec!["User: one".to_string(), "User: two".to_string()];
    let responses = vec![
        vec![
            "a".to_string(),
            "bb".into(),
            "ccc".into(),
            "dddd".into(),
            "e".into(),
        ],
        vec!["x".to_string(), "yy".into(), "zzz".into()],
    ];
    let want = run_tournament(&contexts, &responses, Some(7), |p| {
        f.judge.judge(p, &direct(&f))
    })
    .unwrap();
    let got = f
        .service
        .tournament(&contexts, &responses, Some(7), None)
        .await
        .unwrap();
    assert_eq!((got.len(), want.len()), (2, 2));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.winner_index, w.winner_index);
        assert_eq!(g.bracket.rounds.len(), w.bracket.rounds.len());
        for (gr, wr) in g.bracket.rounds.iter().zip(&w.bracket.rounds) {
            assert_eq!(gr.bye, wr.bye);
            let ab = |r: &self_judge::judge::Round| -> Vec<(usize, usize, usize)> {
                r.matches.iter().map(|m| (m.a, m.b, m.winner)).collect()
            };
            assert_eq!(ab(gr), ab(wr));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_admitted_whole_or_refused_before_any_compute() {
    // One principle: a pair is 2 prompts.
    let f = fixture(4);
    assert_eq!(f.judge.prompts_per_pair(), 2);
    let e = f.service.judge(pairs(), None).await.unwrap_err();
    assert!(matches!(e, ServiceError::TooLarge(_)), "{e}");
    assert!(e.to_string().contains("6 judge prompts"), "{e}");

    let held = f.service.admit(3).unwrap();
    let e = f
        .service
        .judge(pairs()[..1].to_vec(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Overloaded(_)), "{e}");
    assert_eq!(f.rejected.get(), 1);
    drop(held);
    assert_eq!(
        f.service
            .judge(pairs()[..2].to_vec(), None)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(f.rejected.get(), 1);

    // Best-of-4 needs 4 sequences and 3 matches of 2 prompts: 10 > 4.
    let e = f
        .service
        .best_of_n(BestOfN {
            prompt: Prompt::Text("Hello".into()),
            context: None,
            n: 4,
            keep: 1,
            sampling: SamplingRequest::default(),
            seed: Some(1),
            principles: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::TooLarge(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_not_internal() {
    let f = fixture(64);
    let s = &f.service;
    let invalid = |r: Result<_, ServiceError>, what: &str| match r {
        Err(ServiceError::Invalid(m)) => assert!(m.contains(what), "{m} lacks {what}"),
        Err(ServiceError::Judge(e)) => assert!(e.to_string().contains(what), "{e}"),
        other => panic!("{what}: {:?}", other.map(|_| ())),
    };
    invalid(s.judge(vec![], None).await.map(|_| ()), "`pairs` is empty");
    invalid(
        s.judge(pairs(), Some(&["nope".to_string()]))
            .await
            .map(|_| ()),
        "nope",
    );
    invalid(
        s.tournament(&[], &[], None, None).await.map(|_| ()),
        "empty",
    );
    invalid(
        s.tournament(&["c".into()], &[vec![]], None, None)
            .await
            .map(|_| ()),
        "`responses[0]` is empty",
    );
    invalid(
        s.tournament(&["c".into(), "d".into()], &[vec!["a".into()]], None, None)
            .await
            .map(|_| ()),
        "`contexts` has 2 items but `responses` has 1",
    );
    invalid(
        s.generate(
            Prompt::Text("x".into()),
            Some(5),
            SamplingRequest::default(),
        )
        .await
        .map(|_| ()),
        "`n` must be between 1 and 4",
    );
    invalid(
        s.generate(Prompt::Chat(vec![]), None, SamplingRequest::default())
            .await
            .map(|_| ()),
        "`messages` is empty",
    );
    invalid(
        s.generate(
            Prompt::Text(String::new()),
            None,
            SamplingRequest::default(),
        )
        .await
        .map(|_| ()),
        "the prompt is empty",
    );
    let too_long = SamplingRequest {
        max_new_tokens: Some(17),
        ..Default::default()
    };
    invalid(
        s.generate(Prompt::Text("x".into()), None, too_long)
            .await
            .map(|_| ()),
        "`max_new_tokens` must be between 1 and 16",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_n_is_generation_then_a_tournament_over_it() {
    let f = fixture(64);
    let messages = vec![ChatMessage::new("user", "Name a fruit.")];
    let sampling = SamplingRequest {
        max_new_tokens: Some(8),
        temperature: Some(1.0),
        seed: Some(3),
        ..Default::default()
    };
    let best = f
        .service
        .best_of_n(BestOfN {
            prompt: Prompt::Chat(messages.clone()),
            context: None,
            n: 4,
            keep: 1,
            sampling: sampling.clone(),
            seed: Some(3),
            principles: None,
        })
        .await
        .unwrap();
    assert_eq!(best.candidates.len(), 4);
    assert!(best.prompt_tokens > 0);

    // The same seed gives the same candidates; the judge's context is the HH form.
    let again = f
        .service
        .generate(Prompt::Chat(messages.clone()), Some(4), sampling)
        .await
        .unwrap();
    let texts: Vec<String> = again.generations.iter().map(|g| g.text.clone()).collect();
    let want: Vec<String> = best.candidates.iter().map(|g| g.text.clone()).collect();
    assert_eq!(texts, want);
    let context = self_judge::judge::hh_context(&messages);
    assert_eq!(context, "User: Name a fruit.");
    let manual = f
        .service
        .tournament(&[context], &[texts], Some(3), None)
        .await
        .unwrap();
    assert_eq!(manual[0].winner_index, best.tournaments[0].winner_index);
    assert_eq!(manual[0].bracket.rounds.len(), 2);
}
