//! The keys/values budget of generations under load: 64 concurrent best-of-4
//! tournaments against a budget that holds only a few of them; every request is served or
//! refused with 429 naming the budget, the keys/values the engine really holds (sampled
//! from /metrics throughout) never exceed the budget, and everything is released after.

mod common;

use common::{post, tiny_chat, Server};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// tiny-chat holds 2 x 2 layers x 2 kv heads x 16 dims x 4 bytes per position.
const BYTES_PER_TOKEN: f64 = 256.0;
const BUDGET: f64 = (1 << 20) as f64;

fn metrics(s: &Server) -> (f64, f64, f64) {
    let text = s.metrics_text();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    (
        get("self_judge_kv_bytes"),
        get("self_judge_kv_reserved_bytes"),
        get("self_judge_kv_budget_bytes"),
    )
}

#[test]
fn concurrent_best_of_four_stays_within_the_kv_budget() {
    let s = Arc::new(Server::start(
        &tiny_chat(),
        "smollm2_hh_judge.yaml",
        &["--kv-budget-mb", "1", "--max-n", "32"],
    ));
    // One request reserves 4 sequences x (prompt + 200) positions: a few fit at once.
    let body = json!({"query": "Tell me a long story about a cat.", "n": 4,
                      "max_new_tokens": 200, "temperature": 1.0, "seed": 3});
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((0.0f64, 0.0f64)));
    let sampler = {
        let (s, stop, peak) = (s.clone(), stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let (held, reserved, budget) = metrics(&s);
                assert_eq!(budget, BUDGET);
                assert!(held <= BUDGET, "the engine holds {held} bytes of KV");
                assert!(reserved <= BUDGET, "{reserved} bytes reserved");
                let mut p = peak.lock().unwrap();
                *p = (p.0.max(held), p.1.max(reserved));
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            samples
        })
    };
    let barrier = Arc::new(std::sync::Barrier::new(64));
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (s, body, barrier) = (s.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut body = body;
                body["seed"] = json!(i);
                barrier.wait();
                post(&s, "/tournament", &body)
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("the budget held in every sample");
    let served = answers.iter().filter(|(st, _)| *st == 200).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 429)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(served + refused.len(), 64, "{answers:?}");
    assert!(served >= 2, "{served} served");
    assert!(!refused.is_empty(), "64 at once cannot all fit the budget");
    for r in &refused {
        assert_eq!(r["error_type"], "overloaded", "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("--kv-budget-mb"),
            "{r}"
        );
    }
    for (st, v) in &answers {
        if *st == 200 {
            assert_eq!(v["candidates"].as_array().unwrap().len(), 4);
        }
    }
    let (held_peak, reserved_peak) = *peak.lock().unwrap();
    assert!(samples > 10, "{samples} samples");
    assert!(held_peak > 0.0, "no sample saw a generation's KV");
    // What sequences hold never exceeds what their requests reserved: one request's
    // most is 4 x (prompt + 200) positions.
    assert!(
        reserved_peak >= 4.0 * 200.0 * BYTES_PER_TOKEN,
        "{reserved_peak}"
    );
    let (held, reserved, _) = metrics(&s);
    assert_eq!((held, reserved), (0.0, 0.0), "released after the load");
    // A request that can never fit is 413, naming the budget.
    let (st, v) = post(
        &s,
        "/generate",
        &json!({"prompt": "x", "n": 32, "max_new_tokens": 250}),
    );
    assert_eq!(st, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--kv-budget-mb"),
        "{v}"
    );
    let (st, v) = post(
        &s,
        "/generate",
        &json!({"prompt": "x", "n": 2, "max_new_tokens": 8}),
    );
    assert_eq!(st, 200, "{v}");
}
