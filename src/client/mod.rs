//! An async client for raftd's client protocol (docs/CLIENT_PROTOCOL.md).
//!
//! A [`Client`] finds the leader by itself (following `NotLeader` hints, trying each node in
//! turn otherwise) and retries a write after a timeout or a lost connection with the same
//! `client_id`/`seq`, so the cluster applies it at most once. One request is in flight per
//! `Client`; use several for concurrency.

mod backup;
mod conn;
pub mod store;
mod watch;

pub use backup::BackupInfo;
pub use conn::Connection;
pub use watch::{WatchEvent, Watcher};

use crate::rpc::types::{
    ClientRequest, ClientResponse, Consistency, ErrorCode, ErrorResponse, MemberStatus, NodeId,
    OkResponse, StatusResponse,
};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no node of the cluster answered within {0:?} (tried {1}); are the nodes running?")]
    Unavailable(Duration, String),
    #[error("the cluster rejected the request: {0}")]
    BadRequest(String),
    #[error("request too large: {0}")]
    TooLarge(String),
    #[error("refused as unsafe: {0}")]
    Unsafe(String),
    /// The outcome of the write is unknown: it is older than what the cluster remembers of
    /// this client, so nothing was applied now, and it may or may not have been before.
    #[error("outcome unknown, the client's session expired: {0}")]
    SessionExpired(String),
    /// The revision asked for is older than the history kept.
    #[error("revision compacted: history starts at revision {compact_revision}")]
    Compacted { compact_revision: u64 },
    #[error("{0}")]
    LeaseNotFound(String),
    /// A watch was ended by the node (a reader too slow, or the node stopping).
    #[error("watch cancelled: {0}")]
    WatchCancelled(String),
    /// The backup could not be written where it was asked to go (nothing is left under its
    /// name).
    #[error("backup file: {0}")]
    BackupFile(String),
    #[error("unexpected answer from {addr}: {what}")]
    Protocol { addr: SocketAddr, what: String },
}

/// A client's TLS settings from PEM files: the CA that signed the nodes' certificates and, for
/// nodes with `--client-cert-auth`, this client's certificate and key.
pub fn tls_config(
    cacert: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, raftd_transport::security::tls::TlsError> {
    raftd_transport::security::tls::client_config(cacert, identity)
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Give up on a request after this long (all retries included).
    pub deadline: Duration,
    /// Wait this long for one answer before trying again.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_frame_bytes: usize,
    /// TLS to the nodes (see [`tls_config`]); `None` for plaintext.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_millis(500),
            max_frame_bytes: 16 << 20,
            tls: None,
        }
    }
}

pub struct Client {
    nodes: Vec<SocketAddr>,
    opts: ClientOptions,
    client_id: String,
    seq: u64,
    next_id: u64,
    /// Index into `nodes` of the node believed to lead.
    target: usize,
    /// Round-robin cursor into `nodes`, apart from hints: a client that gets no hint (or only
    /// stale ones) goes through every node in turn, rather than back and forth between two
    /// that point at each other (a removed node still running hints its stale leader).
    rr: usize,
    conn: Option<Connection>,
}

/// The last failure seen at each node, for the error message.
#[derive(Default)]
struct Tried(std::collections::BTreeMap<SocketAddr, String>);

impl Tried {
    fn note(&mut self, addr: SocketAddr, what: String) {
        self.0.insert(addr, what);
    }

    fn summary(&self) -> String {
        if self.0.is_empty() {
            return "no node".into();
        }
        self.0
            .iter()
            .map(|(a, w)| format!("{a}: {w}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a write or read needs from one attempt.
enum Attempt {
    /// An answer that is not an error (`Ok`, or the first answer of a stream).
    Done(Box<ClientResponse>),
    Fatal(ClientError),
    /// Not the leader, and it named another node: try that one at once (a leader change is
    /// under way, and the sooner the request reaches the new leader, the shorter the stall).
    Redirect,
    Retry,
}

/// A connection to `addr` with the client's settings.
async fn open(addr: SocketAddr, opts: &ClientOptions) -> Result<Connection, ClientError> {
    Connection::open(
        addr,
        opts.connect_timeout,
        opts.max_frame_bytes,
        opts.tls.as_ref(),
    )
    .await
    .map_err(|e| ClientError::Unavailable(opts.connect_timeout, format!("{addr}: {e}")))
}

impl Client {
    pub fn new(nodes: Vec<SocketAddr>, opts: ClientOptions) -> Client {
        let client_id = format!("c{:016x}", rand::random::<u64>());
        Client {
            nodes,
            opts,
            client_id,
            seq: 0,
            next_id: 1,
            target: 0,
            rr: 0,
            conn: None,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        let seq = self.next_seq();
        let (client_id, key, value) = (
            Some(self.client_id.clone()),
            key.to_string(),
            value.to_string(),
        );
        self.call(move |id| ClientRequest::Put {
            id,
            key: key.clone(),
            value: value.clone(),
            lease: 0,
            client_id: client_id.clone(),
            seq: Some(seq),
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&mut self, key: &str) -> Result<(), ClientError> {
        let seq = self.next_seq();
        let (client_id, key) = (Some(self.client_id.clone()), key.to_string());
        self.call(move |id| ClientRequest::Delete {
            id,
            key: key.clone(),
            client_id: client_id.clone(),
            seq: Some(seq),
        })
        .await
        .map(|_| ())
    }

    /// Returns whether it succeeded and the value after the request.
    pub async fn cas(
        &mut self,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<(bool, Option<String>), ClientError> {
        let seq = self.next_seq();
        let client_id = Some(self.client_id.clone());
        let (key, expected, value) = (
            key.to_string(),
            expected.map(str::to_string),
            value.map(str::to_string),
        );
        let ok = self
            .call(move |id| ClientRequest::Cas {
                id,
                key: key.clone(),
                expected: expected.clone(),
                value: value.clone(),
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok((ok.succeeded.unwrap_or(false), ok.value.flatten()))
    }

    pub async fn get(
        &mut self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<String>, ClientError> {
        let key = key.to_string();
        let ok = self
            .call(move |id| ClientRequest::Get {
                id,
                key: key.clone(),
                consistency,
            })
            .await?;
        Ok(ok.value.flatten())
    }

    /// Every member, as the leader reports it.
    pub async fn member_list(&mut self) -> Result<Vec<MemberStatus>, ClientError> {
        let ok = self.call(|id| ClientRequest::MemberList { id }).await?;
        Ok(ok.members.unwrap_or_default())
    }

    /// Adds node `node_id` listening at `addr`: as a learner, or (by default) as a voter that
    /// the leader promotes once it has caught up. Returns the members once it is committed.
    pub async fn member_add(
        &mut self,
        node_id: NodeId,
        addr: &str,
        learner: bool,
        force: bool,
    ) -> Result<Vec<MemberStatus>, ClientError> {
        let addr = addr.to_string();
        let ok = self
            .call(move |id| ClientRequest::MemberAdd {
                id,
                node_id,
                addr: addr.clone(),
                learner,
                force,
            })
            .await?;
        Ok(ok.members.unwrap_or_default())
    }

    pub async fn member_promote(
        &mut self,
        node_id: NodeId,
        force: bool,
    ) -> Result<Vec<MemberStatus>, ClientError> {
        let ok = self
            .call(move |id| ClientRequest::MemberPromote { id, node_id, force })
            .await?;
        Ok(ok.members.unwrap_or_default())
    }

    pub async fn member_remove(
        &mut self,
        node_id: NodeId,
        force: bool,
    ) -> Result<Vec<MemberStatus>, ClientError> {
        let ok = self
            .call(move |id| ClientRequest::MemberRemove { id, node_id, force })
            .await?;
        Ok(ok.members.unwrap_or_default())
    }

    /// Hands leadership to `node_id` (default: the most up-to-date voter); returns who leads.
    pub async fn transfer_leader(
        &mut self,
        node_id: Option<NodeId>,
    ) -> Result<NodeId, ClientError> {
        let ok = self
            .call(move |id| ClientRequest::TransferLeader { id, node_id })
            .await?;
        Ok(ok.leader_id.unwrap_or_default())
    }

    /// Asks one node for its status (no leader needed).
    pub async fn status_of(&mut self, addr: SocketAddr) -> Result<StatusResponse, ClientError> {
        let id = self.fresh_id();
        let mut conn = open(addr, &self.opts).await?;
        match conn
            .request(&ClientRequest::Status { id }, self.opts.attempt_timeout)
            .await
        {
            Ok(ClientResponse::Status(s)) => Ok(s),
            Ok(ClientResponse::Error(e)) => Err(ClientError::BadRequest(e.message)),
            Ok(other) => Err(ClientError::Protocol {
                addr,
                what: format!("{other:?}"),
            }),
            Err(e) => Err(ClientError::Unavailable(
                self.opts.attempt_timeout,
                format!("{addr}: {e}"),
            )),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next node in turn (apart from hints).
    fn next_in_turn(&mut self) -> usize {
        self.rr = (self.rr + 1) % self.nodes.len();
        if self.rr == self.target && self.nodes.len() > 1 {
            self.rr = (self.rr + 1) % self.nodes.len();
        }
        self.rr
    }

    /// Sends the request built by `make` (with a fresh request id per attempt) until it
    /// succeeds, fails for good, or the deadline passes.
    async fn call(
        &mut self,
        make: impl Fn(u64) -> ClientRequest,
    ) -> Result<OkResponse, ClientError> {
        match self.call_raw(make).await? {
            ClientResponse::Ok(ok) => Ok(ok),
            other => Err(ClientError::Protocol {
                addr: self.nodes[self.target % self.nodes.len()],
                what: format!("an answer of another kind to a key-value request: {other:?}"),
            }),
        }
    }

    /// `call`, for any answer that is not an error (the first answer of a stream, whose
    /// remainder is read from `self.conn`).
    async fn call_raw(
        &mut self,
        make: impl Fn(u64) -> ClientRequest,
    ) -> Result<ClientResponse, ClientError> {
        let deadline = Instant::now() + self.opts.deadline;
        let mut tried = Tried::default();
        let mut backoff = Duration::from_millis(10);
        // Redirects in a row: two nodes naming each other (a transfer's target before it has
        // won, and the old leader) must not be asked in a tight loop.
        let mut redirects = 0;
        while Instant::now() < deadline {
            let id = self.fresh_id();
            let req = make(id);
            match self.attempt(&req, &mut tried).await {
                Attempt::Done(ok) => return Ok(*ok),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Redirect if redirects < 3 => {
                    redirects += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Attempt::Retry | Attempt::Redirect => {
                    if redirects >= 3 {
                        // Hints followed three times in a row and still no leader: they may be
                        // stale (removed nodes naming each other); the next node in turn.
                        self.target = self.next_in_turn();
                    }
                    redirects = 0;
                    tokio::time::sleep(
                        backoff.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
        Err(ClientError::Unavailable(
            self.opts.deadline,
            tried.summary(),
        ))
    }

    async fn attempt(&mut self, req: &ClientRequest, tried: &mut Tried) -> Attempt {
        let addr = self.nodes[self.target % self.nodes.len()];
        if self.conn.as_ref().map(|c| c.addr()) != Some(addr) {
            match Connection::open(
                addr,
                self.opts.connect_timeout,
                self.opts.max_frame_bytes,
                self.opts.tls.as_ref(),
            )
            .await
            {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    tried.note(addr, e.to_string());
                    self.conn = None;
                    self.target = self.next_in_turn();
                    return Attempt::Retry;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Attempt::Retry;
        };
        let resp = match conn.request(req, self.opts.attempt_timeout).await {
            Ok(resp) => resp,
            Err(e) => {
                // Lost connection or no answer in time: the outcome is unknown, so retry with
                // the same client_id/seq (at the next node).
                tried.note(addr, e.to_string());
                self.conn = None;
                self.target = self.next_in_turn();
                return Attempt::Retry;
            }
        };
        match resp {
            ClientResponse::Error(err) => {
                if err.id.is_none() {
                    // The node refused the frame and is closing the connection.
                    self.conn = None;
                }
                self.on_error(addr, err, tried)
            }
            other => Attempt::Done(Box::new(other)),
        }
    }

    fn on_error(&mut self, addr: SocketAddr, err: ErrorResponse, tried: &mut Tried) -> Attempt {
        match err.code {
            ErrorCode::NotLeader => {
                let hinted = err
                    .leader_addr
                    .flatten()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .map(|a| match self.nodes.iter().position(|n| *n == a) {
                        Some(i) => i,
                        // A member the client was not told about (the cluster grew).
                        None => {
                            self.nodes.push(a);
                            self.nodes.len() - 1
                        }
                    });
                tried.note(addr, "not the leader".into());
                let redirect = hinted.is_some_and(|h| h != self.target);
                self.target = match hinted {
                    Some(h) => h,
                    None => self.next_in_turn(),
                };
                if redirect {
                    Attempt::Redirect
                } else {
                    Attempt::Retry
                }
            }
            ErrorCode::Timeout | ErrorCode::ShuttingDown => {
                tried.note(addr, err.message.clone());
                if err.code == ErrorCode::ShuttingDown {
                    self.conn = None;
                    self.target = self.next_in_turn();
                }
                Attempt::Retry
            }
            ErrorCode::Busy => {
                // Another change is in progress (or a new leader has not committed yet).
                tried.note(addr, err.message.clone());
                Attempt::Retry
            }
            ErrorCode::NoSpace => {
                // Nothing was written. A leader with a full disk hands leadership over, so
                // another node may take the write.
                tried.note(addr, err.message.clone());
                self.target = self.next_in_turn();
                Attempt::Retry
            }
            ErrorCode::SessionExpired => Attempt::Fatal(ClientError::SessionExpired(err.message)),
            ErrorCode::Unsafe => Attempt::Fatal(ClientError::Unsafe(err.message)),
            ErrorCode::BadRequest => Attempt::Fatal(ClientError::BadRequest(err.message)),
            ErrorCode::TooLarge => Attempt::Fatal(ClientError::TooLarge(err.message)),
            ErrorCode::Compacted => Attempt::Fatal(ClientError::Compacted {
                compact_revision: err.compact_revision.unwrap_or(0),
            }),
            ErrorCode::LeaseNotFound => Attempt::Fatal(ClientError::LeaseNotFound(err.message)),
            ErrorCode::WatchCancelled => Attempt::Fatal(ClientError::WatchCancelled(err.message)),
        }
    }
}
