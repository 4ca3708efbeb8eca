//! Watches: every node streams the changes of a key, range or prefix from its own applied
//! state, in revision order, each exactly once.
//!
//! A watch is set up in one step between two applies: the history from its start revision up
//! to the store's revision is sent at once (from the keyspace's revision index), and from then
//! on every change the store applies is matched against it as it is applied. Nothing can fall
//! between the two, because both happen on the driver's thread with no apply in between. A
//! snapshot installed from the leader replaces the store: each watch then catches up from the
//! new store's history, or ends with `Compacted` if that history no longer reaches back to it.
//!
//! Memory: the hub holds no events. What a slow reader has not read yet sits in its
//! connection's queue, and the shell cancels a watch whose connection has too much queued
//! (`WatchCancelled`), so the client resumes from its last revision + 1 instead of growing
//! the node.

use super::Output;
use crate::kv::mvcc::{Event, KeyRange, RevisionError};
use crate::kv::KvStore;
use crate::rpc::types::{ClientResponse, ErrorCode, ErrorResponse, WatchEvents};
use std::collections::{BTreeMap, HashMap};

/// A reply token that says which connection it answers on: a watch is named by its id within
/// its connection, and ends with it.
pub trait ReplyTo: Clone {
    fn connection(&self) -> u64;
}

impl ReplyTo for u32 {
    fn connection(&self) -> u64 {
        u64::from(*self)
    }
}

/// Most watches one node serves at once.
pub const MAX_WATCHES: usize = 100_000;

/// Most events, and about the most bytes, in one `Events` answer.
const MAX_EVENTS_PER_ANSWER: usize = 1000;
const MAX_BYTES_PER_ANSWER: usize = 1 << 20;

struct Watch<R> {
    reply: R,
    range: KeyRange,
    /// The first revision this watch has not been sent yet.
    next: u64,
    /// The hub's tick of the last answer sent to it.
    last_sent: u64,
}

pub struct WatchHub<R> {
    /// (connection, watch id) -> the watch.
    watches: BTreeMap<(u64, u64), Watch<R>>,
    ticks: u64,
    progress_ticks: u64,
}

pub type WatchAnswer<R> = (R, ClientResponse);

impl<R: ReplyTo> WatchHub<R> {
    pub fn new(progress_ticks: u64) -> WatchHub<R> {
        WatchHub {
            watches: BTreeMap::new(),
            ticks: 0,
            progress_ticks: progress_ticks.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Sets up watch `id` on `reply`'s connection: answers `Watching`, then the history from
    /// `start` (None or 0: from the next change) up to now.
    pub fn watch(
        &mut self,
        store: &mut KvStore,
        id: u64,
        range: KeyRange,
        start: Option<u64>,
        reply: R,
        output: &mut Output<R>,
    ) {
        let out = &mut output.answers;
        let key = (reply.connection(), id);
        let revision = store.revision();
        if self.watches.contains_key(&key) {
            out.push((
                reply,
                ClientResponse::error(
                    Some(id),
                    ErrorCode::BadRequest,
                    format!("watch {id} already runs on this connection; use another id"),
                ),
            ));
            return;
        }
        if self.watches.len() >= MAX_WATCHES {
            out.push((
                reply,
                ClientResponse::error(
                    Some(id),
                    ErrorCode::BadRequest,
                    format!("this node serves {MAX_WATCHES} watches already; watch at another node or combine watches by prefix"),
                ),
            ));
            return;
        }
        let start = match start {
            Some(s) if s > 0 => s,
            _ => revision + 1,
        };
        let history = if start <= revision {
            match store.mvcc().events_since(&range, start, 0) {
                Ok(events) => events,
                Err(RevisionError::Compacted { compact_revision })
                | Err(RevisionError::Future {
                    revision: compact_revision,
                }) => {
                    out.push((reply, compacted(id, compact_revision)));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        out.push((reply.clone(), ClientResponse::Watching { id, revision }));
        send_events(&reply, id, history, revision, &mut output.watch_events);
        // The watch is caught up to `revision`.
        self.watches.insert(
            key,
            Watch {
                reply,
                range,
                next: start.max(revision + 1),
                last_sent: self.ticks,
            },
        );
        store.set_record_events(true);
    }

    /// Ends watch `watch_id` of `reply`'s connection (answered `Ok` whether it ran or not, so a
    /// cancel can be retried).
    pub fn cancel(&mut self, store: &mut KvStore, connection: u64, watch_id: u64) -> bool {
        let gone = self.watches.remove(&(connection, watch_id)).is_some();
        if self.watches.is_empty() {
            store.set_record_events(false);
        }
        gone
    }

    /// A connection closed: its watches end.
    pub fn connection_closed(&mut self, store: &mut KvStore, connection: u64) {
        self.watches.retain(|(c, _), _| *c != connection);
        if self.watches.is_empty() {
            store.set_record_events(false);
        }
    }

    /// Sends every watch the events of `events` (just applied, in revision order) it covers.
    /// Watches of the same range share their answers' events (one copy, one encoding).
    pub fn deliver(&mut self, events: &[Event], revision: u64, out: &mut Vec<WatchAnswer<R>>) {
        if events.is_empty() {
            return;
        }
        let first = events[0].mod_revision;
        let mut by_range: HashMap<&KeyRange, Vec<WatchEvents>> = HashMap::new();
        for ((_, id), w) in self.watches.iter_mut() {
            let chunks = if w.next <= first {
                // The common case: the watch wants all of them.
                by_range
                    .entry(&w.range)
                    .or_insert_with(|| {
                        chunk(
                            events
                                .iter()
                                .filter(|e| w.range.contains(&e.key))
                                .cloned()
                                .collect(),
                        )
                    })
                    .clone()
            } else {
                chunk(
                    events
                        .iter()
                        .filter(|e| e.mod_revision >= w.next && w.range.contains(&e.key))
                        .cloned()
                        .collect(),
                )
            };
            if !chunks.is_empty() {
                for events in chunks {
                    out.push((
                        w.reply.clone(),
                        ClientResponse::Events {
                            id: *id,
                            events,
                            revision,
                        },
                    ));
                }
                w.last_sent = self.ticks;
            }
            w.next = w.next.max(revision + 1);
        }
    }

    /// The store was replaced by a snapshot: every watch catches up from its history.
    pub fn restored(&mut self, store: &mut KvStore, out: &mut Vec<WatchAnswer<R>>) {
        let revision = store.revision();
        let mut ended = Vec::new();
        for (key, w) in self.watches.iter_mut() {
            if w.next > revision {
                continue;
            }
            match store.mvcc().events_since(&w.range, w.next, 0) {
                Ok(events) => {
                    send_events(&w.reply, key.1, events, revision, out);
                    w.next = revision + 1;
                    w.last_sent = self.ticks;
                }
                Err(RevisionError::Compacted { compact_revision })
                | Err(RevisionError::Future {
                    revision: compact_revision,
                }) => {
                    out.push((w.reply.clone(), compacted(key.1, compact_revision)));
                    ended.push(*key);
                }
            }
        }
        for key in ended {
            self.watches.remove(&key);
        }
        store.set_record_events(!self.watches.is_empty());
    }

    /// One tick: a watch that was sent nothing for the progress interval gets an empty
    /// `Events` with the store's revision, so its client knows how far it is caught up.
    pub fn tick(&mut self, revision: u64, out: &mut Vec<WatchAnswer<R>>) {
        self.ticks += 1;
        for ((_, id), w) in self.watches.iter_mut() {
            if self.ticks - w.last_sent >= self.progress_ticks {
                out.push((
                    w.reply.clone(),
                    ClientResponse::Events {
                        id: *id,
                        events: WatchEvents::new(Vec::new()),
                        revision,
                    },
                ));
                w.last_sent = self.ticks;
            }
        }
    }

    /// Ends a watch whose reader is too slow (the shell saw its connection's queue grow past
    /// its bound): it is told `WatchCancelled`, and resumes from its last revision + 1.
    pub fn cancel_slow(
        &mut self,
        store: &mut KvStore,
        connection: u64,
        watch_id: u64,
    ) -> Option<WatchAnswer<R>> {
        let w = self.watches.remove(&(connection, watch_id))?;
        if self.watches.is_empty() {
            store.set_record_events(false);
        }
        Some((
            w.reply,
            ClientResponse::error(
                Some(watch_id),
                ErrorCode::WatchCancelled,
                format!(
                    "the watch's reader fell too far behind; watch again from revision {} (the last revision you saw + 1)",
                    w.next
                ),
            ),
        ))
    }

    /// The node is stopping: every watch ends with `WatchCancelled`.
    pub fn shutdown(&mut self, out: &mut Vec<WatchAnswer<R>>) {
        for ((_, id), w) in std::mem::take(&mut self.watches) {
            out.push((
                w.reply,
                ClientResponse::error(
                    Some(id),
                    ErrorCode::WatchCancelled,
                    "node is stopping; watch again at another node from the last revision you saw + 1",
                ),
            ));
        }
    }
}

/// Sends `events` as one or more `Events` answers, none much over a megabyte.
fn send_events<R: Clone>(
    reply: &R,
    id: u64,
    events: Vec<Event>,
    revision: u64,
    out: &mut Vec<WatchAnswer<R>>,
) {
    for events in chunk(events) {
        out.push((
            reply.clone(),
            ClientResponse::Events {
                id,
                events,
                revision,
            },
        ));
    }
}

/// Cuts `events` into answers of at most `MAX_EVENTS_PER_ANSWER` events and about
/// `MAX_BYTES_PER_ANSWER` bytes (none if there are no events).
fn chunk(events: Vec<Event>) -> Vec<WatchEvents> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for e in events {
        let size = 96 + e.key.len() + e.value.as_ref().map_or(0, String::len);
        if !current.is_empty()
            && (current.len() >= MAX_EVENTS_PER_ANSWER || bytes + size > MAX_BYTES_PER_ANSWER)
        {
            chunks.push(WatchEvents::new(std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes += size;
        current.push(e);
    }
    if !current.is_empty() {
        chunks.push(WatchEvents::new(current));
    }
    chunks
}

fn compacted(id: u64, compact_revision: u64) -> ClientResponse {
    ClientResponse::Error(ErrorResponse {
        id: Some(id),
        code: ErrorCode::Compacted,
        message: format!(
            "the watch's start revision was compacted: history starts at revision {compact_revision}; read the range again and watch from the revision of that read + 1"
        ),
        leader_id: None,
        leader_addr: None,
        compact_revision: Some(compact_revision),
    })
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
