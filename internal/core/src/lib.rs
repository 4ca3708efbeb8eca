//! The Raft core: a deterministic state machine with no I/O.
//!
//! Inputs: `tick()` (logical time), `step(envelope)` (a peer message) and `propose(data)`.
//! Output: a [`Ready`] batch, taken with `ready()`, that says what to persist, what to send
//! (before and after persisting) and what to apply. A synchronous caller persists it, sends,
//! applies and calls `advance()`; an asynchronous one (raftd's driver, `raftd::driver`) hands
//! the write off, applies at once and reports durability later (see [`Ready`]). The core holds
//! no sockets, files, tasks or clock, and its randomness comes from `Config::seed`, so a
//! simulation can replay any run. This crate cannot depend on tokio: Cargo keeps it I/O-free.
//!
//! The rules are split by Raft's parts: `election.rs` (§5.2, §5.4.1, pre-vote, check-quorum),
//! `append_entries.rs` (§5.3, §5.4.2), `snapshot.rs` (§7), `read_index.rs` (thesis §6.4),
//! `log.rs`, `progress.rs`, `quorum.rs`; the wire types are in `message.rs`.

/// Whether the injected bug `$name` is switched on in this node's config (always false in a
/// build without the `bugs` feature, where the switches do not exist).
#[cfg(feature = "bugs")]
macro_rules! bug {
    ($raft:expr, $name:ident) => {
        $raft.cfg.bugs.$name
    };
}
#[cfg(not(feature = "bugs"))]
macro_rules! bug {
    ($raft:expr, $name:ident) => {
        false
    };
}

mod append_entries;
mod bootstrap;
#[cfg(feature = "bugs")]
mod bugs;
mod config;
mod election;
mod log;
mod membership;
pub mod message;
mod progress;
mod quorum;
mod read_index;
mod reconfigure;
mod snapshot;
mod transfer;
mod validate;

#[cfg(test)]
mod tests;

#[cfg(feature = "bugs")]
pub use bugs::Bugs;
pub use config::{Config, ConfigError, Founding, SnapshotCheck, MAX_TERM_OR_INDEX};
pub use log::RaftLog;
pub use membership::{ChangeError, Member, MemberRole, Membership, MembershipChange};
pub use message::Snapshot;
pub use progress::{Progress, ProgressState};
pub use quorum::{committed_index, majority};
pub use read_index::ReadState;
pub use snapshot::CompactError;

use crate::message::{Entry, Envelope, HardState, NodeId, RaftMessage, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// What the shell must do after a round of inputs. Synchronously:
/// 1. send `messages` (they promise nothing that is not already durable);
/// 2. durably write `hard_state` and `entries` (one write, one fsync);
/// 3. send `persisted_messages` (votes and acknowledgements: only after step 2);
/// 4. apply `committed_entries` in order (they are committed on a majority of disks, so they
///    may be applied before, during or after step 2);
/// 5. call `Raft::advance`.
///
/// Or, with asynchronous persistence (raftd's driver, which the daemon and the simulation
/// both run): send `messages`, queue the write of `hard_state` and `entries` behind the writes
/// already queued, apply `committed_entries` at once (before the write is durable), and call
/// `Raft::handed_off`, which allows the next `ready()` at once.
/// When the write (and every write queued before it) is durable, send its
/// `persisted_messages` and pass its [`Persisting`] to `Raft::persisted`. Writes complete in
/// the order they were queued; `persisted_messages` wait for their own write even when it is
/// empty, since they may vouch for entries of an earlier write still in flight.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    /// Entries to append; if the first index is at or below what storage holds, the storage
    /// replaces its suffix from there (a conflict was resolved).
    pub entries: Vec<Entry>,
    pub messages: Vec<Envelope>,
    pub persisted_messages: Vec<Envelope>,
    pub committed_entries: Vec<Entry>,
    /// Reads the leader has confirmed (see `Raft::read_index`): serve each once its index is
    /// applied.
    pub read_states: Vec<ReadState>,
    /// A snapshot received from the leader: persist it (replacing the log up to its index) and
    /// restore the state machine from it, before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Set when the role or the known leader changed since the previous `Ready`.
    pub soft_state: Option<SoftState>,
    /// The configuration now in effect, when it changed since the previous `Ready` (appended,
    /// truncated away, installed with a snapshot): the shell connects to new members and
    /// drops removed ones.
    pub membership: Option<Membership>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.snapshot.is_none()
            && self.soft_state.is_none()
            && self.membership.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    /// 0 when no leader is known.
    pub leader: NodeId,
}

/// A read-only view of the node, for `Status` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub role: Role,
    pub leader: NodeId,
    pub commit_index: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub stable_index: u64,
}

/// `propose` on a node that is not the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (leader hint: {leader})")]
pub struct NotLeader {
    /// 0 when no leader is known.
    pub leader: NodeId,
}

/// What `ready()` handed out, so `advance()` can mark exactly that as done.
#[derive(Debug, Clone, Copy, Default)]
struct Handed {
    stable_to: Option<(u64, u64)>,
    applied_to: u64,
}

/// What one handed-off `Ready` wrote: give it back to `Raft::persisted` once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use = "pass it to Raft::persisted once the write is durable"]
pub struct Persisting {
    /// The last entry written (index, term), if any.
    stable_to: Option<(u64, u64)>,
}

pub struct Raft {
    id: NodeId,
    cfg: Config,
    /// Every other member of `membership`, voters and learners: whom a leader replicates to.
    peers: Vec<NodeId>,
    /// The configuration in effect: the latest in the log, committed or not (thesis §4.1).
    membership: Membership,
    /// The configuration at the snapshot's index (the base when the log holds none).
    base_membership: Membership,
    /// `Config` entries in the log after the snapshot, by index.
    configs: Vec<(u64, Membership)>,
    /// `membership` changed since the last `Ready`.
    membership_changed: bool,
    /// While the log is empty and the cluster may still have to be founded.
    bootstrap: Option<bootstrap::Probe>,
    /// The founding entry was written here and counts as committed once it is durable (not
    /// before: a crash before its write completed would forget an entry this node applied).
    founding_unsynced: bool,
    /// A leadership transfer in progress (leader only).
    transfer: Option<transfer::Transfer>,
    term: u64,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: RaftLog,

    /// Ticks since the last reset of the election timer (or, on a leader, of the quorum check).
    election_elapsed: u32,
    randomized_election_ticks: u32,
    heartbeat_elapsed: u32,
    /// Votes (or pre-votes) received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Per follower, on a leader only.
    progress: BTreeMap<NodeId, Progress>,
    rng: StdRng,
    read_only: read_index::ReadOnly,
    /// The latest snapshot, sent to followers that need compacted entries.
    snapshot: Option<Snapshot>,
    /// Command bytes of the entries the log keeps at or below the snapshot's index
    /// (`Config::log_behind_snapshot`), which do not count toward the next snapshot.
    kept_behind_bytes: u64,
    /// A snapshot being received from the leader.
    incoming: Option<snapshot::Incoming>,
    /// A snapshot installed but not yet handed to the shell.
    pending_snapshot: Option<Snapshot>,
    /// Senders of messages refused as impossible from a correct member (logged once each).
    refused_senders: BTreeSet<NodeId>,
    /// Messages refused so far, and what the last one was.
    refused_messages: u64,
    last_refusal: Option<String>,

    messages: Vec<Envelope>,
    persisted_messages: Vec<Envelope>,
    /// Hard state as last handed to storage.
    saved_hard_state: HardState,
    last_soft_state: SoftState,
    handed: Option<Handed>,
}

impl Raft {
    /// A node starting from what storage recovered (an empty log and zero state on first boot).
    pub fn new(
        cfg: Config,
        hard_state: HardState,
        entries: Vec<Entry>,
    ) -> Result<Raft, ConfigError> {
        Raft::restore(cfg, hard_state, None, entries)
    }

    /// A node starting from a snapshot (whose state the caller restored into its state
    /// machine) and the log entries after it.
    pub fn restore(
        cfg: Config,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let fresh = snapshot.is_none() && entries.is_empty();
        let configs = reconfigure::configs_in(&entries)?;
        let base_membership = match &snapshot {
            Some(snap) if !snap.membership.is_empty() => snap.membership.clone(),
            // A log from before configurations were logged, or the configuration given.
            _ if !fresh || cfg.founding == Founding::Given => {
                Membership::of_voters(&cfg.voters, &cfg.addrs, &BTreeMap::new())
            }
            // Empty: founded by the bootstrap round, or caught up by the leader.
            _ => Membership::default(),
        };
        let probing = fresh && cfg.founding == Founding::Unanimous;
        let mut raft = Raft {
            id: cfg.id,
            peers: Vec::new(),
            membership: Membership::default(),
            base_membership,
            configs,
            membership_changed: false,
            bootstrap: probing.then(bootstrap::Probe::default),
            founding_unsynced: false,
            transfer: None,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: 0,
            log: match &snapshot {
                Some(snap) => RaftLog::restore_with_snapshot(snap.meta, entries),
                None => RaftLog::restore(entries),
            },
            snapshot,
            kept_behind_bytes: 0,
            election_elapsed: 0,
            randomized_election_ticks: cfg.election_ticks_min,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            rng: StdRng::seed_from_u64(cfg.seed),
            read_only: read_index::ReadOnly::default(),
            incoming: None,
            pending_snapshot: None,
            refused_senders: BTreeSet::new(),
            refused_messages: 0,
            last_refusal: None,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            saved_hard_state: hard_state,
            last_soft_state: SoftState {
                role: Role::Follower,
                leader: 0,
            },
            handed: None,
            cfg,
        };
        raft.reset_election_timer();
        raft.refresh_membership();
        // The shell reads the configuration it starts with from `membership()`; `Ready`
        // reports changes from here on.
        raft.membership_changed = false;
        ::log::info!(
            "node {}: starting as follower in term {} (vote {}, last log {}@{}, {})",
            raft.id,
            raft.term,
            raft.vote,
            raft.log.last_index(),
            raft.log.last_term(),
            raft.describe_membership()
        );
        Ok(raft)
    }

    /// Sets the check every snapshot received from a leader must pass before it is installed
    /// (the application knows what a loadable state is; the core does not).
    pub fn set_snapshot_check(&mut self, check: SnapshotCheck) {
        self.cfg.snapshot_check = Some(check);
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The identity of this node's data dir, as its messages carry it.
    pub fn incarnation(&self) -> u64 {
        self.cfg.incarnation
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// The entries compactions and installed snapshots dropped since the last call (see
    /// `RaftLog::take_released`).
    pub fn take_released(&mut self) -> Vec<Entry> {
        self.log.take_released()
    }

    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit_index: self.log.committed(),
            last_applied: self.log.applied(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            stable_index: self.log.stable(),
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles one message from a peer.
    pub fn step(&mut self, env: Envelope) {
        if env.to != self.id || env.from == self.id || env.from == 0 {
            ::log::debug!("node {}: dropping misaddressed message {env}", self.id);
            return;
        }
        ::log::trace!("node {}: recv {env}", self.id);
        if matches!(env.msg, RaftMessage::StateHash { .. }) {
            // For the shell's consistency check; nothing of Raft's.
            return;
        }
        if self.bootstrap_message(&env) {
            return;
        }
        if let Some(why) = self.not_from_a_voter(&env) {
            // Not refused as impossible: a removed node that never learned of its removal, or
            // one that lost its disk, sends exactly this. It simply does not count.
            ::log::debug!("node {}: ignoring {env}: {why}", self.id);
            return;
        }
        // Before anything else looks at it: a message no correct member could send changes
        // nothing, not even the term.
        if let Some(why) = self.invalid(&env) {
            self.refuse(&env, &why);
            return;
        }
        if !self.handle_term(&env) {
            return;
        }
        let from = env.from;
        let incarnation = env.incarnation;
        self.heard_from(from, incarnation);
        match env.msg {
            RaftMessage::RequestVote {
                term,
                candidate_id: _,
                last_log_index,
                last_log_term,
                pre_vote,
                transfer: _,
            } => self.handle_request_vote(from, term, last_log_index, last_log_term, pre_vote),
            RaftMessage::RequestVoteReply {
                term,
                vote_granted,
                pre_vote,
            } => self.handle_vote_reply(from, incarnation, term, vote_granted, pre_vote),
            RaftMessage::AppendEntries {
                term,
                leader_id: _,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            } => self.handle_append_entries(
                from,
                append_entries::AppendArgs {
                    term,
                    prev: prev_log_index,
                    prev_term: prev_log_term,
                    entries: &entries,
                    leader_commit,
                    read_round,
                },
            ),
            RaftMessage::AppendEntriesReply {
                term: _,
                success,
                match_index,
                conflict,
                read_round,
            } => self.handle_append_reply(from, success, match_index, conflict, read_round),
            RaftMessage::InstallSnapshot {
                term,
                leader_id: _,
                snapshot,
                pos,
                data,
                membership,
            } => self.handle_install_snapshot(
                from,
                term,
                snapshot::Chunk {
                    meta: snapshot,
                    pos,
                    data,
                    membership: membership.unwrap_or_default(),
                },
            ),
            RaftMessage::InstallSnapshotReply {
                term: _,
                snapshot,
                received,
                done,
            } => self.handle_snapshot_reply(from, snapshot, received, done),
            RaftMessage::TimeoutNow { term } => self.handle_timeout_now(from, term),
            // Answered by `bootstrap_message` before anything else.
            RaftMessage::Bootstrap { .. }
            | RaftMessage::BootstrapReply { .. }
            | RaftMessage::StateHash { .. } => {}
        }
    }

    /// Appends a command to the leader's log. It is replicated in the next `Ready` together with
    /// everything else proposed since the previous one, so many proposals share one message and
    /// one fsync. Returns the (index, term) the entry will be committed at, if it is.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader: self.leader,
            });
        }
        if let Some(target) = self.transferring_to() {
            // Thesis §3.10: no new writes while leadership moves; the hint sends the client
            // to the node about to lead.
            return Err(NotLeader { leader: target });
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry::command(self.term, index, data));
        Ok((index, self.term))
    }

    /// Is there anything for the shell to do?
    pub fn has_ready(&self) -> bool {
        self.hard_state() != self.saved_hard_state
            || self.log.handed() < self.log.last_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.log.has_next_committed()
            || self.soft_state() != self.last_soft_state
            || !self.read_only.ready.is_empty()
            || self.pending_snapshot.is_some()
            || self.membership_changed
            || (self.role == Role::Leader && self.read_only.round_wanted())
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    /// Takes the next batch of work. Must be followed by `advance()` before the next `ready()`.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.handed.is_none(),
            "ready() called again before advance()"
        );
        if self.role == Role::Leader {
            self.start_read_round();
            self.send_appends();
        }
        let mut rd = Ready::default();
        let hs = self.hard_state();
        if hs != self.saved_hard_state {
            rd.hard_state = Some(hs);
            // BUG (vote_without_persist, `bugs` feature only): the vote never reaches the disk.
            if bug!(self, vote_without_persist) {
                rd.hard_state = Some(HardState { vote: 0, ..hs });
            }
            self.saved_hard_state = hs;
        }
        rd.entries = self.log.take_unhanded();
        rd.messages = std::mem::take(&mut self.messages);
        rd.persisted_messages = std::mem::take(&mut self.persisted_messages);
        rd.committed_entries = self.log.next_committed(self.cfg.max_apply_batch);
        rd.read_states = std::mem::take(&mut self.read_only.ready);
        rd.snapshot = self.pending_snapshot.take();
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            rd.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        if std::mem::take(&mut self.membership_changed) {
            rd.membership = Some(self.membership.clone());
        }
        self.handed = Some(Handed {
            stable_to: rd.entries.last().map(|e| (e.index, e.term)),
            applied_to: rd
                .committed_entries
                .last()
                .map_or(self.log.applied(), |e| e.index),
        });
        rd
    }

    /// The shell finished the last `Ready`: its entries are durable and its committed entries
    /// applied. A leader counts its own copy toward a majority only from here (after its fsync).
    pub fn advance(&mut self) {
        let persisting = self.handed_off();
        self.persisted(persisting);
    }

    /// Asynchronous persistence: the shell took the last `Ready`, sent its `messages`, queued
    /// its write and applied its committed entries; the next `ready()` may follow at once.
    pub fn handed_off(&mut self) -> Persisting {
        let handed = self.handed.take().expect("handed_off() without ready()");
        self.log.applied_to(handed.applied_to);
        Persisting {
            stable_to: handed.stable_to,
        }
    }

    /// A write queued by `handed_off` (and every write before it) is durable. A leader counts
    /// its own copy of the entries toward a majority only from here. If the log was cut back
    /// meanwhile (a conflict replaced entries that were being written) the acknowledgement no
    /// longer matches and is ignored; the replacement's own write will count instead.
    pub fn persisted(&mut self, persisting: Persisting) {
        if let Some((index, term)) = persisting.stable_to {
            self.log.stable_to(index, term);
        }
        if self.founding_unsynced && self.log.stable() >= 1 {
            self.founding_unsynced = false;
            if self.log.term(1) == Some(1) {
                self.log.commit_to(1);
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Leader: `peer` spoke, from data dir `incarnation`. A new data dir is a node that lost
    /// what it had: what the leader knew of its log (`matched` never decreases) is forgotten,
    /// or the leader would never send it the entries it no longer has.
    fn heard_from(&mut self, peer: NodeId, incarnation: u64) {
        let next = self.log.last_index() + 1;
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.incarnation != 0 && incarnation != pr.incarnation {
            ::log::warn!(
                "node {}: node {peer} now speaks from data dir {incarnation:x} (it was {:x}): it lost its data; catching it up from scratch, and it does not count until re-admitted",
                self.id,
                pr.incarnation
            );
            *pr = Progress::new(next);
        }
        pr.incarnation = incarnation;
        pr.heard_ticks = 0;
    }

    // ----- role transitions: each resets what it must -----

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.read_only.clear();
        self.transfer = None;
        self.reset_election_timer();
    }

    fn reset_election_timer(&mut self) {
        self.randomized_election_ticks = self
            .rng
            .gen_range(self.cfg.election_ticks_min..self.cfg.election_ticks_max);
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader: NodeId, why: &str) {
        let was = self.role;
        let old_term = self.term;
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if was != Role::Follower {
            ::log::info!("node {}: {was} -> follower in term {term} ({why})", self.id);
        } else if old_term != term {
            ::log::info!(
                "node {}: follower moves from term {old_term} to {term} ({why})",
                self.id
            );
        }
        if leader != 0 {
            ::log::info!("node {}: new leader node {leader} in term {term}", self.id);
        }
    }

    fn send(&mut self, to: NodeId, msg: RaftMessage) {
        self.messages.push(Envelope {
            from: self.id,
            to,
            incarnation: self.cfg.incarnation,
            msg,
        });
    }

    /// Queues a message that may leave only once the current `Ready` is durable.
    fn send_after_persist(&mut self, to: NodeId, msg: RaftMessage) {
        self.persisted_messages.push(Envelope {
            from: self.id,
            to,
            incarnation: self.cfg.incarnation,
            msg,
        });
    }

    /// Votes (or acknowledgements) needed among the voters of the configuration in effect.
    fn quorum(&self) -> usize {
        majority(self.membership.voter_count())
    }
}
