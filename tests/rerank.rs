//! The rerank routes over HTTP on the tiny checkpoint: each score is the judge's
//! verdict of the document against the fixed reference answer (as `/judge` gives it),
//! results are sorted, stable and independent of the other documents of the call.

mod common;

use common::{post, tiny_chat, Server};
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";
const QUERY: &str = "What is the capital of France?";

fn docs() -> Vec<&'static str> {
    vec![
        "Paris.",
        "London, probably.",
        "Bananas are yellow.",
        "It is Paris, France.",
    ]
}

#[test]
fn scores_are_verdicts_against_the_reference_sorted_and_stable() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let (status, r) = post(
        &s,
        "/v1/rerank",
        &json!({"query": QUERY, "documents": docs()}),
    );
    assert_eq!(status, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let mut seen: Vec<u64> = results
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    let scores: Vec<f64> = results
        .iter()
        .map(|x| x["relevance_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2, 3]);
    for x in results {
        let i = x["index"].as_u64().unwrap() as usize;
        assert_eq!(
            x["document"]["text"],
            docs()[i],
            "v1 returns documents by default"
        );
        let (_, v) = post(
            &s,
            "/judge",
            &json!({"context": format!("User: {QUERY}"), "response_a": docs()[i],
                    "response_b": "I don't know."}),
        );
        let (a, b) = (
            v["score_a"].as_f64().unwrap(),
            v["score_b"].as_f64().unwrap(),
        );
        let want = a / (a + b);
        let got = x["relevance_score"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-6,
            "document {i}: {got} vs /judge {want}"
        );
        assert!((0.0..=1.0).contains(&got));
    }

    // A document's score does not depend on the others of the call.
    let (_, alone) = post(
        &s,
        "/v2/rerank",
        &json!({"model": "tiny-chat", "query": QUERY, "documents": [{"text": docs()[2]}]}),
    );
    let by_index = |r: &Value, i: u64| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["index"] == i)
            .unwrap()["relevance_score"]
            .as_f64()
            .unwrap()
    };
    assert!((by_index(&alone, 0) - by_index(&r, 2)).abs() < 1e-6);
    assert!(
        alone["results"][0].get("document").is_none(),
        "v2 omits documents by default"
    );
    assert_eq!(alone["meta"]["api_version"]["version"], "2");

    let (_, top) = post(
        &s,
        "/v2/rerank",
        &json!({"model": "tiny-chat", "query": QUERY, "documents": docs(), "top_n": 2,
                "return_documents": true}),
    );
    let top = top["results"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["index"], results[0]["index"]);
    assert_eq!(top[1]["index"], results[1]["index"]);
    assert!(top[0]["document"]["text"].is_string());

    // TEI's shape: the same order, probabilities or their log-odds.
    let (_, tei) = post(
        &s,
        "/rerank",
        &json!({"query": QUERY, "texts": docs(), "return_text": true}),
    );
    let (_, raw) = post(
        &s,
        "/rerank",
        &json!({"query": QUERY, "texts": docs(), "raw_scores": true}),
    );
    assert_eq!(tei.as_array().unwrap().len(), results.len());
    assert_eq!(raw.as_array().unwrap().len(), results.len());
    for ((t, w), x) in tei
        .as_array()
        .unwrap()
        .iter()
        .zip(raw.as_array().unwrap())
        .zip(results)
    {
        assert_eq!(t["index"], x["index"]);
        assert_eq!(w["index"], x["index"]);
        let p = t["score"].as_f64().unwrap();
        assert!((p - x["relevance_score"].as_f64().unwrap()).abs() < 1e-6);
        assert!((w["score"].as_f64().unwrap() - (p / (1.0 - p)).ln()).abs() < 1e-4);
        assert_eq!(t["text"], docs()[t["index"].as_u64().unwrap() as usize]);
        assert!(w.get("text").is_none());
    }
}

#[test]
fn bad_rerank_requests_are_refused() {
    let s = Server::start(&tiny_chat(), CONFIG, &["--max-concurrent-requests", "4"]);
    for (path, body, want) in [
        ("/v1/rerank", json!({"query": QUERY, "documents": []}), 400),
        (
            "/v2/rerank",
            json!({"model": "tiny-chat", "query": QUERY, "documents": []}),
            422,
        ),
        (
            "/v2/rerank",
            json!({"model": "gpt-9", "query": QUERY, "documents": ["a"]}),
            404,
        ),
        (
            "/v1/rerank",
            json!({"query": QUERY, "documents": ["a"], "top_n": 0}),
            400,
        ),
        ("/v1/rerank", json!({"query": QUERY, "documents": [3]}), 400),
        ("/rerank", json!({"query": QUERY, "texts": []}), 422),
        ("/rerank", json!({"query": QUERY}), 422),
        // 3 documents need 6 judge prompts; the server admits 4 at once.
        (
            "/rerank",
            json!({"query": QUERY, "texts": ["a", "b", "c"]}),
            413,
        ),
    ] {
        let (status, e) = post(&s, path, &body);
        assert_eq!(status, want, "{path} {body}: {e}");
        assert!(e["error_type"].is_string(), "{e}");
    }
}
