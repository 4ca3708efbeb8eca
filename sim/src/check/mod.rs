//! History checkers used by the simulation and the end-to-end tests.

pub mod linearizability;

pub use linearizability::{check_history, Input, Operation, Output, Violation};
