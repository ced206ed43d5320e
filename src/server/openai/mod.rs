//! The OpenAI-compatible API under `/v1`: what applications that already speak to an
//! OpenAI-style server send, answered by the judge service (generation, and `best_of`
//! picked by self-judgment).

pub mod chat;
pub mod completions;
pub mod convert;
pub mod error;
pub mod routes;
pub mod schemas;
