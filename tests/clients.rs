//! Official client libraries against the server, unchanged: the `openai` Python client
//! (`scripts/clients/openai_check.py`) and the `cohere` one, v1 and v2
//! (`scripts/clients/cohere_check.py`). `scripts/test.sh` installs the clients in a
//! virtual environment and names its Python in `SELF_JUDGE_CLIENT_PYTHON`; without it
//! these tests fail (never skip), naming the command that sets it up.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{tiny_chat, Server};

fn python() -> PathBuf {
    let p = std::env::var_os("SELF_JUDGE_CLIENT_PYTHON").map(PathBuf::from);
    match p {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "SELF_JUDGE_CLIENT_PYTHON must name a Python with the `openai` client: run the tests with scripts/test.sh"
        ),
    }
}

fn run_check(script: &str, server: &Server, key: &str) {
    let out = Command::new(python())
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("scripts/clients")
                .join(script),
        )
        .arg(&server.base)
        .arg(key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn the_openai_client_works_unchanged() {
    let s = Server::start(
        &tiny_chat(),
        "smollm2_hh_judge.yaml",
        &["--api-key", "secret"],
    );
    run_check("openai_check.py", &s, "secret");
}

#[test]
fn the_cohere_client_works_unchanged() {
    let s = Server::start(
        &tiny_chat(),
        "smollm2_hh_judge.yaml",
        &["--api-key", "secret"],
    );
    let out = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/clients/cohere_check.py"))
        .args([s.base.as_str(), "secret", "tiny-chat"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "cohere_check.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
