//! The HTTP service over real sockets on 127.0.0.1, on the tiny ChatML checkpoint:
//! endpoints, bad inputs, admission, cancellation, API key, graceful shutdown.

mod common;

use common::{client, post, tiny_chat, Server};
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";

#[test]
fn endpoints_answer_and_match_their_schemas() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let info: Value = client().get(s.url("/info")).send().unwrap().json().unwrap();
    assert_eq!(info["token_ids"], json!({"a": 256, "b": 257}));
    assert_eq!(info["principles"], json!(["helpful"]));
    assert_eq!(info["model_type"], "llama");
    assert_eq!(info["limits"]["max_input_tokens"], 256);

    let (st, v) = post(
        &s,
        "/judge",
        &json!({"context": "c", "response_a": "the", "response_b": "in"}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["winner"] == "a" || v["winner"] == "b");
    let pa = v["principles"][0]["ab"]["p_a"].as_f64().unwrap();
    assert!(pa > 0.0 && pa < 1.0);

    let (st, v) = post(
        &s,
        "/judge",
        &json!({"pairs": [
        {"context": "c", "response_a": "x", "response_b": "y"},
        {"context": "d", "response_a": "", "response_b": "z"}]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);

    let (st, v) = post(
        &s,
        "/tournament",
        &json!({"contexts": ["c1", "c2"], "responses": [["a", "b", "c"], ["only"]], "seed": 3, "return_bracket": true}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["winners"][1],
        json!({"text": "only", "index": 0, "bracket": {"rounds": []}})
    );
    assert_eq!(
        v["winners"][0]["bracket"]["rounds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (st, v) = post(
        &s,
        "/generate",
        &json!({"prompt": "the", "n": 3, "max_new_tokens": 5, "temperature": 0.8, "seed": 1}),
    );
    assert_eq!(st, 200, "{v}");
    let gens = v["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 3);
    assert!(gens.iter().all(|g| g["tokens"].as_u64().unwrap() <= 5));
    let (_, again) = post(
        &s,
        "/generate",
        &json!({"prompt": "the", "n": 3, "max_new_tokens": 5, "temperature": 0.8, "seed": 1}),
    );
    assert_eq!(v, again, "seeded generation is reproducible");

    let (st, v) = post(
        &s,
        "/tournament",
        &json!({"query": "hi", "n": 3, "max_new_tokens": 4, "seed": 2}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 3);
    let idx = v["winners"][0]["index"].as_u64().unwrap() as usize;
    assert_eq!(v["winners"][0]["text"], v["candidates"][idx]["text"]);
    // The default judge context of a query is HH-style `User: ...`, as in training: the
    // same bracket (probabilities included) as that context given explicitly, and not
    // the bare query's.
    let bracket = |extra: Value| {
        let mut body = json!({"query": "hi", "n": 3, "max_new_tokens": 4, "seed": 2,
                              "return_bracket": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, v) = post(&s, "/tournament", &body);
        assert_eq!(st, 200, "{v}");
        v["winners"][0]["bracket"].clone()
    };
    let implicit = bracket(json!({}));
    assert!(implicit.is_object(), "{implicit}");
    assert_eq!(implicit, bracket(json!({"context": "User: hi"})));
    assert_ne!(implicit, bracket(json!({"context": "hi"})));

    let docs = client().get(s.url("/docs")).send().unwrap().text().unwrap();
    assert!(docs.contains("POST /judge") && !docs.contains("<script"));
    let spec: Value = client()
        .get(s.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let printed: Value = serde_json::from_str(&common::stdout_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_self-judge")).arg("openapi"),
    ))
    .unwrap();
    assert_eq!(
        printed, committed,
        "openapi/openapi.json is stale: run `self-judge openapi > openapi/openapi.json`"
    );
    // The served document is the committed one stating this server: no key, its
    // model's name, its limits.
    assert_eq!(
        spec["paths"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        committed["paths"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert!(committed["paths"]["/judge"]["post"]["security"].is_array());
    assert!(spec["paths"]["/judge"]["post"].get("security").is_none());
    let chat = &spec["components"]["schemas"]["ChatCompletionRequest"]["allOf"][1];
    assert_eq!(chat["properties"]["model"]["enum"], json!(["tiny-chat"]));
    let common = &spec["components"]["schemas"]["CommonParams"]["properties"];
    assert_eq!(common["n"]["maximum"], 16);
    let metrics = s.metrics_text();
    assert!(metrics.contains("self_judge_batch_size_bucket"));
    assert_eq!(s.stop().code(), Some(0));
}

#[test]
fn bad_inputs_get_the_right_status_and_a_json_error() {
    let s = Server::start(
        &tiny_chat(),
        CONFIG,
        &[
            "--max-n",
            "4",
            "--max-new-tokens",
            "50",
            "--max-body-bytes",
            "2000",
        ],
    );
    let raw = |body: &str, ctype: &str| {
        let r = client()
            .post(s.url("/judge"))
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        (
            "invalid JSON",
            raw("{not json", "application/json"),
            400,
            "invalid_json",
        ),
        (
            "no content type",
            raw("{}", "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            "wrong type",
            post(
                &s,
                "/judge",
                &json!({"context": 1, "response_a": "a", "response_b": "b"}),
            ),
            422,
            "validation",
        ),
        (
            "missing field",
            post(&s, "/judge", &json!({"context": "c", "response_a": "a"})),
            422,
            "validation",
        ),
        (
            "a sampling setting on given candidates",
            post(
                &s,
                "/tournament",
                &json!({"contexts": ["c"], "responses": [["a", "b"]], "temperature": 0.5}),
            ),
            422,
            "validation",
        ),
        (
            "unknown field",
            post(
                &s,
                "/judge",
                &json!({"context": "c", "response_a": "a", "response_b": "b", "x": 1}),
            ),
            422,
            "validation",
        ),
        (
            "empty pairs",
            post(&s, "/judge", &json!({"pairs": []})),
            422,
            "validation",
        ),
        (
            "unknown principle",
            post(
                &s,
                "/judge",
                &json!({"context": "c", "response_a": "a", "response_b": "b", "principles": ["nope"]}),
            ),
            422,
            "validation",
        ),
        (
            "empty responses",
            post(
                &s,
                "/tournament",
                &json!({"contexts": ["c"], "responses": [[]]}),
            ),
            422,
            "validation",
        ),
        (
            "mismatched lengths",
            post(
                &s,
                "/tournament",
                &json!({"contexts": ["c", "d"], "responses": [["a"]]}),
            ),
            422,
            "validation",
        ),
        (
            "n = 0",
            post(&s, "/generate", &json!({"prompt": "x", "n": 0})),
            422,
            "validation",
        ),
        (
            "n huge",
            post(&s, "/generate", &json!({"prompt": "x", "n": 1000000})),
            422,
            "validation",
        ),
        (
            "max_new_tokens over limit",
            post(
                &s,
                "/generate",
                &json!({"prompt": "x", "max_new_tokens": 51}),
            ),
            422,
            "validation",
        ),
        (
            "bad top_p",
            post(&s, "/generate", &json!({"prompt": "x", "top_p": 0.0})),
            422,
            "validation",
        ),
        (
            "empty prompt",
            post(&s, "/generate", &json!({"prompt": ""})),
            422,
            "validation",
        ),
        (
            "prompt and messages",
            post(
                &s,
                "/generate",
                &json!({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}),
            ),
            422,
            "validation",
        ),
        (
            "body over limit",
            post(
                &s,
                "/judge",
                &json!({"context": "x".repeat(3000), "response_a": "a", "response_b": "b"}),
            ),
            413,
            "payload_too_large",
        ),
        (
            "unknown route",
            post(&s, "/nope", &json!({})),
            404,
            "not_found",
        ),
    ];
    for (name, (status, body), want_status, want_type) in cases {
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["error_type"], want_type, "{name}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {body}"
        );
    }
    // A number without a fraction is an integer (JSON Schema's reading).
    let (st, v) = post(
        &s,
        "/tournament",
        &json!({"contexts": ["c"], "responses": [["a", "b"]], "seed": 3.0}),
    );
    assert_eq!(st, 200, "{v}");
    // A prompt over the context is cut to leave room for the reply (tiny-chat: 256).
    let long = "x".repeat(400);
    let (st, v) = post(
        &s,
        "/generate",
        &json!({"prompt": long, "max_new_tokens": 2, "temperature": 0}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["prompt_tokens"], 255, "{v}");
    let r = client().get(s.url("/judge")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // Still serving.
    let (st, _) = post(
        &s,
        "/judge",
        &json!({"context": "c", "response_a": "a", "response_b": "b"}),
    );
    assert_eq!(st, 200);
}

#[test]
fn long_prompts_are_truncated_or_refused() {
    let s = Server::start(
        &tiny_chat(),
        CONFIG,
        &["--no-truncate", "--max-input-tokens", "64"],
    );
    let (st, v) = post(
        &s,
        "/judge",
        &json!({"context": "c", "response_a": "a", "response_b": "b"}),
    );
    assert_eq!(
        (st, v["error_type"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    let (st, _) = post(
        &s,
        "/generate",
        &json!({"prompt": "x".repeat(100), "max_new_tokens": 1}),
    );
    assert_eq!(st, 413);
    drop(s);
    let s = Server::start(&tiny_chat(), CONFIG, &["--max-input-tokens", "64"]);
    let (st, v) = post(
        &s,
        "/generate",
        &json!({"prompt": "x".repeat(100), "max_new_tokens": 1}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["prompt_tokens"], 64);
}

/// POSTs a one-pair `/judge` with `Authorization: Bearer KEY` when given.
fn judge_with_key(s: &Server, key: Option<&str>) -> (u16, Value) {
    let body = json!({"context": "c", "response_a": "a", "response_b": "b"});
    let mut req = client().post(s.url("/judge")).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn a_failed_forward_makes_health_503_until_one_succeeds() {
    let s = Server::start(&tiny_chat(), CONFIG, &["--test-failing-judge-batches", "1"]);
    let health = || {
        let r = client().get(s.url("/health")).send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap()["status"].clone(),
        )
    };
    assert_eq!(health(), (200, json!("ok")));
    let body = json!({"context": "c", "response_a": "a", "response_b": "b"});
    let (st, v) = post(&s, "/judge", &body);
    assert_eq!(
        (st, v["error_type"].as_str()),
        (500, Some("model_error")),
        "{v}"
    );
    assert_eq!(health(), (503, json!("unhealthy")));
    assert_eq!(s.metric("self_judge_forward_errors_total"), 1.0);
    let (st, v) = post(&s, "/judge", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(health(), (200, json!("ok")));
}

#[test]
fn the_key_can_come_from_the_environment_and_sigint_stops_cleanly() {
    let s = Server::start_with_env(
        &tiny_chat(),
        CONFIG,
        &[],
        &[("SELF_JUDGE_API_KEY", "from-env")],
    );
    assert_eq!(judge_with_key(&s, None).0, 401);
    assert_eq!(judge_with_key(&s, Some("from-env")).0, 200);
    let spec: Value = client()
        .get(s.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        spec["paths"]["/judge"]["post"]["security"],
        json!([{"bearer": []}])
    );
    s.signal("INT");
    let status = s.wait();
    assert!(status.success(), "SIGINT: {status:?}");
}

#[test]
fn api_key_protects_the_api_but_not_health_or_metrics() {
    let s = Server::start(&tiny_chat(), CONFIG, &["--api-key", "sekret"]);
    let (status, v) = judge_with_key(&s, None);
    assert_eq!((status, &v["error_type"]), (401, &json!("unauthorized")));
    assert_eq!(judge_with_key(&s, Some("wrong")).0, 401);
    assert_eq!(judge_with_key(&s, Some("sekret")).0, 200);
    assert_eq!(
        client()
            .get(s.url("/info"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        client()
            .get(s.url("/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client()
            .get(s.url("/metrics"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn bad_start_up_config_fails_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "templates:\n  judge:\n    helpful:\n      system: s\n      user: '{context} {response_a}'\n      assistant: a\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_self-judge"))
        .args(["serve", "--port", "0", "--model"])
        .arg(tiny_chat())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`helpful`") && err.contains("{response_b}"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_self-judge"))
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            "/nonexistent/model",
            "--config",
        ])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/smollm2_hh_judge.yaml"
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
