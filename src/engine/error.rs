//! Why the engine could not serve a command.

/// Why the engine could not serve a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the model failed: {0}")]
    Forward(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the engine has stopped")]
    Stopped,
}
