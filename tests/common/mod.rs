//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The real SmolLM2 GGUF fetched by `scripts/fetch-smollm2.sh`. Tests that need it fail
/// (never skip) when it is absent, naming the command that fetches it.
pub fn smollm2_path() -> PathBuf {
    let p = std::env::var_os("SELF_JUDGE_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-smollm2.sh first",
        p.display()
    );
    p
}

/// Runs `cmd` to its end and returns its stdout; a failure shows the command's stderr.
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Largest absolute element-wise difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The tiny ChatML checkpoint (random weights, byte-level tokenizer).
pub fn tiny_chat() -> PathBuf {
    fixture("tiny-chat")
}

/// The HTTP client of the server tests (a generous timeout: a slow machine is not a
/// failure, a hang is).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .unwrap()
}

/// POSTs `body` as JSON; returns the status and the JSON reply (null if not JSON).
pub fn post(s: &Server, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = client().post(s.url(path)).json(body).send().unwrap();
    (
        r.status().as_u16(),
        r.json().unwrap_or(serde_json::Value::Null),
    )
}

/// A `self-judge serve` process on a free port, stopped (SIGTERM) on drop.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Server {
    /// Starts the server and waits until `/health` answers 200.
    pub fn start(model: &std::path::Path, config: &str, extra: &[&str]) -> Server {
        Self::start_with_env(model, config, extra, &[])
    }

    /// [`Server::start`] with environment variables set for the server.
    pub fn start_with_env(
        model: &std::path::Path,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        use std::io::BufRead;
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(config);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_self-judge"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .arg("--config")
            .arg(&config)
            .args(["--port", "0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(
            base.starts_with("http://"),
            "unexpected first line {line:?}"
        );
        let server = Server { child, base };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if let Ok(r) = reqwest::blocking::get(server.url("/health")) {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not become healthy"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal_term();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// A metric's value (sum of all its label sets) from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts two JSON documents are equal (strings such as winners exactly), except that
/// numbers may differ by 1e-5
/// (floating-point sums may group differently in differently packed batches).
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{a} vs {b}");
            x.iter().zip(y).for_each(|(x, y)| assert_json_close(x, y));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{a} vs {b}"
            );
            x.iter().for_each(|(k, v)| assert_json_close(v, &y[k]));
        }
        _ => assert_eq!(a, b),
    }
}

/// The SmolLM2 model (f32, dequantized), loaded once per test binary.
pub fn smollm2() -> &'static self_judge::model::LoadedModel {
    static M: std::sync::OnceLock<self_judge::model::LoadedModel> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        self_judge::model::LoadedModel::load(
            &smollm2_path(),
            &self_judge::model::LoadOptions::default(),
        )
        .unwrap()
    })
}

/// A judge config from `configs/`.
pub fn judge_config(name: &str) -> self_judge::judge::JudgeConfig {
    self_judge::judge::JudgeConfig::from_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name),
    )
    .unwrap()
}
