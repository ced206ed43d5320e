//! The judge: pairs to judge prompts in both orders, and the probabilities of ` A` and
//! ` B` back to verdicts. Prompts are executed behind [`Scorer`].

use super::config::JudgeConfig;
use super::error::JudgeError;
use super::pair::Pair;
use super::prompt::{Order, PromptBuilder};
use super::template::JudgeTemplate;
use super::verdict::{OrderProbs, PrincipleVerdict, Verdict};
use self_judge_model::ModelView;

/// Executes judge prompts: returns P(` A`) and P(` B`) at the last position of each.
pub trait Scorer {
    fn score(&self, prompts: &[Vec<u32>]) -> Result<Vec<OrderProbs>, JudgeError>;
}

/// Choices made when a judge is set up.
#[derive(Debug, Clone, Default)]
pub struct JudgeOptions {
    /// Overrides the config's `max_length`.
    pub max_length: Option<usize>,
    /// Use the config's token ids even when they differ from the tokenizer's.
    pub force_token_ids: bool,
    /// Restrict to these principles.
    pub principles: Option<Vec<String>>,
}

/// Everything needed to turn pairs into prompts and probabilities into verdicts.
#[derive(Debug, Clone)]
pub struct Judge {
    pub template: JudgeTemplate,
    pub prompts: PromptBuilder,
    /// Ids of ` A` and ` B`.
    pub token_ids: (u32, u32),
}

impl Judge {
    /// Sets up a judge for `model` from a config. Fails when no chat template is
    /// available, when ` A`/` B` are not single tokens, or when configured ids disagree
    /// with the tokenizer (unless forced).
    pub fn new<'m>(
        model: impl Into<ModelView<'m>>,
        cfg: &JudgeConfig,
        opts: &JudgeOptions,
    ) -> Result<Self, JudgeError> {
        let model = model.into();
        let template = match &opts.principles {
            Some(names) => cfg.template.restrict(names)?,
            None => cfg.template.clone(),
        };
        let chat = match &cfg.chat_template {
            Some(src) => self_judge_tokenizer::ChatTemplate::new(src)?,
            None => model.chat_template()?.clone(),
        };
        let ctx = model.decoder.max_positions();
        let max_length = opts.max_length.or(cfg.max_length).unwrap_or(ctx).min(ctx);
        let prompts = PromptBuilder::new(chat, model.tokenizer.clone(), max_length)?;
        let derived = prompts.derive_token_ids(&template)?;
        let token_ids = match cfg.token_ids {
            Some(given) if given != derived && !opts.force_token_ids => {
                return Err(JudgeError::Config(format!(
                    "the config's token ids (token_id_a, token_id_b) = {given:?} differ from the ids of \" A\"/\" B\" for this tokenizer {derived:?}; remove them from the config, fix them, or force the configured ids"
                )))
            }
            Some(given) => given,
            None => derived,
        };
        let vocab = model.decoder.cfg.vocab_size as u32;
        if token_ids.0 >= vocab || token_ids.1 >= vocab {
            return Err(JudgeError::Config(format!(
                "token ids {token_ids:?} are outside the vocabulary of {vocab}"
            )));
        }
        Ok(Self {
            template,
            prompts,
            token_ids,
        })
    }

    /// Number of prompts one pair needs: two orders per principle.
    pub fn prompts_per_pair(&self) -> usize {
        2 * self.template.principles.len()
    }

    /// The prompts of one pair: for each principle, order ab then order ba.
    pub fn pair_prompts(&self, pair: &Pair) -> Result<Vec<Vec<u32>>, JudgeError> {
        let mut out = Vec::with_capacity(self.prompts_per_pair());
        for p in &self.template.principles {
            for order in [Order::Ab, Order::Ba] {
                out.push(self.prompts.prompt_ids(
                    p,
                    &pair.context,
                    &pair.response_a,
                    &pair.response_b,
                    order,
                )?);
            }
        }
        Ok(out)
    }

    /// The verdict of one pair from the probabilities of its prompts (same order as
    /// [`Judge::pair_prompts`]).
    pub fn verdict(&self, probs: &[OrderProbs]) -> Verdict {
        let principles = self
            .template
            .principles
            .iter()
            .zip(probs.chunks(2))
            .map(|(p, o)| PrincipleVerdict::new(&p.principle.name, o[0], o[1]))
            .collect();
        Verdict::aggregate(principles)
    }

    /// The prompts of several pairs, pair after pair.
    pub fn prompts_for(&self, pairs: &[Pair]) -> Result<Vec<Vec<u32>>, JudgeError> {
        let mut prompts = Vec::with_capacity(pairs.len() * self.prompts_per_pair());
        for pair in pairs {
            prompts.extend(self.pair_prompts(pair)?);
        }
        Ok(prompts)
    }

    /// One verdict per pair from the probabilities of [`Judge::prompts_for`]'s prompts.
    pub fn verdicts(&self, probs: &[OrderProbs]) -> Result<Vec<Verdict>, JudgeError> {
        if !probs.len().is_multiple_of(self.prompts_per_pair()) {
            return Err(JudgeError::Internal(format!(
                "{} scores do not split into pairs of {} prompts",
                probs.len(),
                self.prompts_per_pair()
            )));
        }
        Ok(probs
            .chunks(self.prompts_per_pair())
            .map(|c| self.verdict(c))
            .collect())
    }

    /// Judges every pair with one call to the scorer.
    pub fn judge(&self, pairs: &[Pair], scorer: &dyn Scorer) -> Result<Vec<Verdict>, JudgeError> {
        let prompts = self.prompts_for(pairs)?;
        let probs = scorer.score(&prompts)?;
        if probs.len() != prompts.len() {
            return Err(JudgeError::Internal(format!(
                "{} scores for {} prompts",
                probs.len(),
                prompts.len()
            )));
        }
        self.verdicts(&probs)
    }

    /// The same judge restricted to some principles (an unknown name is an error).
    pub fn with_principles(&self, names: &[String]) -> Result<Self, JudgeError> {
        Ok(Self {
            template: self.template.restrict(names)?,
            prompts: self.prompts.clone(),
            token_ids: self.token_ids,
        })
    }
}
