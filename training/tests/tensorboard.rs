//! `report_to: tensorboard`: a JSFT run writes event files that TensorBoard's own reader
//! (`scripts/clients/tensorboard_check.py`, Python from `SELF_JUDGE_CLIENT_PYTHON`, set
//! by `scripts/test.sh`) reads back as exactly the run's logged metrics.

mod common;

use std::process::Command;

#[test]
fn tensorboard_reads_the_logged_metrics() {
    let python = std::env::var_os("SELF_JUDGE_CLIENT_PYTHON").unwrap_or_else(|| {
        panic!(
            "SELF_JUDGE_CLIENT_PYTHON must name a Python with `tensorboard`: run scripts/test.sh"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    assert!(common::init(&dir.path().join("init"), 32, &[])
        .status
        .success());
    let cfg = common::arith_config(dir.path(), Some(20));
    let tb = dir.path().join("tb");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "report_to: \"none\"",
        &format!("report_to: [\"tensorboard\"]\n  logging_dir: {tb:?}"),
    );
    assert!(
        text.contains("logging_dir"),
        "the fixture's report_to line moved"
    );
    std::fs::write(&cfg, text).unwrap();
    common::ok(common::run_training("jsft", &cfg, &[]));

    let files: Vec<_> = std::fs::read_dir(&tb)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("events.out.tfevents."), "{files:?}");
    let state = dir.path().join("out/trainer_state.json");
    let out = Command::new(python)
        .arg(common::root().join("scripts/clients/tensorboard_check.py"))
        .arg(&tb)
        .arg(&state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 20 steps logged every 10: two entries of loss, grad_norm and learning_rate.
    assert!(stdout.contains("points match"), "{stdout}");
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(history["log_history"].as_array().unwrap().len(), 2);
}
