//! Unit tests of the training config reader.

use super::*;

const BASE: &str = "training_args: {output_dir: out, learning_rate: 2e-5, report_to: wandb}\nmodel: {pretrained_model_name_or_path: m, attn_implementation: x}\ntemplates: {user: U, assistant: A, judge: {}}\ndataset: Anthropic/hh-rlhf\ndataset_path: d.jsonl\n";

#[test]
fn accepts_the_seed_shape_with_warnings() {
    let c = TrainConfig::from_yaml(BASE).unwrap();
    assert_eq!(c.training.learning_rate, 2e-5);
    assert_eq!(c.warnings.len(), 2);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("training_args.report_to") && w.contains("wandb")),
        "{:?}",
        c.warnings
    );
    assert!(c.training.tensorboard_dir.is_none());
    let tb = TrainConfig::from_yaml(&BASE.replace("report_to: wandb", "report_to: [tensorboard]"))
        .unwrap();
    assert_eq!(tb.training.tensorboard_dir, Some(PathBuf::from("out/runs")));
    assert_eq!(
        tb.warnings.len(),
        1,
        "only attn_implementation is left unused"
    );
}

#[test]
fn datasets_with_roles() {
    let two = BASE.replace(
        "dataset_path: d.jsonl\n",
        "datasets: [{path: a.jsonl, role: judgments}, {path: b.jsonl}]\n",
    );
    let c = TrainConfig::from_yaml(&two).unwrap();
    assert_eq!(
        c.datasets,
        vec![
            DatasetSource {
                path: "a.jsonl".into(),
                role: Role::Judgments
            },
            DatasetSource {
                path: "b.jsonl".into(),
                role: Role::Both
            }
        ]
    );
    let one = TrainConfig::from_yaml(BASE).unwrap();
    assert_eq!(one.datasets[0].role, Role::Both);
    for (bad, want) in [
        (
            "datasets: [{path: a.jsonl, role: sometimes}]",
            "role` must be both",
        ),
        (
            "datasets: [{path: a.jsonl, weight: 2}]",
            "unknown key `datasets[0].weight`",
        ),
        ("datasets: []", "`datasets` is empty"),
        ("datasets: [{role: sft}]", "`datasets[0].path` is missing"),
    ] {
        let e = TrainConfig::from_yaml(&BASE.replace("dataset_path: d.jsonl", bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
    let both = format!("{BASE}datasets: [{{path: a.jsonl}}]\n");
    let e = TrainConfig::from_yaml(&both).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    let e = TrainConfig::from_yaml(&BASE.replace("report_to: wandb", "learning_rat: 1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `training_args.learning_rat`"),
        "{e}"
    );
    let e = TrainConfig::from_yaml(&BASE.replace("learning_rate: 2e-5", "learning_rate: fast"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`training_args.learning_rate` must be a number"),
        "{e}"
    );
    let e = TrainConfig::from_yaml(&BASE.replace(
        "output_dir: out,",
        "output_dir: out, lr_scheduler_type: poly,",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("poly"), "{e}");
}
