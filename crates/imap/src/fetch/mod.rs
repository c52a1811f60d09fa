//! Building FETCH answers from what was stored at delivery: the parsed part tree with byte
//! offsets (BODYSTRUCTURE, sections) and the verified body bytes.

pub mod envelope;
pub mod section;
pub mod structure;
