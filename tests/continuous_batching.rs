//! Continuous batching in the generator: sequences that join while others decode and
//! leave at different steps produce exactly what each produces alone (greedy and
//! seeded sampling, with log-probabilities), on the tiny checkpoint.

mod common;

use std::collections::HashMap;

use common::tiny_chat;
use self_judge::engine::{Generated, GenerationRequest, Generator, SamplingParams};
use self_judge::model::{LoadOptions, LoadedModel};

fn request(id: u64, prompt: &str, m: &LoadedModel, max: usize, sampled: bool) -> GenerationRequest {
    GenerationRequest {
        request: id,
        prompt_ids: m.tokenizer.encode(prompt, true).unwrap(),
        params: SamplingParams {
            temperature: if sampled { 1.0 } else { 0.0 },
            seed: sampled.then_some(40 + id),
            max_new_tokens: max,
            logprobs: Some(2),
            ..SamplingParams::default()
        },
        n: if sampled { 2 } else { 1 },
    }
}

/// Runs `reqs` alone, each in its own generator.
fn alone(m: &LoadedModel, r: &GenerationRequest) -> Vec<Generated> {
    let mut g = Generator::new(m);
    let mut out = g.add(std::slice::from_ref(r)).unwrap();
    out.extend(g.run_to_end().unwrap());
    out.sort_by_key(|s| s.index);
    out
}

#[test]
fn sequences_joining_and_leaving_equal_each_alone() {
    let m = LoadedModel::load(&tiny_chat(), &LoadOptions::default()).unwrap();
    let reqs = [
        request(0, "The first prompt, the longest run", &m, 14, false),
        request(1, "Short", &m, 3, false),
        request(2, "Joins after three steps", &m, 9, false),
        request(3, "Sampled, joins later", &m, 7, true),
        request(4, "Joins as another leaves", &m, 5, false),
    ];
    // When each request joins: (before decode step k, request indices).
    let joins: HashMap<usize, Vec<usize>> =
        HashMap::from([(0, vec![0, 1]), (3, vec![2]), (5, vec![3]), (9, vec![4])]);
    let mut g = Generator::new(&m);
    let mut done: Vec<Generated> = Vec::new();
    let mut max_active = 0;
    for step in 0..40 {
        if let Some(idx) = joins.get(&step) {
            let batch: Vec<GenerationRequest> = idx.iter().map(|&i| reqs[i].clone()).collect();
            done.extend(g.add(&batch).unwrap());
        }
        max_active = max_active.max(g.num_active());
        done.extend(g.step().unwrap());
    }
    assert_eq!(g.num_active(), 0, "every sequence finished");
    assert!(
        max_active >= 3,
        "sequences overlapped ({max_active} at most)"
    );
    for r in &reqs {
        let mut together: Vec<&Generated> =
            done.iter().filter(|s| s.request == r.request).collect();
        together.sort_by_key(|s| s.index);
        let single = alone(&m, r);
        assert_eq!(together.len(), r.n, "request {}", r.request);
        assert_eq!(single.len(), r.n);
        for (t, s) in together.iter().zip(&single) {
            assert_eq!(
                t.token_ids, s.token_ids,
                "request {} sample {}",
                r.request, s.index
            );
            assert_eq!(t.text, s.text);
            assert_eq!(t.finish_reason, s.finish_reason);
            assert_eq!(t.logprobs.len(), s.logprobs.len());
            for (a, b) in t.logprobs.iter().zip(&s.logprobs) {
                assert_eq!(a.id, b.id);
                assert!((a.logprob - b.logprob).abs() < 1e-4, "{a:?} vs {b:?}");
            }
        }
    }
}
