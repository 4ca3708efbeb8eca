//! What the end-to-end tests of `tests/` share: real `raftd` processes on 127.0.0.1
//! ([`process`]), fault-injecting TCP proxies on peer links ([`proxy`]), and a nemesis that
//! drives faults and recording clients against them ([`nemesis`]).
//!
//! A library of its own (not a module each test file includes) so that every test binary uses
//! the one copy, and what a given test does not use is not dead code in it.

pub mod http;
pub mod nemesis;
pub mod process;
pub mod proxy;

/// The linearizability checker the nemesis histories go through (the simulation's own).
pub use raftd_sim::check;

/// The tokio runtime the end-to-end tests drive their clients on: two workers, like the
/// machine's two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
