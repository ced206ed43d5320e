//! The decoder shared by the server and the training binary: one implementation of the
//! Llama family (Llama, SmolLM2, Mistral, Qwen2) with a packed variable-length forward.

pub mod adapter;
pub mod attention;
pub mod batch;
pub mod config;
pub mod decoder;
pub mod device;
pub mod flash;
pub mod fused;
pub mod gguf;
pub mod kv;
pub mod linear;
pub mod loader;
pub mod rope;
pub mod weights;

pub use adapter::LoraAdapter;
pub use batch::PackedBatch;
pub use config::{ModelConfig, RopeScaling};
pub use decoder::{AttentionPath, Decoder, OpsMode, Output};
pub use device::{default_dtype, device_name, parse_device};
pub use kv::KvCache;
pub use loader::{LoadOptions, LoadedModel, WeightFormat};

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
