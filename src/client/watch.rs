//! A watch that survives its node: it reconnects (to any node) and resumes from the last
//! revision it delivered + 1, so its caller sees every change once, in revision order.

use super::{ClientError, ClientOptions, Connection};
use crate::kv::mvcc::{Event, KeyRange};
use crate::rpc::types::{ClientRequest, ClientResponse, ErrorCode};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// One change, in revision order.
    Change(Event),
    /// Everything up to this revision has been delivered (a progress notification).
    Progress(u64),
}

/// A watch on a key, range or prefix; see the module comment.
pub struct Watcher {
    nodes: Vec<SocketAddr>,
    opts: ClientOptions,
    range: KeyRange,
    key: String,
    end: Option<String>,
    prefix: bool,
    /// The next revision to ask for when (re)connecting (0: from now).
    next: u64,
    /// The key of the last change delivered at revision `next`, when the events of that
    /// revision may have been split between answers: after a reconnect they are asked for
    /// again, and those up to this key dropped.
    partial: Option<(u64, String)>,
    target: usize,
    conn: Option<Connection>,
    watch_id: u64,
    ready: VecDeque<WatchEvent>,
}

/// How long a watch waits to hear anything (an event or progress, sent about once a second)
/// before it takes the node for gone and moves to another.
const SILENCE: Duration = Duration::from_secs(5);

impl Watcher {
    /// A watch of `key` (with `end` or `prefix`, as in `Range`) from `start_revision` (None:
    /// from the next change). Nothing is sent until the first `next`.
    pub fn new(
        nodes: Vec<SocketAddr>,
        opts: ClientOptions,
        key: &str,
        end: Option<&str>,
        prefix: bool,
        start_revision: Option<u64>,
    ) -> Result<Watcher, ClientError> {
        let range = KeyRange::from_fields(key.to_string(), end.map(str::to_string), prefix)
            .map_err(|e| ClientError::BadRequest(e.to_string()))?;
        Ok(Watcher {
            nodes,
            opts,
            range,
            key: key.to_string(),
            end: end.map(str::to_string),
            prefix,
            next: start_revision.unwrap_or(0),
            partial: None,
            target: 0,
            conn: None,
            watch_id: 1,
            ready: VecDeque::new(),
        })
    }

    /// The revision the watch resumes from after a reconnect (0: "from now", before it first
    /// connected).
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// The next change or progress notification. Reconnects as needed until the client's
    /// deadline passes without any node answering; fails for good on `Compacted` (the history
    /// it needs is gone: read the range again and watch from that read's revision + 1).
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(ev);
            }
            if self.conn.is_none() {
                if let Err(e) = self.connect().await {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.opts.deadline {
                        return Err(e);
                    }
                    self.target = (self.target + 1) % self.nodes.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match tokio::time::timeout(SILENCE, conn.recv()).await {
                Ok(Ok(resp)) => {
                    failing_since = None;
                    self.on_message(resp)?;
                }
                Ok(Err(_)) | Err(_) => {
                    // The node is gone or silent: resume elsewhere from `next`.
                    self.conn = None;
                    self.target = (self.target + 1) % self.nodes.len();
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let addr = self.nodes[self.target % self.nodes.len()];
        let mut conn = super::open(addr, &self.opts).await?;
        self.watch_id += 1;
        let req = ClientRequest::Watch {
            id: self.watch_id,
            key: self.key.clone(),
            end: self.end.clone(),
            prefix: self.prefix,
            start_revision: match &self.partial {
                Some((rev, _)) => Some(*rev),
                None => (self.next > 0).then_some(self.next),
            },
        };
        conn.send(&req).await.map_err(|e| {
            ClientError::Unavailable(self.opts.connect_timeout, format!("{addr}: {e}"))
        })?;
        self.conn = Some(conn);
        Ok(())
    }

    fn on_message(&mut self, resp: ClientResponse) -> Result<(), ClientError> {
        match resp {
            // "From now": what this node had applied is the start.
            ClientResponse::Watching { id, revision } if id == self.watch_id && self.next == 0 => {
                self.next = revision + 1;
            }
            ClientResponse::Events {
                id,
                events,
                revision,
            } if id == self.watch_id => {
                if events.is_empty() {
                    // Everything up to `revision` has been sent.
                    if revision + 1 > self.next {
                        self.next = revision + 1;
                        self.partial = None;
                    }
                    self.ready.push_back(WatchEvent::Progress(revision));
                }
                for e in events.into_vec() {
                    // A node never sends a change twice; after a reconnect it starts at
                    // `next`, or at the revision it may have been cut off in, whose changes up
                    // to the last key seen are dropped here.
                    let seen = match &self.partial {
                        Some((r, k)) if e.mod_revision == *r => e.key <= *k,
                        _ => e.mod_revision < self.next,
                    };
                    if seen || !self.range.contains(&e.key) {
                        continue;
                    }
                    // More changes of this revision may follow in the next answer (they come
                    // in key order): until a later revision shows up, a resume asks for this
                    // one again.
                    self.next = e.mod_revision + 1;
                    self.partial = Some((e.mod_revision, e.key.clone()));
                    self.ready.push_back(WatchEvent::Change(e));
                }
            }
            ClientResponse::Error(e) if e.id == Some(self.watch_id) => match e.code {
                ErrorCode::Compacted => {
                    return Err(ClientError::Compacted {
                        compact_revision: e.compact_revision.unwrap_or(0),
                    })
                }
                ErrorCode::BadRequest | ErrorCode::TooLarge => {
                    return Err(ClientError::BadRequest(e.message))
                }
                // WatchCancelled (slow reader, node stopping) and anything else: resume.
                _ => {
                    self.conn = None;
                    self.target = (self.target + 1) % self.nodes.len();
                }
            },
            _ => {}
        }
        Ok(())
    }
}
