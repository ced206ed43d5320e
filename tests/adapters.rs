//! Several adapters next to one base (`--adapter NAME=DIR`): requests pick one with
//! `model` (OpenAI routes) or `adapter` (our routes, TEI rerank), the base stays
//! available, and an adapter judges and generates as the merged checkpoint does
//! (`--adapter DIR`, another server) within 1e-5 relative.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{client, post, tiny_chat, Server};
use self_judge::model::seeded_randn;
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";

/// A random PEFT LoRA folder for the tiny checkpoint: r 4 on q_proj and v_proj of both
/// layers, B non-zero so that the adapter changes the model.
fn write_adapter(dir: &Path, seed: u64) {
    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut k = seed;
    for layer in 0..2 {
        for (module, out) in [("q_proj", 64), ("v_proj", 32)] {
            let p = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            k += 2;
            let a = seeded_randn(k, 0.0, 0.3, (4, 64), &dev).unwrap();
            let b = seeded_randn(k + 1, 0.0, 0.3, (out, 4), &dev).unwrap();
            tensors.insert(format!("{p}.lora_A.weight"), a);
            tensors.insert(format!("{p}.lora_B.weight"), b);
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}"#,
    )
    .unwrap();
}

fn ok(s: &Server, path: &str, body: &Value) -> Value {
    let (status, v) = post(s, path, body);
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

fn pairs(adapter: Option<&str>) -> Value {
    let mut v = json!({"pairs": [
        {"context": "User: Name a fruit.", "response_a": "Apple.", "response_b": "A car."},
        {"context": "User: What is 2 + 2?", "response_a": "5", "response_b": "4"},
        {"context": "User: Say hi.", "response_a": "Hi there!", "response_b": "No."},
    ]});
    if let Some(a) = adapter {
        v["adapter"] = json!(a);
    }
    v
}

/// Every judge probability of a `/judge` list answer, in order.
fn probs(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    for verdict in v.as_array().unwrap() {
        out.push(verdict["score_a"].as_f64().unwrap());
        out.push(verdict["score_b"].as_f64().unwrap());
        for p in verdict["principles"].as_array().unwrap() {
            for order in ["ab", "ba"] {
                out.push(p[order]["p_a"].as_f64().unwrap());
                out.push(p[order]["p_b"].as_f64().unwrap());
            }
        }
    }
    out
}

/// Largest relative difference (the tiny model's A/B probabilities are ~3e-3, so an
/// absolute bound would say little).
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-300))
        .fold(0.0, f64::max)
}

/// Greedy chat completion with log-probabilities: (text, per-token logprobs).
fn greedy(s: &Server, model: &str) -> (String, Vec<f64>) {
    let v = ok(
        s,
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "Name a fruit."}],
                "max_tokens": 12, "temperature": 0, "logprobs": true}),
    );
    assert_eq!(v["model"], model, "{v}");
    let c = &v["choices"][0];
    let lps = c["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    (c["message"]["content"].as_str().unwrap().to_string(), lps)
}

#[test]
fn named_adapters_serve_beside_the_base_and_equal_merged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (a1, a2) = (dir.path().join("a1"), dir.path().join("a2"));
    write_adapter(&a1, 10);
    write_adapter(&a2, 20);
    let flag = |name: &str, p: &Path| format!("{name}={}", p.display());
    let (f1, f2) = (flag("judge-a", &a1), flag("judge-b", &a2));
    let multi = Server::start(&tiny_chat(), CONFIG, &["--adapter", &f1, "--adapter", &f2]);
    let merged = Server::start(&tiny_chat(), CONFIG, &["--adapter", a1.to_str().unwrap()]);
    let plain = Server::start(&tiny_chat(), CONFIG, &[]);

    // Listed: the base, then each adapter with the base as parent.
    let models: Value = client()
        .get(multi.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny-chat", "judge-a", "judge-b"]);
    assert_eq!(models["data"][1]["parent"], "tiny-chat");
    assert!(models["data"][0].get("parent").is_none(), "{models}");
    let info: Value = client()
        .get(multi.url("/info"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["adapters"][1]["name"], "judge-b", "{info}");
    assert!(info["adapter"].is_null());

    // Judging: the adapter equals the merged checkpoint; the base equals a server
    // without adapters; the two adapters and the base all differ.
    let adapted = probs(&ok(&multi, "/judge", &pairs(Some("judge-a"))));
    let with_merged = probs(&ok(&merged, "/judge", &pairs(None)));
    let d = max_diff(&adapted, &with_merged);
    assert!(d < 1e-5, "adapter vs merged: {d}");
    let base = probs(&ok(&multi, "/judge", &pairs(None)));
    assert!(max_diff(&base, &probs(&ok(&plain, "/judge", &pairs(None)))) < 1e-12);
    assert!(
        max_diff(&base, &adapted) > 1e-2,
        "the adapter changes nothing"
    );
    let other = probs(&ok(&multi, "/judge", &pairs(Some("judge-b"))));
    assert!(
        max_diff(&other, &adapted) > 1e-2,
        "both adapters judge alike"
    );

    // Generation: the same greedy tokens and log-probabilities as merged.
    let (text, lps) = greedy(&multi, "judge-a");
    let (m_text, m_lps) = greedy(&merged, "tiny-chat");
    assert_eq!(text, m_text);
    let d = max_diff(&lps, &m_lps);
    assert!(d < 1e-5, "logprobs adapter vs merged: {d}");
    let (b_text, b_lps) = greedy(&multi, "tiny-chat");
    let (p_text, p_lps) = greedy(&plain, "tiny-chat");
    assert_eq!(b_text, p_text);
    assert!(max_diff(&b_lps, &p_lps) < 1e-9);
    let g = ok(
        &multi,
        "/generate",
        &json!({"prompt": "Hello", "max_new_tokens": 8, "temperature": 0, "adapter": "judge-a"}),
    );
    let m = ok(
        &merged,
        "/generate",
        &json!({"prompt": "Hello", "max_new_tokens": 8, "temperature": 0}),
    );
    assert_eq!(g["generations"][0]["text"], m["generations"][0]["text"]);

    // A tournament and the rerank routes through an adapter, as merged.
    let t = json!({"contexts": ["User: Name a fruit."],
                   "responses": [["Apple.", "A car.", "Mango.", "Blue."]], "seed": 3,
                   "return_ranking": true});
    let mut ta = t.clone();
    ta["adapter"] = json!("judge-a");
    // Indices, texts and rounds exactly; scores within 1e-5 (relative ones above).
    common::assert_json_close(
        &ok(&multi, "/tournament", &ta)["winners"],
        &ok(&merged, "/tournament", &t)["winners"],
    );
    let rr = json!({"query": "Name a fruit.", "documents": ["Apple.", "A car.", "Mango."]});
    let mut rra = rr.clone();
    rra["model"] = json!("judge-a");
    let (x, y) = (
        ok(&multi, "/v2/rerank", &rra)["results"].clone(),
        ok(&merged, "/v2/rerank", &rr)["results"].clone(),
    );
    assert_eq!(x.as_array().unwrap().len(), y.as_array().unwrap().len());
    for (x, y) in x.as_array().unwrap().iter().zip(y.as_array().unwrap()) {
        assert_eq!(x["index"], y["index"]);
        let d =
            (x["relevance_score"].as_f64().unwrap() - y["relevance_score"].as_f64().unwrap()).abs();
        assert!(d < 1e-5, "{x} vs {y}");
    }
    let tei = ok(
        &multi,
        "/rerank",
        &json!({"query": "Name a fruit.", "texts": ["Apple.", "A car."], "adapter": "judge-b"}),
    );
    assert_eq!(tei.as_array().unwrap().len(), 2);

    // Unknown names: 404 in each route's error shape, naming what is served.
    let (status, v) = post(&multi, "/judge", &pairs(Some("nope")));
    assert_eq!(status, 404);
    assert_eq!(v["error_type"], "adapter_not_found");
    assert!(
        v["error"].as_str().unwrap().contains("judge-a, judge-b"),
        "{v}"
    );
    let (status, v) = post(
        &multi,
        "/v1/chat/completions",
        &json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`tiny-chat`, `judge-a`, `judge-b`"), "{msg}");
    let (status, v) = post(
        &plain,
        "/generate",
        &json!({"prompt": "x", "adapter": "judge-a"}),
    );
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("serves none"), "{v}");
}

#[test]
fn bad_adapter_flags_fail_at_start_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_adapter(&a, 1);
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(CONFIG);
    let run = |adapters: &[String]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_self-judge"));
        cmd.arg("serve")
            .arg("--model")
            .arg(tiny_chat())
            .arg("--config")
            .arg(&config)
            .args(["--port", "0"]);
        for x in adapters {
            cmd.args(["--adapter", x]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let p = a.display().to_string();
    let e = run(&[format!("tiny-chat={p}")]);
    assert!(e.contains("the base model's name"), "{e}");
    let e = run(&[format!("x={p}"), format!("x={p}")]);
    assert!(e.contains("given twice"), "{e}");
    let e = run(&[format!("x={}", dir.path().join("missing").display())]);
    assert!(
        e.contains("--adapter x=") && e.contains("adapter_config.json"),
        "{e}"
    );
    // An adapter for another shape is refused at load, naming the weight.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let dev = Device::Cpu;
    candle_core::safetensors::save(
        &HashMap::from([
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string(),
                Tensor::zeros((4, 48), candle_core::DType::F32, &dev).unwrap(),
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight".to_string(),
                Tensor::zeros((64, 4), candle_core::DType::F32, &dev).unwrap(),
            ),
        ]),
        wrong.join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        wrong.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4}"#,
    )
    .unwrap();
    let e = run(&[format!("w={}", wrong.display())]);
    assert!(e.contains("q_proj.weight") && e.contains("[64, 64]"), "{e}");
}
