//! `training self-judge` (SPEC §5): the current policy samples two responses per query,
//! the reference judges them with the judge core, and the policy takes a DPO step on
//! the judged pair. Outputs, checkpoints and `--resume` work as for JSFT.

pub mod dpo;
pub mod loss;
pub mod onpolicy;
mod run;

pub use dpo::{dpo_batch, merge_stats};
pub use run::{run, train};
