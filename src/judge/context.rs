//! The judge's view of a conversation: the seed's HH style (SPEC §4), shared by the
//! server's best-of-n contexts and the training data so a judge sees at serving time the
//! context format it was trained on.

use self_judge_tokenizer::ChatMessage;

/// `turns` as `User: ...` / `Assistant: ...` joined by blank lines. System turns (and
/// roles HH transcripts do not have) are left out; the result is trimmed.
pub fn hh_context(turns: &[ChatMessage]) -> String {
    turns
        .iter()
        .filter_map(|m| match m.role.as_str() {
            "user" => Some(format!("User: {}", m.content)),
            "assistant" => Some(format!("Assistant: {}", m.content)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n\n")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_in_hh_style_without_system() {
        let m = [
            ChatMessage::new("system", "S"),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ];
        assert_eq!(hh_context(&m), "User: Hi\n\nAssistant: Hello!\n\nUser: Bye");
        assert_eq!(hh_context(&m[..1]), "");
    }
}
