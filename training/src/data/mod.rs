//! Training data: label masking and dataset parsers.

pub mod hh;
pub mod jsft;
pub mod mask;
