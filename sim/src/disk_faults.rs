//! Disk faults in the simulation, carried out as the daemon meets them (docs/STORAGE.md, "Disk
//! faults at run time"):
//! * a slow disk: every fsync of the node takes longer for a while;
//! * a full disk: syncs are refused for a while; the driver is told (`set_no_space`, as the
//!   daemon's log writer reports `NoSpace`), the held jobs are tried again every 250 ms and
//!   become durable once there is space (`SpaceBack`, then durable);
//! * a failing fsync: the node stops at its next sync, losing what was not synced (the daemon
//!   exits), and is started again by the schedule;
//! * a torn write: a crash lands part of the first unsynced batch in the log's bytes, in
//!   pieces (zeros in between), as pages reach a disk out of order at a power loss; the
//!   restart's recovery must drop exactly that batch;
//! * rot: a flipped bit in a synced batch that another batch follows; the restart's recovery
//!   must call it damage, and the node is repaired from the cluster as one that lost its disk
//!   (a new data dir identity, caught up as a learner and re-admitted).

use super::{Cluster, Event, Micros, NodeId, MS};
use raftd::driver::DiskJob;
use rand::Rng;

/// How often a write the full disk refused is tried again (the daemon's log writer's
/// `NO_SPACE_RETRY`).
pub const NO_SPACE_RETRY_US: Micros = 250 * MS;

/// One node's disk faults in effect.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    /// Until then, every fsync takes `slow_extra_us` longer.
    pub slow_until: Micros,
    pub slow_extra_us: Micros,
    /// Until then, the disk refuses writes.
    pub full_until: Micros,
    /// The driver was told the disk is full (and not yet that it has space again).
    pub no_space_reported: bool,
    /// The next fsync fails: the node stops, to be started again this long after.
    pub fsync_error: Option<Micros>,
}

/// Counters of disk faults met, for reports and tests.
#[derive(Debug, Clone, Default)]
pub struct DiskFaultStats {
    pub slow_syncs: u64,
    pub refused_syncs: u64,
    pub no_space_alarms: u64,
    pub fsync_errors: u64,
    pub torn_batches: u64,
    pub torn_tails_dropped: u64,
    pub rotted: u64,
    pub repaired: u64,
}

impl Cluster {
    /// Every fsync of `id` takes `extra` longer for `duration`.
    pub fn slow_disk(&mut self, id: NodeId, extra: Micros, duration: Micros) {
        let now = self.now;
        let f = &mut self.node_mut(id).disk_faults;
        f.slow_until = now + duration;
        f.slow_extra_us = extra;
    }

    /// `id`'s disk refuses writes for `duration`.
    pub fn disk_full(&mut self, id: NodeId, duration: Micros) {
        let now = self.now;
        let f = &mut self.node_mut(id).disk_faults;
        f.full_until = f.full_until.max(now + duration);
    }

    /// `id`'s next fsync fails, and the node stops; it is started again `restart_after`
    /// later (`take_disk_stops` tells the schedule).
    pub fn fsync_error(&mut self, id: NodeId, restart_after: Micros) {
        if self.node(id).is_up() {
            self.node_mut(id).disk_faults.fsync_error = Some(restart_after);
        }
    }

    /// Nodes a failed fsync stopped since the last call, with when to start them again.
    pub fn take_disk_stops(&mut self) -> Vec<(Micros, NodeId)> {
        std::mem::take(&mut self.disk_stops)
    }

    /// Every disk works again (the faults stop).
    pub fn clear_disk_faults(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            let f = &mut node.disk_faults;
            f.fsync_error = None;
            f.slow_until = f.slow_until.min(now);
            f.full_until = f.full_until.min(now);
        }
    }

    /// Crashes `id` with its first unsynced batch landing in its log's bytes in pieces.
    pub fn torn_crash(&mut self, id: NodeId) {
        if !self.node(id).is_up() {
            return;
        }
        let first = self.node(id).writes.front().map(|w| w.job.clone());
        if let Some(DiskJob::Append {
            hard_state,
            entries,
            ..
        }) = first
        {
            let batch = self
                .node(id)
                .disk
                .image
                .encode([(hard_state, &entries[..])])
                .unwrap_or_default();
            if !batch.is_empty() {
                let torn = self.tear(&batch);
                self.node_mut(id).disk.image.append_raw(&torn);
                self.disk_stats.torn_batches += 1;
            }
        }
        self.crash(id);
    }

    /// What of `batch` a power loss may leave: a prefix of its length, with runs of its pages
    /// (here: 1..64 bytes) never written (zeros), anywhere in it.
    fn tear(&mut self, batch: &[u8]) -> Vec<u8> {
        let len = self.rng.gen_range(1..=batch.len());
        let mut torn = batch[..len].to_vec();
        let holes = self
            .rng
            .gen_range(if len == batch.len() { 1 } else { 0 }..=3);
        for _ in 0..holes {
            let start = self.rng.gen_range(0..len);
            let end = (start + self.rng.gen_range(1..=64)).min(len);
            torn[start..end].fill(0);
        }
        torn
    }

    /// Crashes `id`, flips a bit in a synced batch of its log that another batch follows, and
    /// starts it again: recovery finds the damage and the node is repaired from the cluster.
    /// Nothing happens to a log of fewer than two batches (the last batch's rot cannot be
    /// told from a torn write, docs/STORAGE.md).
    pub fn bit_rot(&mut self, id: NodeId) {
        if self.node(id).is_up() {
            self.crash(id);
        }
        let offsets = self.node(id).disk.image.batch_offsets().to_vec();
        if offsets.len() >= 2 {
            let last = offsets[offsets.len() - 1];
            let at = self.rng.gen_range(offsets[0]..last);
            let bit = 1u8 << self.rng.gen_range(0..8);
            self.node_mut(id).disk.image.flip(at, bit);
            self.disk_stats.rotted += 1;
        }
        self.start(id);
    }

    /// The fsync latency for a job queued on `id` now.
    pub(super) fn sync_delay(&mut self, id: NodeId) -> Micros {
        let base = self.fsync_delay();
        let (until, extra) = {
            let f = &self.node(id).disk_faults;
            (f.slow_until, f.slow_extra_us)
        };
        if self.now < until {
            self.disk_stats.slow_syncs += 1;
            return base + extra;
        }
        base
    }

    /// A sync of `id` is due: false if a disk fault stopped it (the caller does nothing more).
    pub(super) fn sync_allowed(&mut self, id: NodeId) -> bool {
        if let Some(restart_after) = self.node(id).disk_faults.fsync_error {
            // The daemon stops with SyncFailed; what was not synced is gone.
            self.disk_stats.fsync_errors += 1;
            self.crash(id);
            self.disk_stops.push((self.now + restart_after, id));
            return false;
        }
        if self.now < self.node(id).disk_faults.full_until {
            self.disk_stats.refused_syncs += 1;
            if !self.node(id).disk_faults.no_space_reported {
                self.node_mut(id).disk_faults.no_space_reported = true;
                self.disk_stats.no_space_alarms += 1;
                if let Some(driver) = self.driver_mut(id) {
                    driver.set_no_space(true);
                }
                self.drive(id);
            }
            let incarnation = self.node(id).incarnation;
            self.schedule(
                NO_SPACE_RETRY_US,
                Event::SyncDone {
                    node: id,
                    incarnation,
                },
            );
            return false;
        }
        if self.node(id).disk_faults.no_space_reported {
            self.node_mut(id).disk_faults.no_space_reported = false;
            if let Some(driver) = self.driver_mut(id) {
                driver.set_no_space(false);
            }
        }
        true
    }

    /// At start: the log's bytes must recover to exactly what the disk holds, or be damaged
    /// (rot), in which case the node is repaired as one that lost its disk. Returns false if
    /// the disk was replaced.
    pub(super) fn recover_image(&mut self, id: NodeId) -> bool {
        let seed = self.cfg.seed;
        let snapshot = self.node(id).disk.snapshot.as_ref().map(|s| s.meta);
        let disk = &mut self.node_mut(id).disk;
        match disk.image.recover(snapshot) {
            Ok(r) => {
                assert_eq!(
                    (r.hard_state, &r.entries),
                    (disk.hard_state, &disk.entries),
                    "[seed {seed}] node {id}: its log's bytes recover another state than it synced"
                );
                if r.dropped_tail.is_some() {
                    self.disk_stats.torn_tails_dropped += 1;
                }
                true
            }
            Err(e) => {
                ::log::warn!("[seed {seed}] node {id} refuses its data dir ({e}); repairing it from the cluster");
                self.disk_stats.repaired += 1;
                self.replace_disk(id);
                false
            }
        }
    }
}
