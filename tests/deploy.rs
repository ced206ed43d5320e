//! The deployment files name metrics the server really exports: every `self_judge_*`
//! series of the Grafana dashboard, the HPA and its prometheus-adapter rules is in
//! `/metrics` of a running server, with the label values the queries filter on.
//! (Syntax and schemas are checked by `scripts/deploy/check.sh`; the queries' results
//! on live replicas by `docker/scaleout-test.sh`.)

mod common;

use common::{post, tiny_chat, Server};
use serde_json::json;
use std::collections::BTreeSet;

/// Every `self_judge_*` name in a file.
fn metric_names(rel: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("self_judge_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_and_autoscaler_metrics_are_exported() {
    let s = Server::start(&tiny_chat(), "smollm2_hh_judge.yaml", &[]);
    let (status, v) = post(
        &s,
        "/judge",
        &json!({"context": "User: hi", "response_a": "Hello!", "response_b": "Go away."}),
    );
    assert_eq!(status, 200, "{v}");
    let text = s.metrics_text();
    // Families and their kinds, from the `# TYPE` lines.
    let families: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect();
    let exported = |name: &str| {
        families.iter().any(|(f, kind)| {
            f == name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f)))
        })
    };
    let files = [
        "docker/grafana/dashboards/self-judge.json",
        "deploy/k8s/hpa.yaml",
        "deploy/k8s/prometheus-adapter.yaml",
    ];
    let mut used = BTreeSet::new();
    for f in files {
        let names = metric_names(f);
        assert!(!names.is_empty(), "{f} names no self_judge metric");
        used.extend(names);
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n)).collect();
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:?}\n{families:?}"
    );
    // The dashboard filters on `status="429"` and groups by `route`: the label values
    // are the bare code and the route's path.
    assert!(
        text.contains(r#"self_judge_requests_total{route="/judge",status="200"} 1"#),
        "{text}"
    );
    assert!(used.contains("self_judge_queue_prompts"));
    assert!(used.contains("self_judge_prefix_tokens_saved_total"));
    assert_eq!(s.stop().code(), Some(0));
}
