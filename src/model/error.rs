//! The model's error type.

use self_judge_tokenizer::TokenizerError;

/// Errors raised while loading or running a model. Each message names the file, field
/// or limit at fault so that a start-up failure can be fixed without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A checkpoint's configuration is missing a field or describes something we do not
    /// implement.
    #[error("bad model config: {0}")]
    Config(String),
    /// A weight file is absent, unreadable, corrupt or has the wrong shape.
    #[error("bad weights: {0}")]
    Weights(String),
    /// The tokenizer or chat template could not be built.
    #[error("bad tokenizer: {0}")]
    Tokenizer(String),
    /// A request the model cannot serve (empty prompt, too long, bad token id).
    #[error("invalid input: {0}")]
    Input(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Result alias for model operations.
pub type Result<T> = std::result::Result<T, ModelError>;

impl From<TokenizerError> for ModelError {
    fn from(e: TokenizerError) -> Self {
        match e {
            TokenizerError::Build(m) => Self::Tokenizer(m),
            TokenizerError::Input(m) => Self::Input(m),
        }
    }
}
