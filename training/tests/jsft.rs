//! `training jsft` end to end on the synthetic arithmetic data: the loss falls, the
//! trainer state has HF's log fields, and the saved checkpoint gives the engine the
//! same logits the model had at the end of training.

mod common;

use std::path::{Path, PathBuf};

use self_judge_model::{LoadOptions, LoadedModel};
use self_judge_tokenizer::ChatTemplate;
use training::checkpoint::Checkpoint;
use training::config::{Role, TrainConfig};
use training::data::jsft::{BuildStats, JsftBuilder};
use training::jsft::{read_jsonl, train};
use training::model::TrainModel;

use common::arith_config;

fn init(out: &Path) {
    assert!(common::init(out, 32, &[]).status.success());
}

fn config(dir: &Path, steps: usize) -> PathBuf {
    arith_config(dir, Some(steps))
}

#[test]
fn jsft_binary_trains_and_writes_a_servable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let cfg = config(dir.path(), 40);
    let out = common::run_training("jsft", &cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("175 rows -> 175 SFT + 350 judgment examples; skipped 0"),
        "{err}"
    );
    // `report_to: "none"` is a setting with a meaning here: nothing to warn about.
    assert!(!err.contains("report_to"), "{err}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let logs = state["log_history"].as_array().unwrap();
    assert_eq!(logs.len(), 4);
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l["step"], 10 * (i + 1));
        for k in ["loss", "grad_norm", "learning_rate", "epoch"] {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    // Without a terminal each logging step is one line on stderr, with the logged loss.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (line, l) in lines.iter().zip(logs) {
        assert!(
            line.starts_with(&format!("step {}/40 | ", l["step"])),
            "{line}"
        );
        let loss = format!("loss {:.4e}", l["loss"].as_f64().unwrap());
        assert!(line.contains(&loss) && line.contains("tok/s"), "{line}");
        assert!(
            line.contains("learning_rate ") && line.contains(" left "),
            "{line}"
        );
    }
    // The loss falls at every logging step.
    let losses: Vec<f64> = logs.iter().map(|l| l["loss"].as_f64().unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    // The engine loads it and its chat template is the config's.
    let png = std::fs::read(dir.path().join("out/loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let m = LoadedModel::load(&dir.path().join("out"), &LoadOptions::default()).unwrap();
    assert!(m.chat_template().unwrap().source().contains("<|im_start|>"));
}

#[test]
fn saved_checkpoint_reproduces_the_trained_logits() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let cfg = TrainConfig::from_file(&config(dir.path(), 5)).unwrap();
    let judge = cfg.judge_config().unwrap();
    let model = TrainModel::load(&cfg.model_path, None).unwrap();
    let chat_src = judge.chat_template.clone().unwrap();
    let chat = ChatTemplate::new(&chat_src).unwrap();
    let b = JsftBuilder::new(
        &model.tokenizer,
        &chat,
        &judge.template,
        cfg.max_length,
        &cfg.user_marker,
        &cfg.assistant_marker,
        false,
    )
    .unwrap();
    let rows = read_jsonl(&cfg.dataset_path).unwrap();
    let examples = b
        .hh(&rows[..20], "Judge.", &mut BuildStats::default())
        .unwrap();
    let chat_t = judge.chat_template.clone().unwrap();
    train(&model, &examples, &cfg, &chat_t, &Default::default()).unwrap();
    let trained = model.decoder.clone();
    let prompt = model
        .tokenizer
        .encode("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n", false)
        .unwrap();
    let want: Vec<f32> = common::logits(&trained, &prompt);
    let out = dir.path().join("ckpt");
    Checkpoint {
        config: &model.decoder.cfg,
        weights: model.named_weights().unwrap(),
        tokenizer: &model.tokenizer,
        chat_template: Some(&chat_src),
    }
    .save(&out)
    .unwrap();
    let served = LoadedModel::load(&out, &LoadOptions::default()).unwrap();
    let got: Vec<f32> = common::logits(&served.decoder, &prompt);
    let d = common::max_diff(&got, &want);
    assert!(d < 1e-5, "max |diff| {d}");
    // And the weights did change from the initial checkpoint.
    let init = LoadedModel::load(&dir.path().join("init"), &LoadOptions::default()).unwrap();
    let before: Vec<f32> = common::logits(&init.decoder, &prompt);
    assert!(before.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn bad_configs_fail_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let base = std::fs::read_to_string(config(dir.path(), 5)).unwrap();
    for (edit, want) in [
        (
            base.replace("max_steps: 5", "max_step: 5"),
            "unknown key `training_args.max_step`",
        ),
        (base.replace("\"cosine\"", "\"polynomial\""), "polynomial"),
        (
            base.replace("dataset: \"Anthropic/hh-rlhf\"", "dataset: \"foo/bar\""),
            "dataset `foo/bar` is not supported",
        ),
        (
            base.replace(
                "jsft_args:",
                "peft_config: {r: 8, target_modules: [qproj]}\njsft_args:",
            ),
            "unknown module `qproj`",
        ),
        (
            base.replace("jsft_args:", "peft_config: {r: 8, bias: all}\njsft_args:"),
            "`peft_config.bias` must be \"none\"",
        ),
    ] {
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, edit).unwrap();
        let out = common::run_training("jsft", &p, &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// One UltraFeedback row: three completions rated under the four principles.
fn uf_row(i: usize) -> serde_json::Value {
    let ann = |r: &str, why: &str| serde_json::json!({"Rating": r, "Rationale": why, "Rationale For Rating": "ok"});
    let completion = |text: &str, r: &str| {
        serde_json::json!({
            "response": text,
            "custom_system_prompt": "Be helpful.",
            "annotations": {
                "helpfulness": ann(r, "Accurate."),
                "honesty": ann(r, "Confident."),
                "instruction_following": ann(r, "Follows."),
                "truthfulness": ann(r, "True."),
            }
        })
    };
    serde_json::json!({
        "instruction": format!("Name a colour ({i})."),
        "completions": [completion("Blue.", "5"), completion("Rock.", "1"), completion("Red!", "3")],
    })
}

#[test]
fn jsft_trains_on_ultrafeedback_with_principles_and_rationales() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let data = dir.path().join("uf.jsonl");
    let rows: Vec<String> = (0..6).map(|i| uf_row(i).to_string()).collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let cfg = std::fs::read_to_string(common::root().join("configs/uf_jsft_pr.yaml"))
        .unwrap()
        .replace(
            "\"experiments/uf_jsft_pr\"",
            &format!("{:?}", dir.path().join("out")),
        )
        .replace(
            "\"meta-llama/Llama-2-7b-hf\"",
            &format!("{:?}", dir.path().join("init")),
        )
        .replace("\"data/ultrafeedback.jsonl\"", &format!("{data:?}"))
        .replace("num_train_epochs: 1", "max_steps: 2")
        .replace(
            "per_device_train_batch_size: 16",
            "per_device_train_batch_size: 4",
        );
    // Per row: 1 SFT example and 4 principles x 2 orders of rationale judgments.
    train_with(
        dir.path(),
        "uf.yaml",
        cfg,
        "6 rows -> 6 SFT + 48 judgment examples; skipped 0 unmaskable",
    );
}

/// Writes `yaml` to `dir/name`, runs `training jsft` on it and checks that it succeeds,
/// reports `stats` and writes a model.
fn train_with(dir: &Path, name: &str, yaml: String, stats: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    let out = common::run_training("jsft", &p, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(stats), "{err}");
    assert!(dir.join("out/model.safetensors").exists());
    err.into_owned()
}

#[test]
fn dataset_roles_choose_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let cfg = TrainConfig::from_file(&config(dir.path(), 5)).unwrap();
    let judge = cfg.judge_config().unwrap();
    let model = TrainModel::load(&cfg.model_path, None).unwrap();
    let chat = ChatTemplate::new(judge.chat_template.as_deref().unwrap()).unwrap();
    let rows = read_jsonl(&cfg.dataset_path).unwrap();
    let build = |role| {
        let b = JsftBuilder::new(
            &model.tokenizer,
            &chat,
            &judge.template,
            cfg.max_length,
            &cfg.user_marker,
            &cfg.assistant_marker,
            false,
        )
        .unwrap()
        .with_role(role);
        let mut stats = BuildStats::default();
        let examples = b.hh(&rows[..10], "Judge.", &mut stats).unwrap();
        (examples, stats)
    };
    let (both, s) = build(Role::Both);
    assert_eq!((s.sft, s.judgments), (10, 20));
    let (sft, s) = build(Role::Sft);
    assert_eq!((s.sft, s.judgments), (10, 0));
    let (judgments, s) = build(Role::Judgments);
    assert_eq!((s.sft, s.judgments), (0, 20));
    // The same examples as with both roles, split by kind (each row: SFT, then A, B).
    let mut split = Vec::new();
    for (i, s) in sft.iter().enumerate() {
        split.push(s.clone());
        split.extend(judgments[2 * i..2 * i + 2].iter().cloned());
    }
    assert_eq!(both, split);
}

#[test]
fn training_with_paired_orders_runs_with_and_without_sft() {
    // 175 rows: with SFT examples the odd one out is dropped, else the grouped sampler
    // refuses 525 examples in groups of two.
    for (role, want) in [
        ("judgments", "175 rows -> 0 SFT + 350 judgment examples"),
        ("both", "175 rows -> 175 SFT + 350 judgment examples"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        init(&dir.path().join("init"));
        let base = std::fs::read_to_string(config(dir.path(), 6)).unwrap();
        let line = base
            .lines()
            .find(|l| l.starts_with("dataset_path:"))
            .unwrap()
            .to_string();
        let path = line.trim_start_matches("dataset_path:").trim();
        let edited = base
            .replace(
                &line,
                &format!("datasets:\n  - {{path: {path}, role: {role}}}"),
            )
            .replace("jsft_args:", "jsft_args:\n  pair_orders: true");
        let err = train_with(dir.path(), &format!("paired_{role}.yaml"), edited, want);
        assert_eq!(
            err.contains("the last SFT example is left out"),
            role == "both",
            "{err}"
        );
    }
}

#[test]
fn num_processes_gives_the_seeds_global_batch_through_accumulation() {
    let dir = tempfile::tempdir().unwrap();
    let accelerate = dir.path().join("accelerate.yaml");
    std::fs::write(
        &accelerate,
        "distributed_type: DEEPSPEED\nnum_machines: 1\nnum_processes: 4\n",
    )
    .unwrap();
    // (log of (step, learning_rate, loss), planned steps, stderr) of one epoch.
    let run = |name: &str, accum: usize, extra: &[&str]| {
        let d = dir.path().join(name);
        init(&d.join("init"));
        let text = std::fs::read_to_string(common::arith_config(&d, None))
            .unwrap()
            .replace("max_steps: 2000", "num_train_epochs: 1")
            .replace(
                "per_device_train_batch_size: 16",
                "per_device_train_batch_size: 8",
            )
            .replace(
                "gradient_accumulation_steps: 1",
                &format!("gradient_accumulation_steps: {accum}"),
            )
            .replace("logging_steps: 200", "logging_steps: 1");
        let p = d.join("jsft.yaml");
        std::fs::write(&p, text).unwrap();
        let out = common::run_training("jsft", &p, extra);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("out/trainer_state.json")).unwrap(),
        )
        .unwrap();
        let log: Vec<(u64, f64, f64)> = state["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l.get("loss").is_some())
            .map(|l| {
                let f = |k: &str| l[k].as_f64().unwrap();
                (l["step"].as_u64().unwrap(), f("learning_rate"), f("loss"))
            })
            .collect();
        (log, state["max_steps"].as_u64().unwrap(), err)
    };
    // 175 rows -> 525 examples; 8 per device x 4 processes = 32 a step: 17 steps an epoch.
    let (four, steps, err) = run("four", 1, &["--num-processes", "4"]);
    assert_eq!(steps, 17);
    assert!(err.contains("4 processes: global batch 32"), "{err}");
    let (accumulated, steps_b, _) = run("accumulated", 4, &[]);
    assert_eq!(steps_b, 17);
    assert_eq!(four.len(), 17);
    assert_eq!(four, accumulated, "the same steps, schedule and losses");
    let (from_file, _, _) = run(
        "file",
        1,
        &["--accelerate-config", accelerate.to_str().unwrap()],
    );
    assert_eq!(four, from_file);
    let (one, steps_one, _) = run("one", 1, &[]);
    assert_eq!(steps_one, 66);
    assert!(
        one[1].1 != four[1].1,
        "a different schedule without processes"
    );

    std::fs::write(&accelerate, "num_machines: 1\n").unwrap();
    let cfg = common::arith_config(&dir.path().join("four"), Some(2));
    let out = common::run_training(
        "jsft",
        &cfg,
        &["--accelerate-config", accelerate.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("`num_processes` must be a positive integer"),
        "{err}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_is_refused_by_a_cpu_build_and_cpu_trains() {
    let dir = tempfile::tempdir().unwrap();
    init(&dir.path().join("init"));
    let cfg = arith_config(dir.path(), Some(1));
    for (command, cfg) in [
        ("jsft", cfg.clone()),
        ("self-judge", common::self_judge_config(dir.path(), |t| t)),
    ] {
        for device in ["cuda", "cuda:1"] {
            let out = common::run_training(command, &cfg, &["--device", device]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} --device {device} ran");
            assert!(
                err.contains("built without the `cuda` feature"),
                "{command} --device {device}: {err}"
            );
        }
        let out = common::run_training(command, &cfg, &["--device", "gpu"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `gpu`"));
    }
    // The default and an explicit `--device cpu` train.
    common::ok(common::run_training("jsft", &cfg, &["--device", "cpu"]));
    assert!(dir.path().join("out/model.safetensors").exists());
}

#[test]
fn save_strategy_epoch_saves_at_each_epochs_end() {
    let dir = tempfile::tempdir().unwrap();
    common::ok(common::init(&dir.path().join("init"), 32, &[]));
    let cfg = arith_config(dir.path(), None);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_steps: 2000", "num_train_epochs: 2")
        .replace("save_strategy: \"no\"", "save_strategy: \"epoch\"")
        .replace("logging_steps: 200", "logging_steps: 11");
    std::fs::write(&cfg, text).unwrap();
    common::ok(common::run_training("jsft", &cfg, &[]));
    let out = dir.path().join("out");
    let mut saved: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    saved.sort_by_key(|n| n["checkpoint-".len()..].parse::<usize>().unwrap());
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    let total = last["max_steps"].as_u64().unwrap();
    assert!(total >= 4 && total.is_multiple_of(2), "{last}");
    // Two epochs of equally many steps: a checkpoint at the end of each.
    let per_epoch = total / 2;
    assert_eq!(
        saved,
        [
            format!("checkpoint-{per_epoch}"),
            format!("checkpoint-{total}")
        ]
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(format!("checkpoint-{per_epoch}/trainer_state.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["global_step"], per_epoch, "{state}");
    assert!(
        (state["epoch"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{state}"
    );
}
