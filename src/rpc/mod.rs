//! Wire types shared by every layer.
pub mod types;
