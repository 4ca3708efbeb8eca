//! raftd: a Raft consensus daemon and the replicated key-value store on top of it.
//!
//! * [`raft`]: the deterministic, I/O-free consensus core.
//! * [`rpc`]: every message type that crosses a process boundary.
//! * [`sim`]: a seeded, virtual-time simulation of a cluster, used by the tests and `raftsim`.
//! * [`bugs`]: classic Raft bugs behind cargo features, to prove the simulation catches them.

pub mod bugs;
pub mod check;
pub mod client;
pub mod config;
pub mod kv;
pub mod raft;
pub mod rpc;
pub mod server;
pub mod sim;
pub mod storage;
