//! UltraFeedback rows (`instruction`, `completions[]`) as JSFT examples (SPEC §4, seed
//! `preprocess.py` UF builders): a common ranking, one SFT example on the best
//! response, and judgment examples either on one sampled pair (no rationales) or per
//! principle with the annotators' rationales as the trained continuation.
//!
//! Randomness: the seed samples pairs with Python's global `random` inside forked
//! `datasets.map` workers, which cannot be reproduced. Here every row gets its own
//! ChaCha generator keyed by (config seed, row index in the dataset), so the examples do
//! not depend on processing order or threads; draws within a row happen in principle
//! order.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use self_judge_tokenizer::ChatMessage;
use serde_json::Value;

pub use crate::config::rationale::format_rationale;

use super::jsft::{judgment_messages, BuildStats, JsftBuilder};
use super::mask::marker;
use crate::loss::Example;

/// One principle's annotation of one completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// `Rating` as a number; `None` for `"N/A"`.
    pub rating: Option<f64>,
    /// `Rationale`, plus `" " + Rationale For Rating` when that key exists; `None` when
    /// the annotation has no `Rationale` (only rationale rows need it).
    pub rationale: Option<String>,
}

/// One candidate response of an instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub response: String,
    pub system: String,
    /// Annotations by principle name.
    pub annotations: BTreeMap<String, Annotation>,
}

/// A parsed UltraFeedback row.
#[derive(Debug, Clone, PartialEq)]
pub struct UfRow {
    pub instruction: String,
    pub completions: Vec<Completion>,
}

fn string_field(v: &Value, key: &str, at: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{at}missing string field `{key}`"))
}

fn parse_rating(v: Option<&Value>, at: &str) -> Result<Option<f64>, String> {
    match v {
        Some(Value::String(s)) if s == "N/A" => Ok(None),
        // Python's float() accepts surrounding whitespace.
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{at}.Rating `{s}` is neither a number nor \"N/A\"")),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!(
            "{at}.Rating must be a string or number, got {other}"
        )),
        None => Err(format!("{at} has no `Rating`")),
    }
}

fn parse_completion(c: &Value, k: usize) -> Result<Completion, String> {
    let at = format!("completions[{k}]: ");
    let response = string_field(c, "response", &at)?;
    let system = string_field(c, "custom_system_prompt", &at)?;
    let anns = c
        .get("annotations")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{at}missing object field `annotations`"))?;
    let mut annotations = BTreeMap::new();
    for (name, a) in anns {
        let at = format!("completions[{k}].annotations.{name}");
        let rating = parse_rating(a.get("Rating"), &at)?;
        let rationale = match a.get("Rationale") {
            None => None,
            Some(Value::String(r)) => Some(match a.get("Rationale For Rating") {
                Some(Value::String(x)) => format!("{r} {x}"),
                None => r.clone(),
                Some(other) => {
                    return Err(format!(
                        "{at}.Rationale For Rating must be a string, got {other}"
                    ))
                }
            }),
            Some(other) => return Err(format!("{at}.Rationale must be a string, got {other}")),
        };
        annotations.insert(name.clone(), Annotation { rating, rationale });
    }
    Ok(Completion {
        response,
        system,
        annotations,
    })
}

/// Completion indices, best first (d.5): by mean rating descending, ties by response
/// length in code points (longer first), full ties in input order (the seed's stable
/// `sorted(reverse=True)`). A completion with no numeric rating (`None`) has a NaN mean
/// in the seed and an undefined place; here such completions come last, among
/// themselves by length.
pub fn rank(means: &[Option<f64>], lengths: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..means.len()).collect();
    idx.sort_by(|&a, &b| {
        let by_mean = match (means[a], means[b]) {
            (Some(x), Some(y)) => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_mean.then(lengths[b].cmp(&lengths[a]))
    });
    idx
}

impl UfRow {
    /// Parses one JSONL row; the error names the missing or malformed field.
    pub fn from_row(row: &Value) -> Result<Self, String> {
        let instruction = string_field(row, "instruction", "")?;
        let completions = row
            .get("completions")
            .and_then(Value::as_array)
            .ok_or("missing array field `completions`")?
            .iter()
            .enumerate()
            .map(|(k, c)| parse_completion(c, k))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            instruction,
            completions,
        })
    }

    /// Mean of the numeric ratings of completion `k` over all its principles; `None`
    /// when every rating is `"N/A"` (or NaN).
    pub fn mean_rating(&self, k: usize) -> Option<f64> {
        let r: Vec<f64> = self.completions[k]
            .annotations
            .values()
            .filter_map(|a| a.rating)
            .collect();
        let m = r.iter().sum::<f64>() / r.len() as f64;
        (!r.is_empty() && !m.is_nan()).then_some(m)
    }

    /// The common ranking (see [`rank`]).
    pub fn rank(&self) -> Vec<usize> {
        let means: Vec<Option<f64>> = (0..self.completions.len())
            .map(|k| self.mean_rating(k))
            .collect();
        let lengths: Vec<usize> = self
            .completions
            .iter()
            .map(|c| c.response.chars().count())
            .collect();
        rank(&means, &lengths)
    }

    /// The pair (chosen, rejected) of a judgment without rationales (d.7): the best
    /// response against one uniformly drawn response with a strictly lower mean.
    pub fn best_pair(&self, rng: &mut StdRng) -> Option<(usize, usize)> {
        let rank = self.rank();
        let best = *rank.first()?;
        let top = self.mean_rating(best)?;
        let worse: Vec<usize> = rank[1..]
            .iter()
            .copied()
            .filter(|&j| self.mean_rating(j).is_some_and(|m| top > m))
            .collect();
        (!worse.is_empty()).then(|| (best, worse[rng.random_range(0..worse.len())]))
    }

    /// The pair (chosen, rejected) for `principle` with rationales (d.8): walking the
    /// ranking, the first response with any strict comparison under this principle
    /// (both rated, neither rationale containing `Text`) gives the candidates, one of
    /// which is drawn. A completion without this principle's annotation counts as N/A
    /// (the seed would misalign its per-principle lists). Errors when a rationale that
    /// the Text rule must read is missing.
    pub fn principle_pair(
        &self,
        principle: &str,
        rng: &mut StdRng,
    ) -> Result<Option<(usize, usize)>, String> {
        let ann: Vec<Option<&Annotation>> = self
            .completions
            .iter()
            .map(|c| c.annotations.get(principle))
            .collect();
        let rated = |k: usize| ann[k].and_then(|a| a.rating);
        let text_free = |k: usize| -> Result<bool, String> {
            match ann[k].and_then(|a| a.rationale.as_deref()) {
                Some(r) => Ok(!r.contains("Text")),
                None => Err(format!(
                    "completions[{k}].annotations.{principle} has no `Rationale`"
                )),
            }
        };
        for t in self.rank() {
            let mut candidates = Vec::new();
            // Every index, t itself included (equal ratings give nothing), as the seed.
            for c in 0..self.completions.len() {
                let (Some(rt), Some(rc)) = (rated(t), rated(c)) else {
                    continue;
                };
                let pair = if rt > rc {
                    (t, c)
                } else if rc > rt {
                    (c, t)
                } else {
                    continue;
                };
                if text_free(pair.0)? && text_free(pair.1)? {
                    candidates.push(pair);
                }
            }
            if !candidates.is_empty() {
                return Ok(Some(candidates[rng.random_range(0..candidates.len())]));
            }
        }
        Ok(None)
    }

    /// The rationale of completion `k` under `principle` (empty when absent).
    fn rationale(&self, k: usize, principle: &str) -> &str {
        self.completions[k]
            .annotations
            .get(principle)
            .and_then(|a| a.rationale.as_deref())
            .unwrap_or("")
    }
}

/// A judgment pair under one principle: (principle index, (chosen, rejected)).
type PrinciplePair = (usize, (usize, usize));

/// The generator for row `index` of a dataset built with `seed`: ChaCha keyed by both,
/// so each row's draws are independent of every other row and of processing order.
pub fn row_rng(seed: u64, index: usize) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    StdRng::from_seed(key)
}

impl JsftBuilder<'_> {
    /// The two rationale judgment examples of one principle (d.8): the continuation
    /// after the cue (`assistant + decision`) is ` A`/` B`, a newline, and both
    /// rationales introduced by the rationale template; it is learned, the EOS is not
    /// (the render is cut after the content, as the seed strips the EOS).
    pub fn rationale_judgments(
        &self,
        principle: usize,
        context: &str,
        (better, better_rationale): (&str, &str),
        (worse, worse_rationale): (&str, &str),
    ) -> anyhow::Result<Vec<Option<Example>>> {
        let template = self.rationale.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "rationale judgments need templates.decision_rationale.rationale (JsftBuilder::with_rationale)"
            )
        })?;
        let (head_a, head_b) = (
            format_rationale(template, "A")?,
            format_rationale(template, "B")?,
        );
        let p = &self.judge.principles[principle];
        let t = self.tokenizer;
        // The seed's marker is the decision text alone; the whole cue (which ends with
        // it) masks the same tokens but starts right after the role header, whereas
        // the decision's leading `\n` may merge with the cue's trailing `\n` in BPE
        // tokenizers and then never match.
        let cue = marker(t, &p.cue, self.skip_first_token)?;
        let mut out = Vec::with_capacity(2);
        for (a, ra, b, rb, letter) in [
            (better, better_rationale, worse, worse_rationale, " A"),
            (worse, worse_rationale, better, better_rationale, " B"),
        ] {
            let continuation = format!("{letter}\n{head_a} {ra}{head_b} {rb}");
            let messages = judgment_messages(p, context, a, b, &continuation);
            let text = self.chat.render_continue(
                &messages,
                t.bos_token.as_deref(),
                t.eos_token.as_deref(),
            )?;
            out.push(self.after_cue(&text, &cue)?);
        }
        Ok(out)
    }

    /// The (principle, (chosen, rejected)) pairs of a row in principle order, and how
    /// many principles (or, without rationales, rows) had no pair.
    fn uf_pairs(
        &self,
        uf: &UfRow,
        rng: &mut StdRng,
    ) -> Result<(Vec<PrinciplePair>, usize), String> {
        let n = self.judge.principles.len();
        if self.judge.decision.is_none() {
            // One pair for the row, judged under every principle (the seed has `base`).
            return Ok(match uf.best_pair(rng) {
                Some(pair) => ((0..n).map(|p| (p, pair)).collect(), 0),
                None => (vec![], 1),
            });
        }
        let mut pairs = Vec::new();
        for (p, cp) in self.judge.principles.iter().enumerate() {
            if let Some(pair) = uf.principle_pair(&cp.principle.name, rng)? {
                pairs.push((p, pair));
            }
        }
        let missing = n - pairs.len();
        Ok((pairs, missing))
    }

    /// All examples of UltraFeedback rows: per row, SFT on the best response with its
    /// system prompt (d.6), then judgments: with a decision text in the judge template,
    /// per principle with rationales (d.8); otherwise one sampled pair judged under
    /// every principle (d.7). `seed` is the config seed; rows are numbered by their
    /// position in `rows`, so pass the whole dataset.
    pub fn uf(
        &self,
        rows: &[Value],
        seed: u64,
        stats: &mut BuildStats,
    ) -> anyhow::Result<Vec<Example>> {
        let with_rationale = self.judge.decision.is_some();
        anyhow::ensure!(
            !with_rationale || self.rationale.is_some(),
            "templates.decision_rationale has a decision but the builder has no rationale template"
        );
        let mut out = Vec::new();
        let mut push = |e: Option<Example>, stats: &mut BuildStats, sft: bool| match e {
            Some(e) => {
                if sft {
                    stats.sft += 1
                } else {
                    stats.judgments += 1
                }
                out.push(e);
            }
            None => stats.unmaskable += 1,
        };
        for (i, row) in rows.iter().enumerate() {
            stats.rows += 1;
            let uf = match UfRow::from_row(row) {
                Ok(r) => r,
                Err(e) => {
                    stats.bad_row(i, e);
                    continue;
                }
            };
            if uf.completions.is_empty() {
                stats.empty_rows += 1;
                continue;
            }
            let mut rng = row_rng(seed, i);
            // Pairs before any example, so a row with a missing rationale is rejected
            // whole instead of half-built.
            let (pairs, missing) = match self.uf_pairs(&uf, &mut rng) {
                Ok(x) => x,
                Err(e) => {
                    stats.bad_row(i, e);
                    continue;
                }
            };
            stats.no_pair += missing;
            let best = &uf.completions[uf.rank()[0]];
            let sft = [
                ChatMessage::new("system", best.system.clone()),
                ChatMessage::new("user", uf.instruction.clone()),
                ChatMessage::new("assistant", best.response.clone()),
            ];
            if self.role.sft() {
                push(self.sft(&sft)?, stats, true);
            }
            let pairs = if self.role.judgments() {
                pairs
            } else {
                Vec::new()
            };
            for (p, (ch, rj)) in pairs {
                let (c, r) = (&uf.completions[ch].response, &uf.completions[rj].response);
                let examples = if with_rationale {
                    let name = &self.judge.principles[p].principle.name;
                    self.rationale_judgments(
                        p,
                        &uf.instruction,
                        (c, uf.rationale(ch, name)),
                        (r, uf.rationale(rj, name)),
                    )?
                } else {
                    self.judgments(p, &uf.instruction, c, r)?
                };
                for e in examples {
                    push(e, stats, false);
                }
            }
        }
        Ok(out)
    }
}
