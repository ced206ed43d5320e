//! What a service call can fail with, by what the caller did wrong (or not).

use self_judge_engine::EngineError;
use self_judge_judge::JudgeError;
use self_judge_model::ModelError;
use self_judge_tokenizer::TokenizerError;

/// Errors of [`crate::JudgeService`]. Transports map them to their own shapes (HTTP
/// status and JSON error, an exit status...).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is well-formed but not valid (an empty list, `n` out of range...).
    #[error("{0}")]
    Invalid(String),
    /// The request could never be served within the limits.
    #[error("{0}")]
    TooLarge(String),
    /// The request names an adapter the server does not serve.
    #[error("{0}")]
    UnknownAdapter(String),
    /// The server is at capacity now; the same request may succeed later.
    #[error("{0}")]
    Overloaded(String),
    #[error(transparent)]
    Judge(#[from] JudgeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A blocking task (tokenization) that did not finish.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ModelError> for ServiceError {
    fn from(e: ModelError) -> Self {
        Self::Judge(e.into())
    }
}

impl From<TokenizerError> for ServiceError {
    fn from(e: TokenizerError) -> Self {
        Self::Judge(e.into())
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("a tokenization task failed: {e}"))
    }
}

/// Results of the service.
pub type Result<T> = std::result::Result<T, ServiceError>;
