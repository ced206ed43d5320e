//! The HTTP service on the real SmolLM2 model: same answers as the offline CLI,
//! concurrency with dynamic batching, overload, cancellation, graceful shutdown.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_json_close, client, post, smollm2_path, Server};
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";

fn cli(sub: &str, input: &Path, extra: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_self-judge"));
    cmd.args([sub, "--model"])
        .arg(smollm2_path())
        .arg("--config")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(CONFIG),
        )
        .arg("--input")
        .arg(input)
        .args(extra);
    common::stdout_of(&mut cmd)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pairs(n: usize) -> Vec<Value> {
    let answers = [
        "Paris.",
        "London, probably.",
        "It is Paris, the largest city of France.",
        "I do not know.",
    ];
    (0..n)
        .map(|i| {
            json!({"context": format!("User: Question {i}: what is the capital of France?"),
                   "response_a": answers[i % 4], "response_b": answers[(i + 1 + i / 4) % 4]})
        })
        .collect()
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

#[test]
fn server_answers_equal_the_offline_cli_also_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&smollm2_path(), CONFIG, &[]);
    let ps = pairs(32);
    let input = dir.path().join("pairs.jsonl");
    write_jsonl(&input, &ps);
    let offline = cli("judge", &input, &[]);

    // 32 clients at once, one pair each, on a cold cache.
    let before_batches = s.metric("self_judge_batch_size_count");
    let handles: Vec<_> = ps
        .iter()
        .cloned()
        .map(|p| {
            let url = s.url("/judge");
            std::thread::spawn(move || {
                let r = client().post(url).json(&p).send().unwrap();
                (r.status().as_u16(), r.json::<Value>().unwrap())
            })
        })
        .collect();
    assert_eq!(handles.len(), offline.len());
    for (h, want) in handles.into_iter().zip(&offline) {
        let (st, got) = h.join().unwrap();
        assert_eq!(st, 200, "{got}");
        assert_json_close(&got, want);
    }
    let batches = s.metric("self_judge_batch_size_count") - before_batches;
    assert!(
        batches < 32.0,
        "64 prompts of 32 clients ran in {batches} forward passes: no batching"
    );

    // All of them in one request (now largely from the prefix cache).
    let (st, v) = post(&s, "/judge", &json!({"pairs": ps}));
    assert_eq!(st, 200, "{v}");
    assert_json_close(&v, &Value::Array(offline.clone()));

    // Tournament with a seed: same winners and brackets as the CLI.
    let lines = vec![
        json!({"context": "User: Name a fruit.", "responses": ["Apple.", "A car.", "Banana, a yellow fruit.", "Rock.", "Mango."]}),
        json!({"context": "User: Say hi.", "responses": ["Hi!"]}),
        json!({"context": "User: Capital of Italy?", "responses": ["Rome.", "Paris."]}),
    ];
    let tin = dir.path().join("t.jsonl");
    write_jsonl(&tin, &lines);
    let offline = cli("tournament", &tin, &["--seed", "7", "--bracket"]);
    let contexts: Vec<&Value> = lines.iter().map(|l| &l["context"]).collect();
    let responses: Vec<&Value> = lines.iter().map(|l| &l["responses"]).collect();
    let (st, v) = post(
        &s,
        "/tournament",
        &json!({"contexts": contexts, "responses": responses, "seed": 7, "return_bracket": true}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["winners"].as_array().unwrap().len(), offline.len());
    for (w, o) in v["winners"].as_array().unwrap().iter().zip(&offline) {
        assert_eq!(w["text"], o["winner"]);
        assert_eq!(w["index"], o["winner_index"]);
        assert_json_close(&w["bracket"], &o["bracket"]);
    }
}

#[test]
fn overload_is_refused_whole_with_retry_after() {
    let s = Server::start(&smollm2_path(), CONFIG, &["--max-concurrent-requests", "4"]);
    // 3 pairs x 2 prompts can never fit in 4: 413 before any compute.
    let (st, v) = post(&s, "/judge", &json!({"pairs": pairs(3)}));
    assert_eq!(st, 413, "{v}");
    // A generation of n=4 holds all 4 units; meanwhile a judge request gets 429.
    let url = s.url("/generate");
    let long = std::thread::spawn(move || {
        let body = json!({"prompt": "Once upon a time", "n": 4, "max_new_tokens": 40, "seed": 3, "stop": ["\u{1}"]});
        client()
            .post(url)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    // Event-driven: the four sequences are decoding (40 tokens take seconds here).
    wait_for(&s, "self_judge_running_sequences", 4.0);
    let r = client()
        .post(s.url("/judge"))
        .json(&pairs(1)[0])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert_eq!(r.json::<Value>().unwrap()["error_type"], "overloaded");
    assert_eq!(
        long.join().unwrap(),
        200,
        "the admitted request still completes"
    );
    assert!(s.metric("self_judge_rejected_total") >= 1.0);
    let (st, _) = post(&s, "/judge", &pairs(1)[0]);
    assert_eq!(st, 200, "capacity is released afterwards");
}

/// Sends a request on a raw connection and hangs up once `ready` says the server is
/// working on it.
fn send_and_hang_up(addr: &str, path: &str, body: &Value, ready: impl Fn() -> bool) {
    let body = body.to_string();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    conn.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "the server never started the work"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (no fixed sleeps) until `metric` reaches `at_least`.
fn wait_for(s: &Server, metric: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric(metric) < at_least {
        assert!(
            Instant::now() < deadline,
            "{metric} never reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_disconnected_clients_work_is_dropped() {
    // Two prompts per forward pass, so a request of 16 prompts spans 8 batches.
    let s = Server::start(&smollm2_path(), CONFIG, &["--max-batch-size", "2"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // A generation that would take a minute stops when its client goes.
    let gen =
        json!({"prompt": "Once upon a time", "n": 2, "max_new_tokens": 1000, "stop": ["\u{1}"]});
    send_and_hang_up(&addr, "/generate", &gen, || {
        s.metric("self_judge_running_sequences") >= 2.0
    });
    wait_for(&s, "self_judge_generations_cancelled_total", 2.0);
    // Judge prompts still queued when the client hangs up never reach a batch.
    let scored = s.metric("self_judge_prompts_scored_total");
    // Hang up once the first batch has been scored: the rest are still queued.
    send_and_hang_up(&addr, "/judge", &json!({"pairs": pairs(8)}), || {
        s.metric("self_judge_prompts_scored_total") > scored
    });
    wait_for(&s, "self_judge_prompts_cancelled_total", 1.0);
    // Every prompt is accounted for, scored or dropped, once the queue is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric("self_judge_queue_prompts") > 0.0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ran = s.metric("self_judge_prompts_scored_total") - scored;
    let dropped = s.metric("self_judge_prompts_cancelled_total");
    assert!(
        ran < 16.0 && ran + dropped == 16.0,
        "scored {ran}, dropped {dropped}"
    );
    let (st, _) = post(&s, "/judge", &pairs(1)[0]);
    assert_eq!(st, 200);
}

#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let s = Server::start(&smollm2_path(), CONFIG, &[]);
    let url = s.url("/generate");
    let inflight = std::thread::spawn(move || {
        let body = json!({"prompt": "Once upon a time", "max_new_tokens": 40, "stop": ["\u{1}"], "temperature": 1.0, "seed": 1});
        let r = client().post(url).json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    });
    // SIGTERM while the generation is decoding, not before it arrived.
    wait_for(&s, "self_judge_running_sequences", 1.0);
    s.signal_term();
    let (status, body) = inflight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let g = &body["generations"][0];
    assert!(g["tokens"] == 40 || g["finish_reason"] == "eos", "{body}");
    assert_eq!(s.wait().code(), Some(0));
}

#[test]
fn health_is_503_until_the_model_is_loaded() {
    use std::io::BufRead;
    // The test hook holds the load until the file exists: the loading state is seen
    // however fast this machine loads the model.
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let mut child = Command::new(env!("CARGO_BIN_EXE_self-judge"))
        .args(["serve", "--port", "0", "--model"])
        .arg(smollm2_path())
        .arg("--hold-load-until")
        .arg(&go)
        .arg("--config")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(CONFIG),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    // The port is bound before the model loads: the first answers are 503.
    let r = client().get(format!("{base}/health")).send().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.json::<Value>().unwrap()["status"], "loading");
    let r = client()
        .post(format!("{base}/judge"))
        .json(&pairs(1)[0])
        .send()
        .unwrap();
    let (st, body) = (r.status().as_u16(), r.json::<Value>().unwrap());
    assert!(
        st == 503 && body["error_type"] == "not_ready",
        "{st} {body}"
    );
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client()
        .get(format!("{base}/health"))
        .send()
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
