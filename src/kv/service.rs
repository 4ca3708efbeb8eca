//! The key-value service of one node, with no I/O: it turns client requests into proposals and
//! read-index requests on the Raft core, and `Ready` batches into answers.
//!
//! The driver (`crate::driver`, which the daemon and the simulation both run) calls it:
//! 1. `request()` for each client request (some are answered at once);
//! 2. `flush_reads()` before taking `Ready`s, so every linearizable read received since the
//!    last call shares one ReadIndex round;
//! 3. `on_ready()` for each `Ready` as soon as it is taken (committed entries are applied
//!    whether or not this node's own copy is durable yet): it applies the committed entries and
//!    releases the reads whose index has been applied, returning the answers.
//!
//! Every pending request keeps the caller's reply token `R`; each answer comes back with it.
//!
//! A write is answered only after its entry is committed and applied. A linearizable read is
//! answered only after the leader confirmed, with a heartbeat round acknowledged by a majority,
//! that it still led after the read arrived, and after it applied everything committed when
//! the read arrived (Raft thesis §6.4). A leader that loses leadership answers everything
//! pending with `Timeout`.

use super::command::{Command, Op, Outcome, Refusal};
use super::lease_clock::LeaseClock;
use super::mvcc::{KeyRange, RangeOptions, RevisionError};
use super::store::KvStore;
use super::txn::Txn;
use crate::rpc::types::{
    ClientRequest, ClientResponse, Consistency, Entry, ErrorCode, ErrorResponse, NodeId,
    OkResponse, Role,
};
use raftd_core::{NotLeader, Raft, Ready};
use std::collections::BTreeMap;

/// How often a leader looks for expired leases, in ticks.
const LEASE_CHECK_TICKS: u64 = 10;

/// Default request timeout in ticks (5 s at the daemon's 10 ms tick).
pub const DEFAULT_REQUEST_TIMEOUT_TICKS: u64 = 500;

struct PendingWrite<R> {
    term: u64,
    /// Where the answer goes (the shell's reply token: a connection's sender in the daemon, a
    /// client's route in the simulation).
    request: R,
    id: u64,
    /// `ticks` when it arrived.
    since: u64,
}

struct PendingRead<R> {
    /// The leader's term when the read arrived.
    term: u64,
    request: R,
    id: u64,
    query: Query,
    since: u64,
}

/// What a read asks, answered once the leader confirmed it leads and applied what was
/// committed when the read arrived.
enum Query {
    Get(String),
    Range {
        range: KeyRange,
        opts: RangeOptions,
    },
    /// A keep-alive is a read: the leader confirms it still leads before it promises the
    /// lease another ttl, and logs nothing (its clock is restarted when the keep-alive
    /// arrived).
    KeepAlive(u64),
    TimeToLive(u64),
    /// A backup: a copy of the whole store, handed to the driver (`take_backups`) rather than
    /// answered here, since it is streamed in chunks.
    Backup,
}

/// The service's injected bugs (only with the `bugs` feature; all off by default).
#[cfg(feature = "bugs")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvBugs {
    /// A leader answers linearizable Gets from its store at once, without a ReadIndex round.
    pub stale_read: bool,
    /// The store applies a retried (client_id, seq) again instead of returning the first
    /// outcome.
    pub double_apply: bool,
}

/// The key-value service, generic over `R`, the token that says where an answer goes: the
/// service hands every answer back with the token of the request it answers, so the shell
/// needs no table of its own.
pub struct KvService<R> {
    node: NodeId,
    store: KvStore,
    /// Log index -> the write waiting for it.
    writes: BTreeMap<u64, PendingWrite<R>>,
    /// Reads received this turn, not yet given to the core.
    new_reads: Vec<PendingRead<R>>,
    /// ReadIndex context -> the reads waiting for the leader's confirmation.
    confirming: BTreeMap<u64, Vec<PendingRead<R>>>,
    /// Confirmed reads waiting for their read index to be applied, by that index.
    applying: BTreeMap<u64, Vec<PendingRead<R>>>,
    next_ctx: u64,
    /// Ticks seen, the service's clock for request timeouts.
    ticks: u64,
    request_timeout_ticks: u64,
    /// Where each member listens, for `NotLeader` hints.
    addrs: BTreeMap<NodeId, String>,
    /// Largest encoded command accepted for the log: a larger entry could not be sent to the
    /// followers in one peer frame, so it would never commit.
    max_command_bytes: usize,
    /// The shell's wall clock (ms since the epoch), stamped into the commands this node
    /// proposes as leader: the log's clock for session expiry.
    now_ms: u64,
    /// The node's disk is full: writes are refused with `NoSpace`.
    no_space: bool,
    /// When each lease expires, by this node's clock while it leads.
    lease_clock: LeaseClock,
    /// Milliseconds per tick (the daemon's tick; the simulation's virtual one).
    tick_ms: u64,
    /// Revisions of history to keep (0: all); see `leader_tick`.
    auto_compact: u64,
    /// The compaction this node proposed last, and when (its clock): not proposed again
    /// until applied or lost.
    compact_proposed: Option<(u64, u64)>,
    /// The consistency check's interval (0: off): the store is copied for hashing after
    /// applying every index that is a multiple of it.
    hash_every: u64,
    /// Copies taken for the consistency check, for the driver to collect.
    hash_points: Vec<(u64, KvStore)>,
    /// Backups whose read index is applied: the reply token, the request id and the store as
    /// of then (an O(1) copy), for the driver to collect.
    backups: Vec<(R, u64, KvStore)>,
    #[cfg(feature = "bugs")]
    bugs: KvBugs,
}

/// A request the service keeps until it can answer it.
enum Admitted {
    /// A linearizable read, for the next ReadIndex round.
    Read { id: u64, query: Query },
    /// A write proposed at `index` in `term`.
    Write { id: u64, index: u64, term: u64 },
}

/// An answer to send, with the reply token of the request it answers.
pub type Answer<R> = (R, ClientResponse);

impl<R> KvService<R> {
    pub fn new(node: NodeId, store: KvStore, addrs: BTreeMap<NodeId, String>) -> KvService<R> {
        KvService {
            node,
            store,
            writes: BTreeMap::new(),
            new_reads: Vec::new(),
            confirming: BTreeMap::new(),
            applying: BTreeMap::new(),
            next_ctx: 1,
            ticks: 0,
            request_timeout_ticks: DEFAULT_REQUEST_TIMEOUT_TICKS,
            addrs,
            max_command_bytes: usize::MAX,
            now_ms: 0,
            no_space: false,
            lease_clock: LeaseClock::default(),
            tick_ms: 10,
            auto_compact: 0,
            compact_proposed: None,
            hash_every: 0,
            hash_points: Vec::new(),
            backups: Vec::new(),
            #[cfg(feature = "bugs")]
            bugs: KvBugs::default(),
        }
    }

    /// Switches the service's injected bugs on or off.
    #[cfg(feature = "bugs")]
    pub fn set_bugs(&mut self, bugs: KvBugs) {
        self.bugs = bugs;
    }

    /// Where each member listens (for `NotLeader` hints and `Status`).
    pub fn addrs(&self) -> &BTreeMap<NodeId, String> {
        &self.addrs
    }

    /// The configuration changed: where its members listen.
    pub fn set_addrs(&mut self, addrs: BTreeMap<NodeId, String>) {
        self.addrs = addrs;
    }

    /// Refuses writes whose encoded command is longer than `bytes` with `TooLarge` (default:
    /// no limit).
    pub fn set_max_command_bytes(&mut self, bytes: usize) {
        self.max_command_bytes = bytes;
    }

    /// The shell's wall clock, in ms since the epoch (the daemon's system clock, the
    /// simulation's virtual time).
    pub fn set_now_ms(&mut self, ms: u64) {
        self.now_ms = ms;
    }

    /// How long a tick is, in ms (for lease ttls).
    pub fn set_tick_ms(&mut self, ms: u64) {
        self.tick_ms = ms.max(1);
    }

    /// This node's monotonic clock in ms: its ticks.
    fn mono_ms(&self) -> u64 {
        self.ticks * self.tick_ms
    }

    /// The store, to change what the driver owns of it (event recording for watches).
    pub fn store_mut(&mut self) -> &mut KvStore {
        &mut self.store
    }

    /// Keeps `revisions` revisions of history: the leader compacts older ones (0: never).
    pub fn set_auto_compact(&mut self, revisions: u64) {
        self.auto_compact = revisions;
    }

    /// What a leader does on its own each tick: expire leases, compact history.
    pub fn leader_tick(&mut self, raft: &mut Raft) {
        if raft.role() != Role::Leader {
            self.lease_clock.not_leading();
            self.compact_proposed = None;
            return;
        }
        // Every lease is looked at, so not on every tick: ten times a second at the daemon's
        // tick (a lease expires at most that much late; never early).
        if self.ticks.is_multiple_of(LEASE_CHECK_TICKS) {
            self.expire_leases(raft);
        }
        self.auto_compact(raft);
    }

    /// Proposes a compaction that keeps the last `auto_compact` revisions, once a tenth of that
    /// has accumulated beyond them (so compactions are batched). Through the log: every node
    /// forgets the same history at the same index.
    fn auto_compact(&mut self, raft: &mut Raft) {
        if self.auto_compact == 0 {
            return;
        }
        let mvcc = self.store.mvcc();
        let target = mvcc.revision().saturating_sub(self.auto_compact);
        let step = (self.auto_compact / 10).max(1);
        if target < mvcc.compact_revision() + step {
            return;
        }
        let now = self.mono_ms();
        if let Some((proposed, at)) = self.compact_proposed {
            if proposed > mvcc.compact_revision() && now < at + 2_000 {
                return; // still on its way through the log
            }
        }
        let cmd = Command {
            client_id: None,
            seq: 0,
            op: Op::Compact { revision: target },
            at_ms: self.now_ms,
        };
        if let Ok(data) = cmd.encode() {
            if raft.propose(data).is_ok() {
                ::log::debug!("compacting history before revision {target}");
                self.compact_proposed = Some((target, now));
            }
        }
    }

    /// Proposes the revocation of every lease whose ttl ran out by this leader's clock
    /// (through the log, so every node deletes the keys at the same revision). A node that has
    /// just become leader first gives every lease its full ttl again: it cannot know when the
    /// last keep-alive reached the old leader.
    fn expire_leases(&mut self, raft: &mut Raft) {
        let now = self.mono_ms();
        let due = self.lease_clock.due(raft.term(), now, self.store.leases());
        for lease_id in due {
            let cmd = Command {
                client_id: None,
                seq: 0,
                op: Op::LeaseRevoke {
                    lease_id,
                    expired: true,
                },
                at_ms: self.now_ms,
            };
            if let Ok(data) = cmd.encode() {
                if let Ok((index, _)) = raft.propose(data) {
                    ::log::info!("lease {lease_id} expired; revoking it at index {index}");
                    self.lease_clock.revoking(lease_id, now);
                }
            }
        }
    }

    /// The node's disk is full (or has space again): refuse writes with `NoSpace` meanwhile.
    pub fn set_no_space(&mut self, full: bool) {
        self.no_space = full;
    }

    pub fn no_space(&self) -> bool {
        self.no_space
    }

    /// Copies the store for the consistency check after every `every`th index (0: never).
    pub fn set_hash_every(&mut self, every: u64) {
        self.hash_every = every;
    }

    /// The copies taken since the last call: (index, the store as of it).
    pub fn take_hash_points(&mut self) -> Vec<(u64, KvStore)> {
        std::mem::take(&mut self.hash_points)
    }

    /// Backups ready to stream: (reply, request id, the store at the backup's index).
    pub fn take_backups(&mut self) -> Vec<(R, u64, KvStore)> {
        std::mem::take(&mut self.backups)
    }

    /// Test hook (see `KvStore::corrupt_for_test`).
    #[cfg(feature = "bugs")]
    pub fn corrupt_for_test(&mut self, key: &str, value: &str) {
        self.store.corrupt_for_test(key, value);
    }

    /// Answers requests with `Timeout` after this many ticks (default 500: 5 s at 10 ms).
    pub fn set_request_timeout_ticks(&mut self, ticks: u64) {
        self.request_timeout_ticks = ticks.max(1);
    }

    /// Advances the service's clock by one tick (the same ticks the core gets) and answers
    /// with `Timeout` every request pending for longer than the request timeout. Their outcome
    /// is unknown: a write may still commit later, which a retry with the same
    /// `client_id`/`seq` finds out without applying it twice.
    pub fn tick(&mut self) -> Vec<Answer<R>> {
        self.ticks += 1;
        let Some(cutoff) = self.ticks.checked_sub(self.request_timeout_ticks) else {
            return Vec::new();
        };
        let mut answers = Vec::new();
        let expired: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.since < cutoff)
            .map(|(i, _)| *i)
            .collect();
        for index in expired {
            if let Some(w) = self.writes.remove(&index) {
                answers.push((
                    w.request,
                    timeout(w.id, "not committed in time; outcome unknown"),
                ));
            }
        }
        for reads in self
            .confirming
            .values_mut()
            .chain(self.applying.values_mut())
        {
            // Rebuilt only when something expired: this runs on every tick.
            if reads.iter().all(|r| r.since >= cutoff) {
                continue;
            }
            let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(reads)
                .into_iter()
                .partition(|r| r.since >= cutoff);
            *reads = keep;
            answers.extend(expired.into_iter().map(|r| {
                (
                    r.request,
                    timeout(r.id, "the read could not be confirmed in time"),
                )
            }));
        }
        self.confirming.retain(|_, reads| !reads.is_empty());
        self.applying.retain(|_, reads| !reads.is_empty());
        answers
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// Replaces the state machine with one restored from a snapshot the leader sent (this node
    /// follows, so nothing is pending).
    pub fn restore(&mut self, store: KvStore) {
        self.store = store;
    }

    /// Requests still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.writes.len()
            + self.new_reads.len()
            + self.confirming.values().map(Vec::len).sum::<usize>()
            + self.applying.values().map(Vec::len).sum::<usize>()
    }

    /// Handles a request. Returns the answer (with `request`, the reply token) if it is known
    /// now; otherwise the service keeps the token and the answer comes from a later
    /// `on_ready`, `tick` or `leadership_lost`.
    pub fn request(
        &mut self,
        raft: &mut Raft,
        request: R,
        req: ClientRequest,
    ) -> Option<Answer<R>> {
        match self.admit(raft, req) {
            Err(resp) => Some((request, resp)),
            Ok(Admitted::Read { id, query }) => {
                if let Query::KeepAlive(lease) = query {
                    // The lease's clock restarts when the keep-alive arrives: a client that
                    // counts its ttl from when it sent it never expects more than this node
                    // (or the next leader, which restarts every clock) gives.
                    // The clock is the tick count, which this keep-alive arrived after: count
                    // from the next tick, or the lease could run out up to a tick before its
                    // ttl from the arrival (seen: 2.995 s of a 3 s ttl).
                    if let Some(l) = self.store.leases().get(lease) {
                        let (ttl, now) = (l.ttl, self.mono_ms() + self.tick_ms);
                        self.lease_clock.keep_alive(lease, ttl, now);
                    }
                }
                self.new_reads.push(PendingRead {
                    term: raft.term(),
                    request,
                    id,
                    query,
                    since: self.ticks,
                });
                None
            }
            Ok(Admitted::Write { id, index, term }) => {
                self.writes.insert(
                    index,
                    PendingWrite {
                        term,
                        request,
                        id,
                        since: self.ticks,
                    },
                );
                None
            }
        }
    }

    /// Checks a request and, for a write, proposes it. `Err` is the answer to give now.
    // The error is an answer handed straight to the caller; boxing it would only allocate.
    #[allow(clippy::result_large_err)]
    fn admit(&mut self, raft: &mut Raft, req: ClientRequest) -> Result<Admitted, ClientResponse> {
        match req {
            ClientRequest::Status { id }
            | ClientRequest::MemberList { id }
            | ClientRequest::MemberAdd { id, .. }
            | ClientRequest::MemberPromote { id, .. }
            | ClientRequest::MemberRemove { id, .. }
            | ClientRequest::TransferLeader { id, .. }
            | ClientRequest::Watch { id, .. }
            | ClientRequest::CancelWatch { id, .. } => Err(bad_request(
                Some(id),
                "Status, membership and watch requests are answered by the node, not the store",
            )),
            ClientRequest::Get {
                id,
                key,
                consistency,
            } => {
                check_key(&key).map_err(|msg| bad_request(Some(id), msg))?;
                self.read(raft, id, consistency, Query::Get(key))
            }
            ClientRequest::Range {
                id,
                key,
                end,
                prefix,
                limit,
                keys_only,
                count_only,
                revision,
                consistency,
            } => {
                let range = KeyRange::from_fields(key, end, prefix)
                    .map_err(|msg| bad_request(Some(id), msg))?;
                let opts = RangeOptions {
                    limit,
                    keys_only,
                    count_only,
                    revision,
                };
                self.read(raft, id, consistency, Query::Range { range, opts })
            }
            ClientRequest::LeaseKeepAlive { id, lease_id } => self.read(
                raft,
                id,
                Consistency::Linearizable,
                Query::KeepAlive(lease_id),
            ),
            ClientRequest::LeaseTimeToLive { id, lease_id } => self.read(
                raft,
                id,
                Consistency::Linearizable,
                Query::TimeToLive(lease_id),
            ),
            ClientRequest::Snapshot { id } => {
                self.read(raft, id, Consistency::Linearizable, Query::Backup)
            }
            ClientRequest::Put {
                id,
                key,
                value,
                lease,
                client_id,
                seq,
            } => {
                check_key(&key).map_err(|msg| bad_request(Some(id), msg))?;
                self.write(raft, id, client_id, seq, Op::Put { key, value, lease })
            }
            ClientRequest::Delete {
                id,
                key,
                client_id,
                seq,
            } => {
                check_key(&key).map_err(|msg| bad_request(Some(id), msg))?;
                self.write(raft, id, client_id, seq, Op::Delete { key })
            }
            ClientRequest::Cas {
                id,
                key,
                expected,
                value,
                client_id,
                seq,
            } => {
                check_key(&key).map_err(|msg| bad_request(Some(id), msg))?;
                self.write(
                    raft,
                    id,
                    client_id,
                    seq,
                    Op::Cas {
                        key,
                        expected,
                        value,
                    },
                )
            }
            ClientRequest::DeleteRange {
                id,
                key,
                end,
                prefix,
                client_id,
                seq,
            } => {
                KeyRange::from_fields(key.clone(), end.clone(), prefix)
                    .map_err(|msg| bad_request(Some(id), msg))?;
                self.write(
                    raft,
                    id,
                    client_id,
                    seq,
                    Op::DeleteRange { key, end, prefix },
                )
            }
            ClientRequest::Txn {
                id,
                compare,
                success,
                failure,
                client_id,
                seq,
            } => {
                let txn = Txn {
                    compare,
                    success,
                    failure,
                };
                txn.validate().map_err(|msg| bad_request(Some(id), &msg))?;
                self.write(raft, id, client_id, seq, Op::Txn(txn))
            }
            ClientRequest::Compact { id, revision } => {
                // Checked here to answer at once; checked again when applied, against the
                // store as it is then. Only by a leader that applied all it committed: a
                // follower's store may be behind the revision the client saw (it answers
                // NotLeader instead), and so may a new leader's until it caught up.
                let current =
                    raft.role() == Role::Leader && raft.log().applied() == raft.log().committed();
                match self.store.mvcc().check_revision(revision) {
                    _ if !current => {}
                    Err(RevisionError::Future { revision: now }) => {
                        return Err(bad_request(
                            Some(id),
                            &format!(
                                "cannot compact at {revision}: the store is at revision {now}"
                            ),
                        ))
                    }
                    _ if revision <= self.store.mvcc().compact_revision() => {
                        return Err(compacted(id, self.store.mvcc().compact_revision()))
                    }
                    _ => {}
                }
                self.write(raft, id, None, None, Op::Compact { revision })
            }
            ClientRequest::LeaseGrant {
                id,
                ttl,
                client_id,
                seq,
            } => {
                if ttl == 0 {
                    return Err(bad_request(Some(id), "ttl must be at least 1 second"));
                }
                self.write(raft, id, client_id, seq, Op::LeaseGrant { ttl })
            }
            ClientRequest::LeaseRevoke {
                id,
                lease_id,
                client_id,
                seq,
            } => self.write(
                raft,
                id,
                client_id,
                seq,
                Op::LeaseRevoke {
                    lease_id,
                    expired: false,
                },
            ),
        }
    }

    /// A read: stale ones are answered from this node's store at once; linearizable ones wait
    /// for the next ReadIndex round on the leader.
    #[allow(clippy::result_large_err)]
    fn read(
        &mut self,
        raft: &Raft,
        id: u64,
        consistency: Consistency,
        query: Query,
    ) -> Result<Admitted, ClientResponse> {
        let stale = consistency == Consistency::Stale
            && !matches!(
                query,
                Query::KeepAlive(_) | Query::TimeToLive(_) | Query::Backup
            );
        if stale {
            return Err(self.answer_query(id, &query));
        }
        if raft.role() != Role::Leader {
            return Err(self.not_leader(id, raft.leader()));
        }
        // BUG (stale_read): trust that we still lead and answer from the local store, without
        // a ReadIndex round.
        #[cfg(feature = "bugs")]
        if self.bugs.stale_read && matches!(query, Query::Get(_) | Query::Range { .. }) {
            return Err(self.answer_query(id, &query));
        }
        Ok(Admitted::Read { id, query })
    }

    /// Answers a read from this node's store as it is now.
    fn answer_query(&self, id: u64, query: &Query) -> ClientResponse {
        let store = &self.store;
        let revision = Some(store.revision());
        match query {
            Query::Get(key) => {
                let kv = store.mvcc().get(key);
                ClientResponse::Ok(OkResponse {
                    value: Some(kv.as_ref().and_then(|kv| kv.value.clone())),
                    revision,
                    mod_revision: kv.as_ref().map(|kv| kv.mod_revision),
                    create_revision: kv.as_ref().map(|kv| kv.create_revision),
                    version: kv.as_ref().map(|kv| kv.version),
                    lease: kv.as_ref().map(|kv| kv.lease).filter(|l| *l != 0),
                    ..OkResponse::bare(id)
                })
            }
            Query::Range { range, opts } => match store.mvcc().range(range, opts) {
                Ok(r) => ClientResponse::Ok(OkResponse {
                    kvs: Some(r.kvs),
                    more: Some(r.more),
                    count: Some(r.count),
                    revision,
                    ..OkResponse::bare(id)
                }),
                Err(RevisionError::Compacted { compact_revision }) => {
                    compacted(id, compact_revision)
                }
                Err(RevisionError::Future { revision }) => bad_request(
                    Some(id),
                    &format!("that revision is in the future: this node's store is at {revision}"),
                ),
            },
            Query::KeepAlive(lease_id) => match store.leases().get(*lease_id) {
                Some(lease) if !self.lease_clock.is_revoking(*lease_id) => {
                    ClientResponse::Ok(OkResponse {
                        lease_id: Some(*lease_id),
                        ttl: Some(lease.ttl),
                        ..OkResponse::bare(id)
                    })
                }
                _ => lease_not_found(id, *lease_id),
            },
            Query::TimeToLive(lease_id) => match store.leases().get(*lease_id) {
                Some(lease) if !self.lease_clock.is_revoking(*lease_id) => {
                    let left_ms = self
                        .lease_clock
                        .remaining_ms(*lease_id, self.mono_ms())
                        .unwrap_or(lease.ttl * 1000);
                    ClientResponse::Ok(OkResponse {
                        lease_id: Some(*lease_id),
                        ttl: Some(left_ms.div_ceil(1000)),
                        granted_ttl: Some(lease.ttl),
                        keys: Some(lease.keys.iter().cloned().collect()),
                        ..OkResponse::bare(id)
                    })
                }
                _ => lease_not_found(id, *lease_id),
            },
            // Never answered from here (see `serve_applied_reads`).
            Query::Backup => bad_request(Some(id), "a snapshot is streamed, not answered"),
        }
    }

    #[allow(clippy::result_large_err)]
    fn write(
        &mut self,
        raft: &mut Raft,
        id: u64,
        client_id: Option<String>,
        seq: Option<u64>,
        op: Op,
    ) -> Result<Admitted, ClientResponse> {
        let seq = match (&client_id, seq) {
            (Some(_), None) => {
                return Err(bad_request(Some(id), "a write with client_id needs seq"))
            }
            (Some(c), _) if c.is_empty() => {
                return Err(bad_request(Some(id), "client_id must not be empty"))
            }
            (_, seq) => seq.unwrap_or(0),
        };
        if raft.role() != Role::Leader {
            return Err(self.not_leader(id, raft.leader()));
        }
        if self.no_space {
            return Err(ClientResponse::error(
                Some(id),
                ErrorCode::NoSpace,
                "this node's disk is full: the write was not executed; reads are still \
                 served. The node hands leadership to a healthy voter and accepts writes \
                 again once it has space",
            ));
        }
        let cmd = Command {
            client_id,
            seq,
            op,
            at_ms: self.now_ms,
        };
        let data = cmd
            .encode()
            .map_err(|e| bad_request(Some(id), &format!("cannot encode the command: {e}")))?;
        if data.len() > self.max_command_bytes {
            return Err(ClientResponse::error(
                Some(id),
                ErrorCode::TooLarge,
                format!(
                    "the write encodes to {} bytes; at most {} fit in one replication message",
                    data.len(),
                    self.max_command_bytes
                ),
            ));
        }
        match raft.propose(data) {
            Ok((index, term)) => Ok(Admitted::Write { id, index, term }),
            Err(NotLeader { leader }) => Err(self.not_leader(id, leader)),
        }
    }

    /// Gives every linearizable read received since the last call one ReadIndex request.
    pub fn flush_reads(&mut self, raft: &mut Raft) -> Vec<Answer<R>> {
        if self.new_reads.is_empty() {
            return Vec::new();
        }
        let reads = std::mem::take(&mut self.new_reads);
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        match raft.read_index(ctx) {
            Ok(()) => {
                self.confirming.insert(ctx, reads);
                Vec::new()
            }
            Err(NotLeader { leader }) => reads
                .into_iter()
                .map(|r| (r.request, self.not_leader(r.id, leader)))
                .collect(),
        }
    }

    /// Applies the committed entries of a persisted `Ready` and releases what it allows.
    pub fn on_ready(&mut self, raft: &Raft, rd: &Ready) -> Vec<Answer<R>> {
        let mut answers = Vec::new();
        for entry in &rd.committed_entries {
            self.apply(entry, &mut answers);
        }
        for rs in &rd.read_states {
            if let Some(reads) = self.confirming.remove(&rs.ctx) {
                self.applying.entry(rs.index).or_default().extend(reads);
            }
        }
        self.serve_applied_reads(&mut answers);
        // Pending requests exist only on a leader, for its term. If this node no longer leads,
        // or leads a later term (deposed and re-elected within one batch), none of them can
        // be answered by it any more.
        if raft.role() != Role::Leader {
            answers.extend(self.leadership_lost());
        } else {
            answers.extend(self.drop_older_terms(raft.term()));
        }
        answers
    }

    fn apply(&mut self, entry: &Entry, answers: &mut Vec<Answer<R>>) {
        #[cfg(feature = "bugs")]
        let outcome = self.store.apply_with_bugs(entry, self.bugs.double_apply);
        #[cfg(not(feature = "bugs"))]
        let outcome = self.store.apply(entry);
        if is_hash_point(entry.index, self.hash_every, self.store.len()) {
            self.hash_points.push((entry.index, self.store.clone()));
        }
        let Some(waiting) = self.writes.remove(&entry.index) else {
            return;
        };
        if waiting.term != entry.term {
            // Another leader's entry took this index: ours was lost. Whether it was applied
            // elsewhere is unknown to us.
            answers.push((
                waiting.request,
                timeout(waiting.id, "the write was overwritten by a new leader"),
            ));
            return;
        }
        let resp = match outcome {
            None => ClientResponse::Ok(OkResponse::bare(waiting.id)),
            Some(outcome) => outcome_answer(waiting.id, outcome),
        };
        answers.push((waiting.request, resp));
    }

    fn serve_applied_reads(&mut self, answers: &mut Vec<Answer<R>>) {
        let applied = self.store.applied();
        while let Some(entry) = self.applying.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                if let Query::Backup = read.query {
                    self.backups
                        .push((read.request, read.id, self.store.clone()));
                    continue;
                }
                let answer = self.answer_query(read.id, &read.query);
                answers.push((read.request, answer));
            }
        }
    }

    /// Answers with `Timeout` whatever is pending from a term before `term` (the node was
    /// deposed and elected again between two batches).
    fn drop_older_terms(&mut self, term: u64) -> Vec<Answer<R>> {
        let mut answers = Vec::new();
        let stale: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.term != term)
            .map(|(i, _)| *i)
            .collect();
        for index in stale {
            if let Some(w) = self.writes.remove(&index) {
                answers.push((
                    w.request,
                    timeout(w.id, "leadership changed while the write was pending"),
                ));
            }
        }
        let stale: Vec<u64> = self
            .confirming
            .iter()
            .filter(|(_, reads)| reads.iter().any(|r| r.term != term))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            for r in self.confirming.remove(&ctx).unwrap_or_default() {
                answers.push((
                    r.request,
                    timeout(r.id, "leadership changed while the read was pending"),
                ));
            }
        }
        answers
    }

    /// Answers everything waiting on this node's leadership with `Timeout`: the outcome of a
    /// pending write is unknown (it may still commit under the next leader); a pending read is
    /// safe to retry.
    pub fn leadership_lost(&mut self) -> Vec<Answer<R>> {
        let mut answers = Vec::new();
        for (_, w) in std::mem::take(&mut self.writes) {
            answers.push((
                w.request,
                timeout(w.id, "leadership was lost while the write was pending"),
            ));
        }
        let reads = std::mem::take(&mut self.new_reads)
            .into_iter()
            .chain(std::mem::take(&mut self.confirming).into_values().flatten())
            .chain(std::mem::take(&mut self.applying).into_values().flatten());
        for r in reads {
            answers.push((
                r.request,
                timeout(r.id, "leadership was lost while the read was pending"),
            ));
        }
        answers
    }

    /// Answers everything pending with `ShuttingDown`.
    pub fn shutdown(&mut self) -> Vec<Answer<R>> {
        self.leadership_lost()
            .into_iter()
            .map(|(r, resp)| {
                let id = match &resp {
                    ClientResponse::Error(e) => e.id,
                    _ => None,
                };
                (
                    r,
                    ClientResponse::error(
                        id,
                        ErrorCode::ShuttingDown,
                        "node is stopping; retry at another node",
                    ),
                )
            })
            .collect()
    }

    pub fn not_leader(&self, id: u64, leader: NodeId) -> ClientResponse {
        let leader = (leader != 0 && leader != self.node).then_some(leader);
        let addr = leader.and_then(|l| self.addrs.get(&l).cloned());
        ClientResponse::Error(ErrorResponse {
            id: Some(id),
            code: ErrorCode::NotLeader,
            message: match leader {
                Some(l) => format!("not the leader; node {l} leads"),
                None => "not the leader; no leader is known yet, retry shortly".to_string(),
            },
            leader_id: Some(leader),
            leader_addr: Some(addr),
            compact_revision: None,
        })
    }
}

/// The answer to a write, from what applying it gave.
/// Live keys per hashing interval: a store of more keys is hashed that many times less often.
const KEYS_PER_HASH_INTERVAL: u64 = 100_000;

/// Whether the state after applying `index` is hashed for the consistency check: at every
/// multiple of `every`, but for a large store only at every k-th one (k = its keys / 100,000),
/// so that hashing (which reads the whole state, and keeps a copy alive that makes the next
/// writes copy what they change) costs about the same per write whatever the store's size.
/// `keys` is the store's size after that index, the same on every replica, so every node picks
/// the same indexes and the hashes stay comparable.
pub(crate) fn is_hash_point(index: u64, every: u64, keys: usize) -> bool {
    if every == 0 || !index.is_multiple_of(every) {
        return false;
    }
    let k = (keys as u64 / KEYS_PER_HASH_INTERVAL).max(1);
    (index / every).is_multiple_of(k)
}

fn outcome_answer(id: u64, outcome: Outcome) -> ClientResponse {
    let ok = |fill: OkResponse| ClientResponse::Ok(OkResponse { id, ..fill });
    match outcome {
        Outcome::Done => ok(OkResponse::default()),
        Outcome::Cas {
            succeeded,
            value,
            revision,
        } => ok(OkResponse {
            value: Some(value),
            succeeded: Some(succeeded),
            revision: (revision > 0).then_some(revision),
            ..OkResponse::default()
        }),
        Outcome::Written { revision } => ok(OkResponse {
            revision: Some(revision),
            ..OkResponse::default()
        }),
        Outcome::Deleted { deleted, revision } => ok(OkResponse {
            deleted: Some(deleted),
            revision: Some(revision),
            ..OkResponse::default()
        }),
        Outcome::Txn(t) => ok(OkResponse {
            succeeded: Some(t.succeeded),
            responses: Some(t.responses),
            revision: Some(t.revision),
            ..OkResponse::default()
        }),
        Outcome::LeaseGranted { lease_id, ttl } => ok(OkResponse {
            lease_id: Some(lease_id),
            ttl: Some(ttl),
            ..OkResponse::default()
        }),
        Outcome::SessionExpired => ClientResponse::error(
            Some(id),
            ErrorCode::SessionExpired,
            "this client_id/seq is older than what the cluster remembers: nothing was applied \
             now, and whether it was applied before is unknown; read the key to find out, \
             and use a new seq",
        ),
        Outcome::Refused(Refusal::LeaseNotFound { lease_id }) => lease_not_found(id, lease_id),
        Outcome::Refused(Refusal::Compacted { compact_revision }) => {
            compacted(id, compact_revision)
        }
        Outcome::Refused(Refusal::FutureRevision { revision }) => bad_request(
            Some(id),
            &format!("cannot compact past the store's revision {revision}"),
        ),
    }
}

fn compacted(id: u64, compact_revision: u64) -> ClientResponse {
    ClientResponse::Error(ErrorResponse {
        compact_revision: Some(compact_revision),
        ..match ClientResponse::error(
            Some(id),
            ErrorCode::Compacted,
            format!("that revision was compacted: history starts at revision {compact_revision}"),
        ) {
            ClientResponse::Error(e) => e,
            _ => unreachable!("ClientResponse::error builds an Error"),
        }
    })
}

fn lease_not_found(id: u64, lease_id: u64) -> ClientResponse {
    ClientResponse::error(
        Some(id),
        ErrorCode::LeaseNotFound,
        format!("lease {lease_id} does not exist (it expired or was revoked); grant a new one"),
    )
}

fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("key must not be empty")
    } else {
        Ok(())
    }
}

fn bad_request(id: Option<u64>, msg: &str) -> ClientResponse {
    ClientResponse::error(id, ErrorCode::BadRequest, msg)
}

fn timeout(id: u64, msg: &str) -> ClientResponse {
    ClientResponse::error(Some(id), ErrorCode::Timeout, msg)
}

#[cfg(test)]
mod hash_point_tests {
    use super::is_hash_point;

    #[test]
    fn a_large_store_is_hashed_less_often_and_every_replica_picks_the_same_indexes() {
        assert!(!is_hash_point(10_000, 0, 10), "off");
        assert!(!is_hash_point(10_001, 10_000, 10));
        assert!(
            is_hash_point(10_000, 10_000, 10),
            "a small store: every multiple"
        );
        assert!(is_hash_point(20_000, 10_000, 99_999));
        // 1,000,000 keys: every 10th multiple only.
        let points: Vec<u64> = (1..=30)
            .map(|i| i * 10_000)
            .filter(|i| is_hash_point(*i, 10_000, 1_000_000))
            .collect();
        assert_eq!(points, vec![100_000, 200_000, 300_000]);
    }
}
