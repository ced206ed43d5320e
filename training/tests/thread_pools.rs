//! The trainer runs its CPU work on one thread pool (rayon's): candle's own barrier pool,
//! whose workers are the threads named `candle-bp-N`, never starts unless
//! `CANDLE_NUM_THREADS` asks for it (see `self_judge_model::threads`).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs a short `training jsft` with `candle_threads` (None: unset) and returns the
/// names of every thread seen in the process while it ran, polled from /proc (unnamed
/// threads, rayon's among them, show the process's own name).
fn thread_names(candle_threads: Option<&str>) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    assert!(common::init(&dir.path().join("init"), 64, &[])
        .status
        .success());
    let cfg = common::arith_config(dir.path(), Some(40));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_training"));
    cmd.args(["jsft", "--config"])
        .arg(&cfg)
        .env_remove("CANDLE_NUM_THREADS")
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(n) = candle_threads {
        cmd.env("CANDLE_NUM_THREADS", n);
    }
    let mut child = cmd.spawn().unwrap();
    let tasks = format!("/proc/{}/task", child.id());
    let (mut names, mut most) = (BTreeSet::new(), 0);
    loop {
        if let Ok(entries) = std::fs::read_dir(&tasks) {
            let entries: Vec<_> = entries.flatten().collect();
            most = most.max(entries.len());
            for e in entries {
                if let Ok(name) = std::fs::read_to_string(e.path().join("comm")) {
                    names.insert(name.trim().to_string());
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "training jsft failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // rayon's workers ran beside the main thread, so the poll saw the run's threads.
    assert!(most > 1, "the poll saw only the main thread: {names:?}");
    names
}

#[test]
fn training_keeps_candles_barrier_pool_out_unless_asked() {
    let bp = |names: &BTreeSet<String>| names.iter().any(|n| n.starts_with("candle-bp"));
    let default = thread_names(None);
    assert!(!bp(&default), "candle's pool started: {default:?}");
    // The same poll sees the pool when the variable asks for it, so the check above can
    // fail.
    let asked = thread_names(Some("2"));
    assert!(
        bp(&asked),
        "no candle-bp thread seen with CANDLE_NUM_THREADS=2: {asked:?}"
    );
}
