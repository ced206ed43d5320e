//! The OpenAI-compatible routes over HTTP on the tiny checkpoint: the same samples as
//! `/generate`, streams that add up to the non-streamed reply, `best_of` picked by the
//! judge's own tournament, and OpenAI's error shape.

mod common;

use std::io::{BufRead, BufReader};

use common::{client, post, smollm2_path, tiny_chat, Server};
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";
const MODEL: &str = "tiny-chat";

/// The `data:` payloads of a server-sent event stream, `[DONE]` included.
fn sse(s: &Server, path: &str, body: &Value) -> Vec<String> {
    let r = client().post(s.url(path)).json(body).send().unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    BufReader::new(r)
        .lines()
        .map(Result::unwrap)
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

fn chat(n: usize, seed: u64) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Name a fruit."}],
           "max_tokens": 6, "n": n, "seed": seed, "temperature": 1.0})
}

#[test]
fn chat_completions_are_the_generate_samples_with_usage_and_logprobs() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let r = client().get(s.url("/v1/models")).send().unwrap();
    let models: Value = r.json().unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["object"], "list");

    let mut req = chat(2, 3);
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(2);
    let (status, out) = post(&s, "/v1/chat/completions", &req);
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], MODEL);
    let choices = out["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);

    let (status, gen) = post(
        &s,
        "/generate",
        &json!({"messages": [{"role": "user", "content": "Name a fruit."}],
                "max_new_tokens": 6, "n": 2, "seed": 3, "temperature": 1.0}),
    );
    assert_eq!(status, 200);
    let mut tokens = 0;
    assert_eq!(choices.len(), gen["generations"].as_array().unwrap().len());
    for (c, g) in choices.iter().zip(gen["generations"].as_array().unwrap()) {
        assert_eq!(c["message"]["content"], g["text"]);
        assert_eq!(c["message"]["role"], "assistant");
        assert_eq!(c["finish_reason"], "length");
        let lps = c["logprobs"]["content"].as_array().unwrap();
        assert_eq!(lps.len() as u64, g["tokens"].as_u64().unwrap());
        for t in lps {
            let lp = t["logprob"].as_f64().unwrap();
            assert!(lp <= 0.0, "{t}");
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 2);
            let (a, b) = (
                top[0]["logprob"].as_f64().unwrap(),
                top[1]["logprob"].as_f64().unwrap(),
            );
            assert!(a >= b && a >= lp - 1e-6, "{t}");
        }
        tokens += lps.len() as u64;
    }
    let u = &out["usage"];
    assert_eq!(u["completion_tokens"].as_u64().unwrap(), tokens);
    assert_eq!(u["prompt_tokens"], gen["prompt_tokens"]);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        tokens + u["prompt_tokens"].as_u64().unwrap()
    );
}

#[test]
fn streams_add_up_to_the_reply_and_end_with_done() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let (_, whole) = post(&s, "/v1/chat/completions", &chat(2, 5));
    let mut req = chat(2, 5);
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let events = sse(&s, "/v1/chat/completions", &req);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut text = [String::new(), String::new()];
    let mut finished = [None, None];
    for (k, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"], "one id for the whole stream");
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            if k == 0 {
                assert_eq!(ch["delta"]["role"], "assistant");
            }
            if let Some(t) = ch["delta"]["content"].as_str() {
                assert!(finished[i].is_none(), "text after the end");
                text[i].push_str(t);
            }
            if let Some(r) = ch["finish_reason"].as_str() {
                finished[i] = Some(r.to_string());
            }
        }
    }
    for i in 0..2 {
        assert_eq!(
            text[i],
            whole["choices"][i]["message"]["content"].as_str().unwrap()
        );
        assert_eq!(
            finished[i].as_deref(),
            whole["choices"][i]["finish_reason"].as_str()
        );
    }
    let last = chunks.last().unwrap();
    assert!(last["choices"].as_array().unwrap().is_empty());
    assert_eq!(last["usage"], whole["usage"]);

    // Completions stream the same way.
    let req =
        json!({"model": MODEL, "prompt": "Hello", "max_tokens": 5, "seed": 9, "stream": true});
    let events = sse(&s, "/v1/completions", &req);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    let (_, whole) = post(
        &s,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Hello", "max_tokens": 5, "seed": 9}),
    );
    assert_eq!(streamed, whole["choices"][0]["text"].as_str().unwrap());
}

#[test]
fn best_of_returns_the_winners_of_the_models_own_tournaments() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let req = json!({"model": MODEL, "prompt": "User: Name a fruit.", "max_tokens": 5,
                     "seed": 2, "n": 2, "best_of": 4, "logprobs": 1});
    let (status, out) = post(&s, "/v1/completions", &req);
    assert_eq!(status, 200, "{out}");
    let sj = &out["self_judge"];
    assert_eq!(sj["best_of"], 4);
    let candidates: Vec<String> = sj["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(candidates.len(), 4);
    let winners: Vec<usize> = sj["winners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(winners.len(), 2);
    assert_ne!(winners[0], winners[1]);
    assert_eq!(out["choices"].as_array().unwrap().len(), winners.len());
    for (c, &w) in out["choices"].as_array().unwrap().iter().zip(&winners) {
        assert_eq!(c["text"].as_str().unwrap(), candidates[w]);
        assert!(!c["logprobs"]["tokens"].as_array().unwrap().is_empty());
    }
    // The first winner is what /tournament picks over the same candidates and seed;
    // the second wins the bracket of the other three.
    let (_, t) = post(
        &s,
        "/tournament",
        &json!({"contexts": ["User: Name a fruit."], "responses": [candidates.clone()], "seed": 2}),
    );
    assert_eq!(
        t["winners"][0]["index"].as_u64().unwrap() as usize,
        winners[0]
    );
    let rounds = |b: &Value| b["rounds"].as_array().unwrap().len();
    assert_eq!(rounds(&sj["brackets"][0]), 2);
    assert_eq!(rounds(&sj["brackets"][1]), 2);
    for m in sj["brackets"][1]["rounds"][0]["matches"]
        .as_array()
        .unwrap()
    {
        assert_ne!(m["a"].as_u64().unwrap() as usize, winners[0]);
        assert_ne!(m["b"].as_u64().unwrap() as usize, winners[0]);
    }
    // Seeded: the same request, the same answer.
    let (_, again) = post(&s, "/v1/completions", &req);
    assert_eq!(again["self_judge"]["winners"], sj["winners"]);

    let mut chat_req = chat(1, 4);
    chat_req["best_of"] = json!(3);
    let (status, out) = post(&s, "/v1/chat/completions", &chat_req);
    assert_eq!(status, 200, "{out}");
    let w = out["self_judge"]["winners"][0].as_u64().unwrap() as usize;
    assert_eq!(
        out["choices"][0]["message"]["content"],
        out["self_judge"]["candidates"][w]
    );
}

#[test]
fn bad_requests_get_openai_errors() {
    let s = Server::start(
        &tiny_chat(),
        CONFIG,
        &["--max-new-tokens", "200", "--max-n", "4"],
    );
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        (
            "unknown model",
            "/v1/chat/completions",
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
            404,
        ),
        (
            "no messages",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": []}),
            400,
        ),
        (
            "tool role",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}),
            400,
        ),
        (
            "image part",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
        ),
        (
            "penalty",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1.0}),
            400,
        ),
        (
            "top_logprobs alone",
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            400,
        ),
        (
            "too many logprobs",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "logprobs": 21}),
            400,
        ),
        (
            "n over the limit",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "n": 5}),
            400,
        ),
        (
            "best_of below n",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "n": 3, "best_of": 2}),
            400,
        ),
        (
            "best_of streamed",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "best_of": 2, "stream": true}),
            400,
        ),
        (
            "max_tokens 0",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "max_tokens": 0}),
            400,
        ),
        (
            "max_tokens over",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "max_tokens": 201}),
            400,
        ),
        (
            "two prompts",
            "/v1/completions",
            json!({"model": MODEL, "prompt": ["a", "b"]}),
            400,
        ),
        (
            "echo",
            "/v1/completions",
            json!({"model": MODEL, "prompt": "x", "echo": true}),
            400,
        ),
        ("no prompt", "/v1/completions", json!({"model": MODEL}), 400),
        (
            "unknown route",
            "/v1/embeddings",
            json!({"model": MODEL, "input": "x"}),
            404,
        ),
    ];
    for (what, path, body, want) in cases {
        let (status, e) = post(&s, path, &body);
        assert_eq!(status, want, "{what}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {e}"
        );
        assert!(
            e["error"]["type"].is_string() && e["error_type"].is_string(),
            "{what}: {e}"
        );
    }
    let r = client()
        .post(s.url("/v1/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().unwrap()["error"]["message"].is_string());
}

#[test]
fn a_client_that_leaves_a_stream_stops_its_generation() {
    // The real model is slow enough here that 400 tokens outlast the disconnect.
    let s = Server::start(&smollm2_path(), CONFIG, &[]);
    let models: Value = client()
        .get(s.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let model = models["data"][0]["id"].as_str().unwrap().to_string();
    let cancelled = s.metric("self_judge_generations_cancelled_total");
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": model, "stream": true, "max_tokens": 400, "seed": 1,
                      "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]}))
        .send()
        .unwrap();
    let mut lines = BufReader::new(r).lines();
    // The role chunk, then the first text: the generation is running.
    let mut events = 0;
    while events < 2 {
        let line = lines.next().expect("the stream ended early").unwrap();
        if line.starts_with("data: ") {
            events += 1;
        }
    }
    drop(lines);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.metric("self_judge_generations_cancelled_total") <= cancelled {
        assert!(
            std::time::Instant::now() < deadline,
            "the generation was not cancelled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
