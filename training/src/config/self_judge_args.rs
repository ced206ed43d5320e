//! `self_judge_args`: the seed's `SelfJudgeTrainer` keyword arguments.

use super::raw::RawSelfJudgeArgs;

/// DPO loss variants the seed implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossType {
    /// `-log σ(β·logits)` (DPO).
    Sigmoid,
    /// `relu(1 − β·logits)` (SLiC).
    Hinge,
    /// `(logits − 1/(2β))²` (IPO).
    Ipo,
}

impl LossType {
    /// Parses `loss_type`; anything else is refused naming the choices.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "sigmoid" => Ok(Self::Sigmoid),
            "hinge" => Ok(Self::Hinge),
            "ipo" => Ok(Self::Ipo),
            other => anyhow::bail!(
                "`self_judge_args.loss_type` {other:?} is not supported (sigmoid, hinge, ipo)"
            ),
        }
    }
}

/// Sampling, judging and loss settings (defaults as the seed's trainer).
#[derive(Debug, Clone, PartialEq)]
pub struct SelfJudgeArgs {
    /// Zero every dropout (LoRA's included), as the seed's `disable_dropout`.
    pub disable_dropout: bool,
    /// Judge prompts per forward pass (sets the scorer's token budget with max_length).
    pub judge_batch_size: usize,
    pub max_length: usize,
    pub max_new_tokens: usize,
    pub top_p: f32,
    /// HF's generation default (50) applies in the seed; configurable here.
    pub top_k: usize,
    pub temperature: f32,
    pub loss_type: LossType,
    pub beta: f64,
    /// Average instead of sum the response log-probabilities.
    pub average_log_prob: bool,
}

impl SelfJudgeArgs {
    /// The section with the seed trainer's defaults; wrong values fail naming the key.
    pub fn from_raw(r: RawSelfJudgeArgs) -> anyhow::Result<Self> {
        let a = Self {
            disable_dropout: r.disable_dropout.unwrap_or(true),
            judge_batch_size: r.judge_batch_size.unwrap_or(1).max(1),
            max_length: r.max_length.unwrap_or(2048),
            max_new_tokens: r.max_new_tokens.unwrap_or(768),
            top_p: r.top_p.unwrap_or(0.9) as f32,
            top_k: r.top_k.unwrap_or(50),
            temperature: r.temperature.unwrap_or(1.0) as f32,
            loss_type: LossType::parse(r.loss_type.as_deref().unwrap_or("sigmoid"))?,
            beta: r.beta.unwrap_or(0.1),
            average_log_prob: r.average_log_prob.unwrap_or(false),
        };
        // The seed's label value for positions without loss. Labels here never hold it
        // (they are built with our own marker), so any value a token id cannot take does.
        if let Some(x) = r.ignore_index {
            anyhow::ensure!(
                x < 0.0 && x.fract() == 0.0,
                "`self_judge_args.ignore_index` must be a negative integer (it must not be a token id), got {x}"
            );
        }
        anyhow::ensure!(a.beta > 0.0, "`self_judge_args.beta` must be > 0");
        anyhow::ensure!(
            a.top_p > 0.0 && a.top_p <= 1.0,
            "`self_judge_args.top_p` must be in (0, 1]"
        );
        anyhow::ensure!(
            a.temperature > 0.0,
            "`self_judge_args.temperature` must be > 0 (sampling two different responses)"
        );
        anyhow::ensure!(
            a.max_new_tokens > 0,
            "`self_judge_args.max_new_tokens` must be > 0"
        );
        Ok(a)
    }
}
