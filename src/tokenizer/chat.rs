//! HF-compatible chat templates rendered with minijinja.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::error::TokenizerError;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        Self::new(&self.source).expect("template compiled once already")
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source` with the settings transformers uses (trim_blocks,
    /// lstrip_blocks, Python string methods, `raise_exception`).
    pub fn new(source: &str) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TokenizerError::Build(format!("chat template does not compile: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
        })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant cue.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, TokenizerError> {
        let tmpl = self
            .env
            .get_template("chat")
            .expect("template was added in new");
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(|e| TokenizerError::Input(format!("chat template failed: {e}")))
    }

    /// Renders a conversation whose last message is a partial assistant turn and cuts
    /// the text right after that turn's content, so the model continues it
    /// (transformers' `continue_final_message`). Templates that append an end-of-turn
    /// marker after the EOS (ChatML's `<|im_end|>\n`) are handled as well as ones that
    /// end with the bare EOS.
    pub fn render_continue(
        &self,
        messages: &[ChatMessage],
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, TokenizerError> {
        let last = messages
            .last()
            .ok_or_else(|| TokenizerError::Input("no messages to render".into()))?;
        let rendered = self.render(messages, false, bos_token, eos_token)?;
        // Prefer the content exactly as given (keeps trailing whitespace the seed
        // keeps); fall back to the trimmed content for templates that trim it.
        let cut = |needle: &str| rendered.rfind(needle).map(|i| i + needle.len());
        let end = if last.content.is_empty() {
            // An empty cue: cut before the end-of-turn marker, i.e. drop the EOS suffix.
            eos_token
                .filter(|e| !e.is_empty())
                .and_then(|e| rendered.rfind(e))
        } else {
            cut(&last.content).or_else(|| cut(last.content.trim()))
        };
        match end {
            Some(e) => Ok(rendered[..e].to_string()),
            None => Err(TokenizerError::Input(
                "the chat template dropped the final assistant message".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let s = t
            .render(
                &[ChatMessage::new("user", "Hi")],
                true,
                None,
                Some("<|im_end|>"),
            )
            .unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn continue_cuts_after_cue() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let msgs = [
            ChatMessage::new("user", "Which?"),
            ChatMessage::new("assistant", "Answer: Response"),
        ];
        let s = t.render_continue(&msgs, None, Some("<|im_end|>")).unwrap();
        assert_eq!(
            s,
            "<|im_start|>user\nWhich?<|im_end|>\n<|im_start|>assistant\nAnswer: Response"
        );
    }

    #[test]
    fn raise_exception_and_python_methods_work() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip() }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", " x ")], false, None, None)
                .unwrap(),
            "x"
        );
        let e = t
            .render(&[ChatMessage::new("system", "x")], false, None, None)
            .unwrap_err();
        assert!(e.to_string().contains("first must be user"), "{e}");
    }

    #[test]
    fn bad_template_is_refused() {
        assert!(ChatTemplate::new("{% for %}").is_err());
    }
}
