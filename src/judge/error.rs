//! The judge's error type.

use self_judge_model::ModelError;

/// Errors of judging.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// A config or template that cannot be used; raised at start-up.
    #[error("bad judge config: {0}")]
    Config(String),
    /// A request that cannot be judged.
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A prompt longer than the limit while truncation is disabled.
    #[error("{0}")]
    TooLong(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Through [`ModelError`], so a tokenizer failure reads the same wherever it surfaces.
impl From<self_judge_tokenizer::TokenizerError> for JudgeError {
    fn from(e: self_judge_tokenizer::TokenizerError) -> Self {
        Self::Model(e.into())
    }
}
