//! Wires the driver (core and key-value service), storage, transport and client connections
//! together on tokio.

mod background;
mod backup;
mod connection;
mod http;
mod http_kv;
mod join;
mod log_writer;
pub mod metrics;
mod node;
mod node_metrics;
mod repair;
pub mod restore;

pub use connection::NodeRequest;
pub use node::NodeError;

use crate::config::{raft_config, NodeConfig, ReplicationLimits};
use crate::driver::{Driver, DriverConfig, DriverError, SnapshotPolicy};
use crate::kv::KvStore;
use crate::rpc::types::NodeId;
use crate::storage::{Storage, StorageError};
use log_writer::LogWriter;
use node::NodeLoop;
use raftd_core::{Founding, Raft};
use raftd_transport::{client_handler, ClientConn, Transport, TransportConfig};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid Raft settings: {0}")]
    Raft(#[from] raftd_core::ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("cannot start the log writer thread: {0}")]
    Writer(String),
    #[error("{0}")]
    Join(String),
    #[error("--force-new-cluster: the data dir {0} is empty, so there is nothing to recover from; start the node without it")]
    NothingToRecover(std::path::PathBuf),
    #[error("--repair: cannot move the damaged data dir {} aside: {source}", .dir.display())]
    Repair {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl From<NodeError> for ServerError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Storage(e) => ServerError::Storage(e),
            NodeError::Driver(e) => ServerError::Driver(e),
        }
    }
}

/// Runs a node until `shutdown` resolves (Ok) or storage fails (Err).
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let mut rc = raft_config(&cfg)?;
    let timing = cfg.timing()?;
    // Certificates and secret first: a node that cannot authenticate must not touch its data.
    let security = cfg.security.load(cfg.id)?;
    let mut cfg = cfg;
    let (storage, recovered) = match tokio::task::block_in_place(|| {
        Storage::open(&cfg.data_dir, cfg.id)
    }) {
        Err(e @ StorageError::Corrupt { .. }) if cfg.repair => {
            let aside = repair::move_aside(&cfg.data_dir, &e)?;
            ::log::warn!(
                "node {}: --repair: moved the damaged data dir to {}; rejoining the cluster with an empty one (the leader catches this node up and re-admits it)",
                cfg.id,
                aside.display()
            );
            // Never found a cluster from an empty dir: join the members the command line names.
            cfg.join = cfg.peers.values().copied().collect();
            tokio::task::block_in_place(|| Storage::open(&cfg.data_dir, cfg.id))?
        }
        other => other?,
    };
    let mut recovered = recovered;
    let store = match &mut recovered.snapshot {
        Some(snap) => {
            let store = KvStore::from_snapshot(snap).map_err(|e| StorageError::Corrupt {
                path: cfg.data_dir.join(crate::storage::SNAPSHOT_FILE_NAME),
                offset: 0,
                reason: format!("the snapshot does not decode as a key-value store: {e}"),
            })?;
            // The configuration at the snapshot's index is part of the state it holds.
            snap.membership = store.membership().clone();
            store
        }
        None => KvStore::default(),
    };
    let fresh = recovered.snapshot.is_none() && recovered.entries.is_empty();
    rc.incarnation = storage.incarnation();
    rc.addrs = cfg
        .members()
        .iter()
        .map(|(id, a)| (*id, a.to_string()))
        .collect();
    rc.founding = if fresh && !cfg.join.is_empty() {
        Founding::Join
    } else {
        Founding::Unanimous
    };
    if !fresh && !cfg.join.is_empty() {
        ::log::info!(
            "node {}: the data dir already belongs to a cluster; --join is ignored",
            cfg.id
        );
    }
    if cfg.force_new_cluster && fresh {
        return Err(ServerError::NothingToRecover(cfg.data_dir.clone()));
    }
    ::log::info!(
        "node {}: data dir incarnation {:x}",
        cfg.id,
        storage.incarnation()
    );
    ::log::info!(
        "node {}: core RNG seed {} (election timeouts follow from it)",
        cfg.id,
        rc.seed
    );
    // Bound before waiting to join, so the leader's first connections wait in the backlog.
    let listener = bind(cfg.listen).map_err(|source| ServerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    tokio::pin!(shutdown);
    let mut members = cfg.members();
    if rc.founding == Founding::Join {
        let stop = CancellationToken::new();
        let joined = tokio::select! {
            _ = &mut shutdown => None,
            j = join::wait_to_be_added(&cfg, &stop) => j.map_err(ServerError::Join)?,
        };
        let Some(joined) = joined else {
            return Ok(());
        };
        members = joined;
        rc.voters = members.keys().copied().collect();
    }
    let raft = Raft::restore(
        rc,
        recovered.hard_state,
        recovered.snapshot,
        recovered.entries,
    )?;
    ::log::info!(
        "node {}: listening on {} with peers {:?}, data in {}",
        cfg.id,
        cfg.listen,
        cfg.peers,
        cfg.data_dir.display()
    );

    log_security(&cfg);

    let cancel = CancellationToken::new();
    let (req_tx, req_rx) = mpsc::channel(1024);
    let handler = {
        let cancel = cancel.clone();
        client_handler(move |conn: ClientConn| {
            connection::serve(conn, req_tx.clone(), cancel.clone())
        })
    };
    let fallback: BTreeMap<NodeId, String> =
        members.iter().map(|(id, a)| (*id, a.to_string())).collect();
    let mut driver = Driver::new(
        raft,
        store,
        fallback,
        DriverConfig {
            snapshots: SnapshotPolicy {
                entries: cfg.snapshot_entries,
                bytes: cfg.snapshot_bytes,
                log_percent: cfg.snapshot_log_percent,
            },
            max_command_bytes: ReplicationLimits::for_frame(cfg.max_frame_bytes).max_command_bytes,
            tick_ms: timing.tick_ms,
            auto_compact_revisions: cfg.auto_compact_revisions,
            ..DriverConfig::default()
        },
    );
    if cfg.force_new_cluster {
        let at = driver.force_new_cluster();
        ::log::warn!(
            "node {}: --force-new-cluster: a new configuration with this node as its only voter is at index {at}; add the other members back with `raftctl member add` (with empty data dirs)",
            cfg.id
        );
    }
    // Whom to talk to: the driver's peers (the configurations in the log), else (a node
    // waiting to be founded or caught up) the command line's or the joined cluster's members.
    let peers: std::collections::HashMap<NodeId, std::net::SocketAddr> = driver
        .peer_addrs()
        .into_iter()
        .filter_map(|(id, a)| {
            a.parse()
                .ok()
                .or_else(|| members.get(&id).copied())
                .map(|a| (id, a))
        })
        .collect();
    let mut tcfg = TransportConfig::new(
        cfg.id,
        peers.into_iter().filter(|(id, _)| *id != cfg.id).collect(),
    );
    tcfg.max_frame_bytes = cfg.max_frame_bytes;
    tcfg.oversized_first_frame_reply = Some(connection::too_large_reply());
    tcfg.plaintext_on_tls_reply = Some(connection::tls_required_reply());
    tcfg.security = security;
    let (transport, events) = Transport::start(tcfg, listener, handler);

    let metrics = std::sync::Arc::new(metrics::Metrics::new());
    let http_tls = security_for_http(&cfg)?;
    let http_listener = match cfg.http_listen {
        Some(addr) => Some(bind(addr).map_err(|source| ServerError::Listen { addr, source })?),
        None => None,
    };
    let (hashes_tx, hashes_rx) = tokio::sync::mpsc::unbounded_channel();
    let node = NodeLoop {
        metrics: node_metrics::NodeMetrics::new(metrics.clone()),
        ticks: 0,
        snapshot_started: None,
        last_turn: Default::default(),
        snapshot_held: None,
        driver,
        wal: LogWriter::start(storage, cfg.id, metrics.clone())
            .map_err(|e| ServerError::Writer(e.to_string()))?,
        data_dir: cfg.data_dir.clone(),
        transport,
        events,
        requests: req_rx,
        members,
        tick: Duration::from_millis(timing.tick_ms),
        // Time for the successor to win its election (it starts at once, so one round trip
        // and an fsync suffice; this is an upper bound).
        handover: if cfg.no_handover {
            Duration::ZERO
        } else {
            Duration::from_millis(cfg.election_timeout_ms.1 * 2)
        },
        snapshot_job: None,
        hashes_tx,
        hashes_rx,
        prepared: None,
    };
    let node_cancel = cancel.clone();
    let node_task = tokio::spawn(node.run(node_cancel));
    if let (Some(listener), Some(addr)) = (http_listener, cfg.http_listen) {
        let (server_tls, client_tls) = http_tls;
        let ctx = std::sync::Arc::new(http::HttpContext::new(
            metrics.clone(),
            cfg.listen,
            crate::client::ClientOptions {
                tls: client_tls,
                max_frame_bytes: cfg.max_frame_bytes,
                ..crate::client::ClientOptions::default()
            },
            cfg.max_frame_bytes,
        ));
        ::log::info!(
            "node {}: serving HTTP on {addr} ({}): /metrics, /livez, /readyz, /v1/kv/KEY, /v1/txn, /v1/watch/KEY",
            cfg.id,
            if server_tls.is_some() { "TLS" } else { "plain" }
        );
        tokio::spawn(http::serve(listener, server_tls, ctx, cancel.clone()));
    }
    tokio::pin!(node_task);
    tokio::select! {
        _ = &mut shutdown => {
            cancel.cancel();
            match node_task.await {
                Ok(result) => result?,
                Err(e) => ::log::error!("node {}: node task failed: {e}", cfg.id),
            }
        }
        result = &mut node_task => {
            cancel.cancel();
            match result {
                Ok(r) => r?,
                Err(e) => ::log::error!("node {}: node task failed: {e}", cfg.id),
            }
        }
    }
    Ok(())
}

/// One line at start saying how peers and clients are authenticated; a warning when peers are not.
fn log_security(cfg: &NodeConfig) {
    let sec = &cfg.security;
    let peers = match (&sec.tls, &sec.cluster_secret_file) {
        (Some(_), Some(_)) => "TLS certificates and the cluster secret",
        (Some(_), None) => "TLS certificates",
        (None, Some(_)) => "the cluster secret",
        (None, None) => {
            if sec.insecure {
                ::log::warn!(
                    "node {}: INSECURE (--insecure): peers are not authenticated and traffic is not encrypted; anyone who can reach {} can act as a member, move terms and read or change data",
                    cfg.id,
                    cfg.listen
                );
            } else {
                ::log::warn!(
                    "node {}: peers are not authenticated (no --cluster-secret-file or --tls-*): any process on this machine can act as a member",
                    cfg.id
                );
            }
            return;
        }
    };
    let clients = match &sec.tls {
        Some(_) if sec.client_cert_auth => "TLS with a client certificate",
        Some(_) => "TLS",
        None => "plaintext",
    };
    ::log::info!(
        "node {}: peers authenticated by {peers}; clients use {clients}",
        cfg.id
    );
}

/// Binds with a listen backlog of 1024 (the default is 128), so a burst of connections waits in
/// the kernel rather than being refused.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The HTTP port's TLS when the node has TLS: the node's own server side, and a client side
/// (the node's CA, and its certificate as the client identity) for the requests the HTTP port
/// makes of the node's client port.
type HttpTls = (
    Option<tokio_rustls::TlsAcceptor>,
    Option<std::sync::Arc<rustls::ClientConfig>>,
);

fn security_for_http(cfg: &NodeConfig) -> Result<HttpTls, ServerError> {
    let Some(files) = &cfg.security.tls else {
        return Ok((None, None));
    };
    let node = raftd_transport::NodeTls::load(files, cfg.id, cfg.security.client_cert_auth)
        .map_err(|e| ServerError::Config(crate::config::SecurityError::from(e).into()))?;
    let client = crate::client::tls_config(&files.ca, Some((&files.cert, &files.key)))
        .map_err(|e| ServerError::Config(crate::config::SecurityError::from(e).into()))?;
    Ok((
        Some(tokio_rustls::TlsAcceptor::from(node.server_config())),
        Some(client),
    ))
}
