//! The tokenizer's error type; the model layer turns it into its own
//! (`ModelError::Tokenizer` / `ModelError::Input`), with the same messages.

/// Errors of building a tokenizer or chat template, and of rendering or encoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer or chat template could not be built.
    #[error("bad tokenizer: {0}")]
    Build(String),
    /// A conversation or text the tokenizer cannot take.
    #[error("invalid input: {0}")]
    Input(String),
}
