//! SELF-JUDGE semantics (SPEC §1–3), independent of HTTP: templates, prompts, scores,
//! aggregation and tournaments. The server and the training binary call this code;
//! how prompts are executed is behind [`Scorer`].

pub mod config;
pub mod context;
pub mod error;
pub mod pair;
pub mod pairwise;
#[cfg(test)]
mod pairwise_tests;
pub mod prompt;
pub mod ranking;
pub mod template;
pub mod tournament;
pub mod verdict;

pub use config::JudgeConfig;
pub use context::hh_context;
pub use error::JudgeError;
pub use pair::Pair;
pub use pairwise::{Judge, JudgeOptions, Scorer};
pub use prompt::{Order, PromptBuilder};
pub use ranking::Placement;
pub use template::{JudgeTemplate, Principle};
pub use tournament::{run_tournament, Bracket, Match, Round, Tournament, TournamentResult};
pub use verdict::{OrderProbs, PrincipleVerdict, Side, Verdict};
