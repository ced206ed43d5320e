//! Training data: label masking and dataset parsers.

pub mod hh;
pub mod jsft;
pub mod mask;
pub mod self_judge;
pub mod uf;
