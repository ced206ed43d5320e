//! Training for self-judge checkpoints: the inference decoder made trainable, losses,
//! the AdamW optimizer and schedules, checkpoint writing, and `training init`.
//! (Judge-augmented SFT and self-judge DPO build on these.)

pub mod checkpoint;
pub mod data;
pub mod init;
pub mod loss;
pub mod model;
pub mod optim;
