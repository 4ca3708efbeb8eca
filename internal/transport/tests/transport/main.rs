//! The transport's integration tests on real TCP (127.0.0.1), in one test binary that shares
//! one copy of the helpers (`common.rs`).

mod bad_input;
mod common;
mod exchange;
mod security;
