//! `training self-judge` end to end on the synthetic arithmetic task, starting from the
//! committed JSFT checkpoint `tests/fixtures/synthetic/arith-jsft`: the logged pairs are
//! what the judge core returns; LoRA's reference is the base model; resume is exact;
//! bad configs fail.

mod common;

use std::path::Path;

use candle_core::Var;
use self_judge_engine::scorer::DirectScorer;
use self_judge_judge::{Judge, JudgeConfig, JudgeOptions, Pair, Side};
use self_judge_model::{seeded_randn, Decoder, LoadOptions, LoadedModel, Pass};
use training::lora::LoraSpec;
use training::loss::{sequence_logps, Example, IGNORE};
use training::model::TrainModel;

use common::{arith_jsft as fixture, ok, root, self_judge, self_judge_config as config};

/// Re-judges the logged pairs with the judge core on `judge_model`; returns how many
/// logged winners differ and the largest score difference.
fn rejudge_pairs_log(log: &Path, cfg: &Path, judge_model: &Path, expected: usize) -> (usize, f64) {
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected);
    let m = LoadedModel::load(judge_model, &LoadOptions::default()).unwrap();
    let judge = Judge::new(
        &m,
        &JudgeConfig::from_file(cfg).unwrap(),
        &JudgeOptions::default(),
    )
    .unwrap();
    let pairs: Vec<Pair> = lines
        .iter()
        .map(|l| Pair {
            context: l["context"].as_str().unwrap().into(),
            response_a: l["response_a"].as_str().unwrap().into(),
            response_b: l["response_b"].as_str().unwrap().into(),
        })
        .collect();
    let scorer = DirectScorer {
        decoder: &m.decoder,
        token_ids: judge.token_ids,
        max_batch_tokens: 4096,
    };
    let verdicts = judge.judge(&pairs, &scorer).unwrap();
    let (mut winners, mut diff) = (0, 0f64);
    assert_eq!(lines.len(), verdicts.len());
    for (l, v) in lines.iter().zip(&verdicts) {
        let w = if v.winner == Side::A { "a" } else { "b" };
        winners += usize::from(l["winner"] != w);
        diff = diff
            .max((l["score_a"].as_f64().unwrap() - v.score_a).abs())
            .max((l["score_b"].as_f64().unwrap() - v.score_b).abs());
        assert!(l["context"].as_str().unwrap().starts_with("User: What is"));
    }
    (winners, diff)
}

fn check_pairs_log(log: &Path, cfg: &Path, judge_model: &Path, expected: usize) {
    let (winners, diff) = rejudge_pairs_log(log, cfg, judge_model, expected);
    assert_eq!(winners, 0, "logged winners differ from the judge core's");
    assert!(diff < 1e-5, "scores differ by {diff}");
}

#[test]
fn logged_pairs_are_the_judge_cores_verdicts_of_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |t| t.replace("max_steps: 60", "max_steps: 3"));
    let log = dir.path().join("pairs.jsonl");
    ok(self_judge(&cfg, &["--pairs-log", log.to_str().unwrap()]));
    // LoRA: the judge is the JSFT model itself (adapters off), for all 3 steps.
    check_pairs_log(&log, &cfg, &fixture(), 3 * 16);
}

#[test]
fn full_fine_tuning_judges_with_a_frozen_copy() {
    let dir = tempfile::tempdir().unwrap();
    // No `peft_config`: every weight trains, and the reference is a frozen copy.
    let cfg = config(dir.path(), |t| {
        let start = t.find("peft_config:").unwrap();
        let end = start + t[start..].find("\n\n").unwrap();
        let t = format!("{}{}", &t[..start], &t[end + 2..]);
        t.replace("max_steps: 60", "max_steps: 3")
            .replace("logging_steps: 10", "logging_steps: 1")
    });
    assert!(!std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("peft_config"));
    let log = dir.path().join("pairs.jsonl");
    ok(self_judge(&cfg, &["--pairs-log", log.to_str().unwrap()]));
    // Every step's pairs are judged by the untouched JSFT checkpoint: had the reference
    // moved with the policy, steps 2 and 3 would judge differently.
    check_pairs_log(&log, &cfg, &fixture(), 3 * 16);
    // The policy did train: its weights left the starting point.
    let start = TrainModel::load(&fixture(), None).unwrap();
    let trained = TrainModel::load(&dir.path().join("out"), None).unwrap();
    let ids = start
        .tokenizer
        .encode("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n", true)
        .unwrap();
    let d = common::max_diff(
        &common::logits(&start.decoder, &ids),
        &common::logits(&trained.decoder, &ids),
    );
    assert!(d > 1e-4, "full fine-tuning changed nothing ({d})");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let losses: Vec<f64> = state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 3, "{state}");
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
}

#[test]
fn a_jsft_adapter_is_merged_before_self_judge_training() {
    let dir = tempfile::tempdir().unwrap();
    // A LoRA JSFT run on top of the fixture gives an adapter and its merged checkpoint.
    let jsft_cfg = common::arith_config(dir.path(), Some(3));
    let text = std::fs::read_to_string(&jsft_cfg)
        .unwrap()
        .replace(
            &format!("{:?}", dir.path().join("init")),
            &format!("{:?}", fixture()),
        )
        .replace(
            "jsft_args:",
            "peft_config: {r: 4, lora_alpha: 64}\njsft_args:",
        )
        .replace("learning_rate: 1e-3", "learning_rate: 5e-2");
    std::fs::write(&jsft_cfg, text).unwrap();
    let out = common::run_training("jsft", &jsft_cfg, &[]);
    ok(out);
    let merged = dir.path().join("out");
    let sj = dir.path().join("sj");
    std::fs::create_dir_all(&sj).unwrap();
    let cfg = config(&sj, |t| {
        t.replace("max_steps: 60", "max_steps: 1").replace(
            "pretrained_model_name_or_path:",
            &format!(
                "peft_model_name_or_path: {:?}\n  pretrained_model_name_or_path:",
                merged.join("adapter")
            ),
        )
    });
    let log = sj.join("pairs.jsonl");
    ok(self_judge(&cfg, &["--pairs-log", log.to_str().unwrap()]));
    // The judge (reference) is the merged JSFT model, not the fixture it started from.
    check_pairs_log(&log, &cfg, &merged, 16);
    let (_, diff) = rejudge_pairs_log(&log, &cfg, &fixture(), 16);
    assert!(
        diff > 1e-3,
        "the adapter must matter for this check: {diff}"
    );
}

#[test]
fn lora_reference_log_probs_are_the_base_models() {
    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
    }
    .validate()
    .unwrap();
    let with = TrainModel::load(&fixture(), Some((&spec, 3))).unwrap();
    let base = TrainModel::load(&fixture(), None).unwrap();
    for (i, (_, v)) in with.vars.iter().enumerate() {
        let v: &Var = v;
        let w = seeded_randn(i as u64, 0.0, 0.2, v.shape(), v.device()).unwrap();
        v.set(&w).unwrap();
    }
    let ids = base
        .tokenizer
        .encode(
            "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
            true,
        )
        .unwrap();
    let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let n = labels.len();
    labels[..n - 2].iter_mut().for_each(|l| *l = IGNORE);
    let ex = Example {
        input_ids: ids,
        labels,
    };
    let lp = |d: &Decoder| -> f32 {
        sequence_logps(d, &[&ex], Pass::TRAIN)
            .unwrap()
            .0
            .to_vec1::<f32>()
            .unwrap()[0]
    };
    let reference = lp(&with.without_adapters());
    assert_eq!(
        reference,
        lp(&base.decoder),
        "adapters off == base model, exactly"
    );
    assert!(
        (lp(&with.decoder) - reference).abs() > 1e-4,
        "adapters on change the policy"
    );
}

#[test]
fn resumed_self_judge_run_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let edit = |t: String| {
        t.replace("max_steps: 60", "max_steps: 6").replace(
            "save_strategy: \"no\"",
            "save_strategy: \"steps\"\n  save_steps: 2",
        )
    };
    ok(self_judge(&config(&a, edit), &[]));
    let cb = config(&b, edit);
    assert!(ok(self_judge(&cb, &["--stop-after", "3"])).contains("stopped after step 3"));
    assert!(ok(self_judge(&cb, &["--resume"])).contains("(step 3)"));
    for f in ["adapter/adapter_model.safetensors", "model.safetensors"] {
        assert!(
            std::fs::read(a.join("out").join(f)).unwrap()
                == std::fs::read(b.join("out").join(f)).unwrap(),
            "{f} differs"
        );
    }
}

/// A config rewrite.
type Edit = Box<dyn Fn(String) -> String>;

#[test]
fn evaluation_runs_only_when_asked() {
    let no_eval_set = |t: String| {
        t.lines()
            .filter(|l| !l.starts_with("eval_dataset_path:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // (config edit, evaluation entries in the log: periodic ones, then the final one)
    let cases: Vec<(&str, Edit, usize)> = vec![
        ("no evaluation set", Box::new(no_eval_set), 0),
        (
            "an evaluation set (and the seed's ignore_index)",
            Box::new(|t: String| t.replace("beta: 0.1", "beta: 0.1\n  ignore_index: -100")),
            1,
        ),
        (
            "eval_strategy no",
            Box::new(|t: String| t.replace("seed: 42", "seed: 42\n  eval_strategy: \"no\"")),
            0,
        ),
        (
            "eval_steps without a set",
            Box::new(move |t: String| {
                no_eval_set(t).replace("seed: 42", "seed: 42\n  eval_steps: 2")
            }),
            2,
        ),
    ];
    for (name, edit, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), move |t| {
            edit(t.replace("max_steps: 60", "max_steps: 4"))
        });
        let err = ok(self_judge(&cfg, &[]));
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/trainer_state.json")).unwrap(),
        )
        .unwrap();
        let evals = state["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l.get("eval_loss").is_some())
            .count();
        assert_eq!(evals, want, "{name}: {err}");
        assert_eq!(err.contains("eval: loss"), want > 0, "{name}: {err}");
    }
}

#[test]
fn bad_self_judge_configs_fail_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let bad_rows = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_rows,
        "{\"chosen\": \"\\n\\nHuman: hi\\n\\nAssistant: yo\"}\n",
    )
    .unwrap();
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|t: String| t.replace("\"sigmoid\"", "\"kto\"")),
            "`self_judge_args.loss_type` \"kto\" is not supported",
        ),
        (
            Box::new(|t: String| t.replace("beta: 0.1", "beta: 0.1\n  token_id_a: 5")),
            "token_id_b",
        ),
        (
            Box::new(|t: String| {
                t.replace("beta: 0.1", "beta: 0.1\n  token_id_a: 5\n  token_id_b: 6")
            }),
            "differ from the ids",
        ),
        (
            Box::new(move |t: String| {
                t.replace(
                    &format!(
                        "{}/tests/fixtures/synthetic/arith_sj_train.jsonl",
                        root().display()
                    ),
                    bad_rows.to_str().unwrap(),
                )
            }),
            "rejected",
        ),
        (
            Box::new(|t: String| t.replace("beta: 0.1", "beta: 0.1\n  top_q: 1")),
            "unknown key `self_judge_args.top_q`",
        ),
        (
            Box::new(|t: String| t.replace("beta: 0.1", "beta: 0.1\n  ignore_index: 3")),
            "`self_judge_args.ignore_index` must be a negative integer",
        ),
        (
            Box::new(|t: String| t.replace("seed: 42", "seed: 42\n  eval_strategy: epoch")),
            "`training_args.eval_strategy` must be no or steps",
        ),
    ];
    for (edit, want) in cases {
        let out = self_judge(&config(dir.path(), edit), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn average_log_prob_divides_each_sequence_by_its_learned_tokens() {
    use training::self_judge::dpo::dpo_batch;
    use training::self_judge::onpolicy::OnPolicy;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = config(dir.path(), |t| t);
    let (cfg, judge_cfg) = training::jsft::read_configs(&cfg_path).unwrap();
    let mut spec = cfg.lora.clone().unwrap();
    spec.dropout = 0.0;
    let model = TrainModel::load(&fixture(), Some((&spec, 5))).unwrap();
    // Adapters away from zero, so that the policy differs from the reference.
    for (i, (_, v)) in model.vars.iter().enumerate() {
        let v: &Var = v;
        v.set(&seeded_randn(100 + i as u64, 0.0, 0.1, v.shape(), v.device()).unwrap())
            .unwrap();
    }
    let chat = self_judge_tokenizer::ChatTemplate::new(judge_cfg.chat_template.as_deref().unwrap())
        .unwrap();
    let q = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n";
    let seqs = |answers: &[&str]| -> Vec<Example> {
        answers
            .iter()
            .map(|a| {
                let prompt = model.tokenizer.encode(q, true).unwrap();
                let mut ids = prompt.clone();
                ids.extend(
                    model
                        .tokenizer
                        .encode(&format!("{a}<|im_end|>"), false)
                        .unwrap(),
                );
                let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
                labels[..prompt.len()].iter_mut().for_each(|l| *l = IGNORE);
                Example {
                    input_ids: ids,
                    labels,
                }
            })
            .collect()
    };
    let (chosen, rejected) = (seqs(&["5", "It is 5."]), seqs(&["6 or so, I think", "7"]));
    let mut args = cfg.self_judge.clone().unwrap();
    let mut run = |average: bool| {
        args.average_log_prob = average;
        let op = OnPolicy::new(&model, None, &chat, &judge_cfg, &args).unwrap();
        dpo_batch(&op, &chosen, &rejected, false).unwrap().1
    };
    let (sum, avg) = (run(false), run(true));
    let (lc, lr) = (&sum.lengths.0, &sum.lengths.1);
    assert_eq!((lc.len(), lr.len()), (2, 2));
    for k in 0..4 {
        let lengths = if k % 2 == 0 { lc } else { lr };
        for (i, &n) in lengths.iter().enumerate() {
            assert!(n >= 2.0, "each answer has learned tokens");
            let (s, a) = (sum.logps[k][i], avg.logps[k][i]);
            assert!(
                (a - s / n).abs() < 1e-5 * s.abs().max(1.0),
                "logps[{k}][{i}]: {a} vs {s} / {n}"
            );
        }
    }
    // The loss is the DPO loss of the averaged log-probabilities.
    let beta = args.beta as f32;
    let want: f32 = (0..2)
        .map(|i| {
            let x = (avg.logps[0][i] - avg.logps[1][i]) - (avg.logps[2][i] - avg.logps[3][i]);
            (1.0 + (-beta * x).exp()).ln()
        })
        .sum::<f32>()
        / 2.0;
    assert!(
        (avg.loss as f32 - want).abs() < 1e-5,
        "{} vs {want}",
        avg.loss
    );
    assert!(
        (avg.loss - sum.loss).abs() > 1e-6,
        "averaging changed nothing"
    );
}

#[test]
fn the_judge_runs_a_packed_snapshot_of_a_trained_decoder() {
    use self_judge_model::linear::LinearWeight;
    // Full fine-tuning: every weight is a variable, which packing alone leaves dense.
    let model = TrainModel::load(&fixture(), None).unwrap();
    let dec = &model.decoder;
    assert!(dec.layers[0].q_proj.has_trainable());
    let snap = dec.packed_snapshot().unwrap();
    let packed = |d: &self_judge_model::Decoder| {
        d.layers
            .iter()
            .flat_map(|l| [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.down_proj])
            .chain([&d.lm_head])
            .filter(|p| matches!(p.weight, LinearWeight::Packed(_)))
            .count()
    };
    assert_eq!(packed(&snap), 5 * snap.layers.len() + 1);
    // The trained decoder keeps its dense, differentiable weights.
    assert_eq!(packed(dec), 0);
    assert!(dec.layers[0].q_proj.has_trainable());
    let ids = model
        .tokenizer
        .encode("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n", true)
        .unwrap();
    let (want, got) = (common::logits(dec, &ids), common::logits(&snap, &ids));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = common::max_diff(&want, &got);
    assert!(
        d <= 1e-5 * scale.max(1.0),
        "packed snapshot logits differ by {d} (scale {scale})"
    );
}
