//! Watchers in the simulation: each holds one watch stream at a time to some node, as the
//! client library's `Watcher` does over TCP. A stream delivers in order or breaks: it breaks
//! when its node crashes, when the node answers with an error other than `Compacted`, and at
//! random (a connection reset). After a break the watcher resumes at a random live node from
//! the revision it may have been cut off in, dropping what it already has (the library's
//! rule). `check_watchers` compares what each watcher delivered with the history every node
//! applied: in order, no gaps, no duplicates.
//!
//! Watchers draw from a random generator of their own, so adding them changes no other
//! random choice of a seed.

use super::{Cluster, Event, Input, MS};
use crate::clients::Route;
use raftd::kv::mvcc::{Event as KvEvent, KeyRange};
use raftd::kv::KvStore;
use raftd::rpc::types::{ClientRequest, ClientResponse, ErrorCode, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Route clients of watchers start here (far from the key-value clients' ids).
pub const WATCHER_BASE: usize = usize::MAX / 2;

#[derive(Debug, Clone)]
pub struct SimWatcher {
    pub prefix: String,
    /// The revision of the first change it must see (known once the first stream answers).
    pub start: Option<u64>,
    /// Node and stream number of the stream it holds (None: between streams).
    pub stream: Option<(NodeId, usize)>,
    pub streams_opened: usize,
    /// The next revision to ask for, and the key of the last change delivered at `next - 1`
    /// while that revision may continue in the next answer.
    next: u64,
    partial: Option<(u64, String)>,
    /// What it delivered, in order.
    pub events: Vec<KvEvent>,
    /// Its history was compacted away while it was between streams: it stopped there.
    pub compacted: bool,
}

#[derive(Default)]
pub(super) struct Watchers {
    pub(super) list: Vec<SimWatcher>,
    rng: Option<StdRng>,
}

impl Cluster {
    /// Adds `n` watchers of the prefix, each watching from the next change of the node it
    /// first reaches.
    pub fn add_watchers(&mut self, n: usize, prefix: &str) {
        if self.watchers.rng.is_none() {
            self.watchers.rng = Some(StdRng::seed_from_u64(self.cfg.seed ^ 0x7761_7463_6865_7273));
        }
        for _ in 0..n {
            let w = self.watchers.list.len();
            self.watchers.list.push(SimWatcher {
                prefix: prefix.to_string(),
                start: None,
                stream: None,
                streams_opened: 0,
                next: 0,
                partial: None,
                events: Vec::new(),
                compacted: false,
            });
            self.schedule(MS, Event::WatcherTimer { watcher: w });
        }
    }

    pub fn watchers(&self) -> &[SimWatcher] {
        &self.watchers.list
    }

    fn watch_rng(&mut self) -> &mut StdRng {
        self.watchers
            .rng
            .get_or_insert_with(|| StdRng::seed_from_u64(0))
    }

    /// Opens a new stream for watcher `w` at a random live node.
    pub(super) fn watcher_timer(&mut self, w: usize) {
        if self.watchers.list[w].stream.is_some() || self.watchers.list[w].compacted {
            return;
        }
        let up: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&n| self.node(n).is_up())
            .collect();
        if up.is_empty() {
            self.schedule(20 * MS, Event::WatcherTimer { watcher: w });
            return;
        }
        let node = up[self.watch_rng().gen_range(0..up.len())];
        let wa = &mut self.watchers.list[w];
        wa.streams_opened += 1;
        let stream = wa.streams_opened;
        wa.stream = Some((node, stream));
        let start_revision = match &wa.partial {
            Some((rev, _)) => Some(*rev),
            None => (wa.next > 0).then_some(wa.next),
        };
        let req = ClientRequest::Watch {
            id: stream as u64,
            key: wa.prefix.clone(),
            end: None,
            prefix: true,
            start_revision,
        };
        let route = route(w, stream);
        self.input(node, Input::Client { route, req });
    }

    /// The stream of watcher `w` broke: the node forgets it, and the watcher resumes elsewhere
    /// a little later.
    fn break_stream(&mut self, w: usize) {
        let Some((node, stream)) = self.watchers.list[w].stream.take() else {
            return;
        };
        if let Some(driver) = self.driver_mut(node) {
            use raftd::driver::ReplyTo;
            driver.connection_closed(route(w, stream).connection());
        }
        let delay = self.watch_rng().gen_range(1..=50) * MS;
        self.schedule(delay, Event::WatcherTimer { watcher: w });
    }

    /// Node `id` crashed: the streams it served break.
    pub(super) fn watchers_node_down(&mut self, id: NodeId) {
        for w in 0..self.watchers.list.len() {
            if self.watchers.list[w].stream.map(|(n, _)| n) == Some(id) {
                self.watchers.list[w].stream = None;
                let delay = self.watch_rng().gen_range(1..=50) * MS;
                self.schedule(delay, Event::WatcherTimer { watcher: w });
            }
        }
    }

    /// A node sends a message on a watch stream. Delivered at once and in order, unless the
    /// stream is an old one, or breaks now (at the network's drop rate, and once in a while
    /// anyway, as connections do).
    pub(super) fn watch_answer(&mut self, node: NodeId, route: Route, resp: ClientResponse) {
        let w = route.client - WATCHER_BASE;
        if self.watchers.list[w].stream != Some((node, route.op)) {
            return;
        }
        let p = self.cfg.net.drop_rate.max(0.002);
        if self.watch_rng().gen_bool(p) {
            self.break_stream(w);
            return;
        }
        let wa = &mut self.watchers.list[w];
        match resp {
            ClientResponse::Watching { revision, .. } => {
                if wa.next == 0 {
                    wa.next = revision + 1;
                    wa.start = Some(revision + 1);
                }
            }
            ClientResponse::Events {
                events, revision, ..
            } => {
                if events.is_empty() && revision + 1 > wa.next && wa.next > 0 {
                    wa.next = revision + 1;
                    wa.partial = None;
                }
                for e in events.into_vec() {
                    let seen = match &wa.partial {
                        Some((r, k)) if e.mod_revision == *r => e.key <= *k,
                        _ => e.mod_revision < wa.next,
                    };
                    if seen {
                        continue;
                    }
                    wa.next = e.mod_revision + 1;
                    wa.partial = Some((e.mod_revision, e.key.clone()));
                    wa.events.push(e);
                }
            }
            ClientResponse::Error(e) if e.code == ErrorCode::Compacted => {
                wa.compacted = true;
                wa.stream = None;
            }
            _ => self.break_stream(w),
        }
    }

    /// Checks every watcher against the history the nodes applied: what it delivered is the
    /// history of its prefix from its start, in order, without a gap or a duplicate (a prefix
    /// of it, if it is behind). Returns the number of events checked.
    pub fn check_watchers(&self) -> Result<usize, String> {
        if self.watchers.list.is_empty() {
            return Ok(0);
        }
        // Every change, from the entries applied at each index (each index is applied first
        // by a node that applied the one before it, so they are all there from 1 on).
        let mut oracle = KvStore::default();
        oracle.set_record_events(true);
        let mut all = Vec::new();
        for (index, entry) in &self.applied_anywhere {
            if *index != oracle.applied() + 1 {
                break;
            }
            oracle.apply(entry);
            all.extend(oracle.take_events());
        }
        let mut checked = 0;
        for (i, w) in self.watchers.list.iter().enumerate() {
            let Some(start) = w.start else { continue };
            let range = KeyRange::Prefix(w.prefix.clone());
            let want: Vec<&KvEvent> = all
                .iter()
                .filter(|e| e.mod_revision >= start && range.contains(&e.key))
                .collect();
            let got: Vec<&KvEvent> = w.events.iter().collect();
            if got.len() > want.len() || got[..] != want[..got.len()] {
                let at = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len());
                return Err(format!(
                    "[seed {}] watcher {i} (from revision {start}, {} streams) delivered {} events that are not the history of its prefix: first difference at event {at}: got {:?}, want {:?}",
                    self.cfg.seed,
                    w.streams_opened,
                    got.len(),
                    got.get(at),
                    want.get(at)
                ));
            }
            checked += got.len();
        }
        Ok(checked)
    }
}

fn route(w: usize, stream: usize) -> Route {
    Route {
        client: WATCHER_BASE + w,
        op: stream,
        request_id: stream as u64,
    }
}
