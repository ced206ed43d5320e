//! Training for self-judge checkpoints: the inference decoder made trainable, losses,
//! the AdamW optimizer and schedules, checkpoint writing, and `training init`.
//! `training jsft` (all weights or LoRA, resumable) is in [`jsft`], `training self-judge`
//! (on-policy DPO with the reference as judge) in [`self_judge`].

pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod init;
pub mod jsft;
pub mod lora;
pub mod loss;
pub mod model;
pub mod optim;
pub mod outputs;
pub mod plot;
pub mod progress;
pub mod self_judge;
pub mod tensorboard;
pub mod trainer;
