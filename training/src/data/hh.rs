//! Anthropic HH-RLHF rows (`chosen`, `rejected` transcripts) as conversations, judge
//! contexts and JSFT examples (SPEC §4).

use self_judge_judge::hh_context;
use self_judge_tokenizer::ChatMessage;

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

/// Splits a transcript into turns. A turn starts at `\n\nHuman:` or `\n\nAssistant:`
/// when the role changes (consecutive same-role markers stay in one turn); text before
/// the first marker is dropped; every `Human:` / `Assistant:` inside a turn is removed
/// and the turn trimmed; trailing turns after the last assistant turn are dropped.
pub fn parse_transcript(text: &str, system: &str) -> Option<Vec<ChatMessage>> {
    let mut marks: Vec<(usize, bool)> = Vec::new(); // (byte offset, is_user)
    for (m, is_user) in [(HUMAN, true), (ASSISTANT, false)] {
        marks.extend(text.match_indices(m).map(|(i, _)| (i, is_user)));
    }
    marks.sort();
    let mut turns: Vec<(bool, usize)> = Vec::new();
    for (pos, is_user) in marks {
        if turns.last().map(|t| t.0) != Some(is_user) {
            turns.push((is_user, pos));
        }
    }
    let mut messages = vec![ChatMessage::new("system", system)];
    for (k, &(is_user, start)) in turns.iter().enumerate() {
        let end = turns.get(k + 1).map_or(text.len(), |t| t.1);
        let content = text[start..end]
            .replace("Human:", "")
            .replace("Assistant:", "");
        messages.push(ChatMessage::new(
            if is_user { "user" } else { "assistant" },
            content.trim(),
        ));
    }
    while messages.last().is_some_and(|m| m.role != "assistant") {
        messages.pop();
    }
    (messages.len() > 1).then_some(messages)
}

/// The judge context of a conversation: every turn before the last one, in the HH
/// style the server also uses ([`self_judge_judge::hh_context`]).
pub fn context(messages: &[ChatMessage]) -> String {
    hh_context(&messages[..messages.len().saturating_sub(1)])
}

/// A parsed preference row.
#[derive(Debug, Clone, PartialEq)]
pub struct HhPair {
    pub chosen: Vec<ChatMessage>,
    pub rejected: Vec<ChatMessage>,
    pub context: String,
}

impl HhPair {
    /// Parses one JSONL row `{"chosen": ..., "rejected": ...}`.
    pub fn from_row(row: &serde_json::Value, system: &str) -> Result<Self, String> {
        let field = |k: &str| {
            row.get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("missing string field `{k}`"))
        };
        let chosen =
            parse_transcript(field("chosen")?, system).ok_or("`chosen` has no assistant turn")?;
        let rejected = parse_transcript(field("rejected")?, system)
            .ok_or("`rejected` has no assistant turn")?;
        let context = context(&chosen);
        Ok(Self {
            chosen,
            rejected,
            context,
        })
    }

    /// The final assistant answers (chosen, rejected).
    pub fn answers(&self) -> (&str, &str) {
        fn last(m: &[ChatMessage]) -> &str {
            m.last().map(|x| x.content.as_str()).unwrap_or("")
        }
        (last(&self.chosen), last(&self.rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_turns_and_context() {
        let t = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See ya";
        let m = parse_transcript(t, "S").unwrap();
        let got: Vec<(&str, &str)> = m
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("system", "S"),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Bye"),
                ("assistant", "See ya")
            ]
        );
        assert_eq!(context(&m), "User: Hi\n\nAssistant: Hello!\n\nUser: Bye");
    }

    #[test]
    fn merges_same_role_turns_and_drops_trailing_user_turns() {
        let t =
            "preamble\n\nHuman: a\n\nHuman: b\n\nAssistant: c says Human: hi\n\nHuman: dangling";
        let m = parse_transcript(t, "S").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].content, "a\n\n b");
        assert_eq!(m[2].content, "c says  hi");
        assert!(parse_transcript("\n\nHuman: only a question", "S").is_none());
    }
}
