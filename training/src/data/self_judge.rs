//! Prompts for self-judge training (SPEC §5, seed `construct_*_self_judge_dataset`):
//! per row the `query` the policy continues, the judge `context`, and the dataset's own
//! `chosen` / `rejected` conversations (full rendered strings, used only for eval).

use self_judge_tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};
use serde_json::Value;

use super::hh::HhPair;
use super::jsft::BuildStats;
use super::uf::UfRow;

/// One self-judge training prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfJudgeRow {
    /// The conversation so far, rendered with the generation prompt.
    pub query: String,
    /// Plain text the judge sees as `{context}`.
    pub context: String,
    /// The full preferred conversation, rendered (ends with the EOS string).
    pub chosen: String,
    /// The full dispreferred conversation, rendered.
    pub rejected: String,
}

/// Renders with the tokenizer's BOS/EOS strings, as `apply_chat_template` does.
fn render(
    chat: &ChatTemplate,
    tok: &TextTokenizer,
    messages: &[ChatMessage],
    generation_prompt: bool,
) -> anyhow::Result<String> {
    Ok(chat.render(
        messages,
        generation_prompt,
        tok.bos_token.as_deref(),
        tok.eos_token.as_deref(),
    )?)
}

impl SelfJudgeRow {
    /// An HH pair: query = the chosen conversation without its last assistant turn;
    /// context = the judge context of the chosen conversation; chosen/rejected = each
    /// conversation rendered whole (the rejected one keeps its own earlier turns).
    pub fn from_hh(
        pair: &HhPair,
        chat: &ChatTemplate,
        tok: &TextTokenizer,
    ) -> anyhow::Result<Self> {
        let prompt = &pair.chosen[..pair.chosen.len() - 1];
        Ok(Self {
            query: render(chat, tok, prompt, true)?,
            context: pair.context.clone(),
            chosen: render(chat, tok, &pair.chosen, false)?,
            rejected: render(chat, tok, &pair.rejected, false)?,
        })
    }

    /// An UltraFeedback row with at least one completion: the prompt is the best
    /// response's system prompt and the instruction; chosen/rejected end with the best
    /// and the worst ranked response (the same one when there is only one).
    pub fn from_uf(row: &UfRow, chat: &ChatTemplate, tok: &TextTokenizer) -> anyhow::Result<Self> {
        let rank = row.rank();
        let (Some(&best), Some(&worst)) = (rank.first(), rank.last()) else {
            anyhow::bail!("`completions` is empty");
        };
        let mut messages = vec![
            ChatMessage::new("system", row.completions[best].system.clone()),
            ChatMessage::new("user", row.instruction.clone()),
        ];
        let query = render(chat, tok, &messages, true)?;
        let mut ending = |k: usize| {
            messages.truncate(2);
            messages.push(ChatMessage::new(
                "assistant",
                row.completions[k].response.clone(),
            ));
            render(chat, tok, &messages, false)
        };
        Ok(Self {
            query,
            context: row.instruction.clone(),
            chosen: ending(best)?,
            rejected: ending(worst)?,
        })
    }

    /// A row already in self-judge form (`query`, `context`, `chosen`, `rejected`, all
    /// required, as the seed's collator requires them); the error names the field.
    pub fn from_json(row: &Value) -> Result<Self, String> {
        let field = |k: &str| {
            row.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("missing string field `{k}`"))
        };
        Ok(Self {
            query: field("query")?,
            context: field("context")?,
            chosen: field("chosen")?,
            rejected: field("rejected")?,
        })
    }
}

/// Self-judge rows of HH-RLHF rows (`system` is the conversation system prompt, the
/// first judge principle's system text in the seed). Unparseable rows are counted in
/// `stats` (with the first error, naming the row and field) and skipped.
pub fn hh_rows(
    rows: &[Value],
    system: &str,
    chat: &ChatTemplate,
    tok: &TextTokenizer,
    stats: &mut BuildStats,
) -> anyhow::Result<Vec<SelfJudgeRow>> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        stats.rows += 1;
        match HhPair::from_row(row, system) {
            Ok(pair) => out.push(SelfJudgeRow::from_hh(&pair, chat, tok)?),
            Err(e) => stats.bad_row(i, e),
        }
    }
    Ok(out)
}

/// Self-judge rows of UltraFeedback rows. Rows without completions are skipped (as the
/// seed does) and counted in `stats.empty_rows`; unparseable rows in `stats.bad_rows`.
pub fn uf_rows(
    rows: &[Value],
    chat: &ChatTemplate,
    tok: &TextTokenizer,
    stats: &mut BuildStats,
) -> anyhow::Result<Vec<SelfJudgeRow>> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        stats.rows += 1;
        match UfRow::from_row(row) {
            Ok(r) if r.completions.is_empty() => stats.empty_rows += 1,
            Ok(r) => out.push(SelfJudgeRow::from_uf(&r, chat, tok)?),
            Err(e) => stats.bad_row(i, e),
        }
    }
    Ok(out)
}

/// Rows already in self-judge form; unparseable rows are counted and skipped.
pub fn json_rows(rows: &[Value], stats: &mut BuildStats) -> Vec<SelfJudgeRow> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        stats.rows += 1;
        match SelfJudgeRow::from_json(row) {
            Ok(r) => out.push(r),
            Err(e) => stats.bad_row(i, e),
        }
    }
    out
}
