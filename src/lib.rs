//! raftd: a Raft consensus daemon and the replicated key-value store on top of it.
//!
//! * [`driver`]: the I/O-free layer that runs the Raft core (the `raftd-core` crate) and the
//!   key-value service, for the daemon and the simulation alike.
//! * [`kv`]: the replicated key-value state machine and the service that answers clients.
//! * [`storage`]: the durable log and snapshot files.
//! * [`server`]: the daemon on tokio (node loop, log writer, client connections).
//! * [`client`]: the client library raftctl and the tests use.
//! * [`rpc`]: every message type that crosses a process boundary.
//!
//! The simulation, the linearizability checker and the bug switches live in the `raftd-sim`
//! crate, which this one does not depend on.

pub mod client;
pub mod config;
pub mod driver;
pub mod kv;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod varint;
