//! `/tournament` with `return_ranking` and `stream`, on the tiny checkpoint: the ranking
//! agrees with the bracket, and the streamed rounds and result are the ones the plain
//! request returns.

mod common;

use std::io::{BufRead, BufReader};

use common::{assert_json_close, tiny_chat, Server};
use serde_json::{json, Value};

const CONFIG: &str = "smollm2_hh_judge.yaml";

fn request(stream: bool) -> Value {
    json!({"contexts": ["User: Name a fruit.", "User: Say hi."],
           "responses": [["Apple.", "A car.", "Mango.", "Seven.", "Pear."], ["Hi!", "No."]],
           "seed": 7, "return_bracket": true, "return_ranking": true, "stream": stream})
}

#[test]
fn the_ranking_follows_the_bracket() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let r: Value = reqwest::blocking::Client::new()
        .post(s.url("/tournament"))
        .json(&request(false))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["winners"].as_array().unwrap().len(), 2);
    for (w, n) in r["winners"].as_array().unwrap().iter().zip([5usize, 2]) {
        let ranking = w["ranking"].as_array().unwrap();
        let mut seen: Vec<u64> = ranking
            .iter()
            .map(|p| p["index"].as_u64().unwrap())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..n as u64).collect::<Vec<_>>(),
            "every candidate once"
        );
        assert_eq!(ranking[0]["index"], w["index"]);
        assert!(ranking[0]["exit_round"].is_null());
        let rounds = w["bracket"]["rounds"].as_array().unwrap();
        for p in &ranking[1..] {
            let r = p["exit_round"].as_u64().unwrap() as usize;
            let lost = rounds[r]["matches"].as_array().unwrap().iter().any(|m| {
                (m["a"] == p["index"] || m["b"] == p["index"]) && m["winner"] != p["index"]
            });
            assert!(lost, "{p} lost in round {r}");
        }
        let exits: Vec<u64> = ranking[1..]
            .iter()
            .map(|p| p["exit_round"].as_u64().unwrap())
            .collect();
        assert!(exits.windows(2).all(|e| e[0] >= e[1]), "{exits:?}");
    }
}

#[test]
fn a_streamed_tournament_sends_each_round_then_the_result() {
    let s = Server::start(&tiny_chat(), CONFIG, &[]);
    let client = reqwest::blocking::Client::new();
    let plain: Value = client
        .post(s.url("/tournament"))
        .json(&request(false))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let r = client
        .post(s.url("/tournament"))
        .json(&request(true))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    let (last, rounds) = events.split_last().unwrap();
    assert_eq!(last.0, "result");
    // The same brackets; scores equal up to the prefix cache's float noise.
    assert_json_close(&last.1, &plain);
    // Five candidates need three rounds, two need one.
    assert_eq!(rounds.len(), 3);
    for (k, (name, ev)) in rounds.iter().enumerate() {
        assert_eq!(name, "round");
        assert_eq!(ev["round"], k);
        for (c, w) in plain["winners"].as_array().unwrap().iter().enumerate() {
            let want = w["bracket"]["rounds"]
                .get(k)
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(
                ev["rounds"][c].is_null(),
                want.is_null(),
                "round {k}, context {c}"
            );
            assert_json_close(&ev["rounds"][c], &want);
        }
    }

    // Refused before the stream starts: a 4xx, not an error event.
    let mut bad = request(true);
    bad["responses"] = json!([["a"], []]);
    let r = client.post(s.url("/tournament")).json(&bad).send().unwrap();
    assert_eq!(r.status(), 422);
    let r = client
        .post(s.url("/tournament"))
        .json(&json!({"query": "x", "n": 2, "stream": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
}
