//! The decoder shared by the server and the training binary: one implementation of the
//! Llama family (Llama, SmolLM2, Mistral, Qwen2) with a packed variable-length forward.

pub mod adapter;
pub mod attention;
pub mod autograd;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod config_read;
pub mod decode_attention;
pub mod decoder;
pub mod device;
pub mod error;
pub mod flash;
pub mod fused;
pub mod gguf;
pub mod kv;
pub mod layer;
pub mod linear;
pub mod loader;
pub mod ops;
pub mod packed;
pub mod random;
pub mod rope;
pub mod skinny;
pub mod threads;
pub mod weights;

pub use adapter::LoraAdapter;
pub use batch::PackedBatch;
pub use config::{ModelConfig, RopeScaling};
pub use decoder::{AttentionPath, Decoder, Output};
pub use device::{default_dtype, device_name, parse_device};
pub use error::{ModelError, Result};
pub use kv::KvCache;
pub use loader::{LoadOptions, LoadedModel, ModelView, WeightFormat};
pub use ops::Pass;
pub use random::{seeded_randn, SeededNormal};
