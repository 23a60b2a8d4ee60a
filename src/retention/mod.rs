//! Retention: `forget` (keep policies over snapshot groups) and `prune`
//! (garbage collection of packs no snapshot needs).

pub mod forget;
pub mod policy;
pub mod prune;
