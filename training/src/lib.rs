//! Training for self-judge checkpoints: the inference decoder made trainable, losses,
//! the AdamW optimizer and schedules, checkpoint writing, and `training init`.
//! `training jsft` (full fine-tuning on HH-format data) is in [`jsft`]; LoRA, UltraFeedback,
//! resume and self-judge DPO are not implemented yet.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod init;
pub mod jsft;
pub mod loss;
pub mod model;
pub mod optim;
