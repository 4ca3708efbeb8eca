//! The log writer: the thread that owns the node's `Storage` and makes the driver's disk jobs
//! durable, so the node loop never touches a file or waits for the disk.
//!
//! The node loop queues every `DiskJob` the driver hands out, in order, and goes on. The writer
//! takes every job queued by the time it is free: the appends among them go to the log with one
//! write and one fdatasync (group commit: while one fsync runs, the next batch gathers), a
//! snapshot job is carried out in its place in the order (the appends before it first), so the
//! log is never rewritten behind a queued write. After each batch it reports the highest
//! sequence number now durable. It is the only code that touches the storage at run time.

use crate::driver::DiskJob;
use crate::rpc::types::{Entry, HardState};
use crate::storage::{PreparedSnapshot, Storage, StorageError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc;

/// What the writer does with a job: the driver's, with the daemon's file for a snapshot it
/// prepared in the background.
pub enum WriteJob {
    /// One of the driver's jobs as it is (a `SaveSnapshot` then writes its file here).
    Driver(DiskJob),
    /// The driver's `SaveSnapshot` job `seq`, whose file `prepared` was written and synced in
    /// the background: only the rename and the log compaction are left.
    SavePrepared {
        seq: u64,
        prepared: PreparedSnapshot,
        tail: Vec<Entry>,
    },
    /// A prepared snapshot file that will not be used.
    DiscardPrepared(PreparedSnapshot),
}

/// What the writer tells the node loop.
#[derive(Debug)]
pub enum Report {
    /// Every job up to this sequence number is durable.
    Durable(u64),
    /// The disk is full: the writer is holding the jobs it could not write and tries them
    /// again every `NO_SPACE_RETRY` (nothing of them is on disk; none was acknowledged).
    NoSpace(String),
    /// There was space again and the held jobs were written (a `Durable` follows).
    SpaceBack,
    /// A snapshot was stored (and is durable): its data, mapped from its file, to hold
    /// instead of the copy in memory.
    SnapshotStored(crate::rpc::types::SnapshotMeta, bytes::Bytes),
}

/// How often the writer tries a write the full disk refused again.
pub const NO_SPACE_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// How often an idle writer looks in on a log being rewritten in the background.
const REWRITE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

pub struct LogWriter {
    jobs: Option<std_mpsc::Sender<WriteJob>>,
    /// Reports after each batch, or the error that stopped the writer (after which it writes
    /// nothing more).
    done: mpsc::UnboundedReceiver<Result<Report, StorageError>>,
    /// Set when the node stops: a writer waiting for space gives up instead of holding the
    /// process.
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread; it owns `storage` from now on.
    pub fn start(
        storage: Storage,
        node_id: u64,
        metrics: Arc<super::metrics::Metrics>,
    ) -> std::io::Result<LogWriter> {
        let mut storage = storage;
        // A snapshot's log rewrite must not hold this node's appends.
        storage.set_background_compaction(Some(crate::storage::BACKGROUND_REWRITE_MIN));
        let (jobs_tx, jobs_rx) = std_mpsc::channel::<WriteJob>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let closing = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            node_id,
            storage,
            done: done_tx,
            closing: closing.clone(),
            no_space: false,
            metrics,
            stored_snapshot: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("raftd-wal-{node_id}"))
            .spawn(move || writer.run(&jobs_rx))?;
        Ok(LogWriter {
            jobs: Some(jobs_tx),
            done: done_rx,
            closing,
            thread: Some(thread),
        })
    }

    pub fn queue(&mut self, job: WriteJob) {
        // A send fails only if the writer thread ended, which it does after reporting an error
        // (or a panic); `report()` returns that error, which stops the node.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Waits for the writer's next report.
    pub async fn report(&mut self) -> Result<Report, StorageError> {
        match self.done.recv().await {
            Some(result) => result,
            None => Err(StorageError::WriterGone),
        }
    }

    /// Tells a writer that waits for disk space to give up (the node is stopping).
    pub fn give_up_waiting_for_space(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        self.jobs = None;
        self.closing.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Writer {
    node_id: u64,
    storage: Storage,
    done: mpsc::UnboundedSender<Result<Report, StorageError>>,
    closing: Arc<AtomicBool>,
    /// The last write was refused for lack of space (reported, not yet written).
    no_space: bool,
    metrics: Arc<super::metrics::Metrics>,
    /// The batch being written stored a snapshot.
    stored_snapshot: bool,
}

impl Writer {
    fn run(mut self, jobs: &std_mpsc::Receiver<WriteJob>) {
        loop {
            let first = if self.storage.background_compaction_pending() {
                // Look in on the log being rewritten while waiting for jobs.
                match jobs.recv_timeout(REWRITE_POLL) {
                    Ok(job) => job,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.storage.finish_background_compaction(false) {
                            let _ = self.done.send(Err(e));
                            return;
                        }
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            batch.extend(jobs.try_iter());
            let result = self
                .write_batch(batch)
                .and_then(|seq| {
                    self.storage.finish_background_compaction(false)?;
                    Ok(seq)
                })
                .map(Report::Durable);
            let wal = self.storage.wal_bytes();
            self.metrics.wal_bytes.set(super::metrics::g(wal));
            self.metrics.snapshot_bytes.set(super::metrics::g(
                self.storage.disk_usage().saturating_sub(wal),
            ));
            let failed = result.is_err();
            if self.done.send(result).is_err() || failed {
                return;
            }
            if self.stored_snapshot {
                // After `Durable`, so the node has handed the snapshot to its core by then.
                match self.storage.map_snapshot() {
                    Ok(Some((meta, data))) => {
                        let _ = self.done.send(Ok(Report::SnapshotStored(meta, data)));
                    }
                    Ok(None) => {}
                    // The node keeps the copy it has in memory.
                    Err(e) => ::log::warn!(
                        "node {}: cannot map the snapshot file ({e}); keeping it in memory",
                        self.node_id
                    ),
                }
            }
        }
        // Stopping: let a log rewritten in the background take over (leaving it would be safe
        // too: the next start finishes the compaction itself).
        if let Err(e) = self.storage.finish_background_compaction(true) {
            ::log::warn!(
                "node {}: the log rewritten after the last snapshot did not take over ({e}); the next start compacts it",
                self.node_id
            );
        }
    }

    /// Makes one batch durable, in order; returns the highest sequence number in it.
    fn write_batch(&mut self, batch: Vec<WriteJob>) -> Result<u64, StorageError> {
        let mut last = 0;
        self.stored_snapshot = false;
        // Consecutive appends, written together with one fsync.
        let mut appends: Vec<(Option<HardState>, Vec<Entry>)> = Vec::new();
        for job in batch {
            match job {
                WriteJob::Driver(DiskJob::Append {
                    seq,
                    hard_state,
                    entries,
                }) => {
                    last = last.max(seq);
                    appends.push((hard_state, entries));
                }
                WriteJob::Driver(DiskJob::InstallSnapshot {
                    seq,
                    hard_state,
                    snapshot,
                    tail,
                }) => {
                    self.flush(&mut appends)?;
                    let started = std::time::Instant::now();
                    self.until_written(|storage| {
                        let hs = hard_state.unwrap_or(storage.hard_state());
                        storage.save_snapshot(snapshot.meta, &snapshot.data, &tail, hs)
                    })?;
                    self.stored_snapshot = true;
                    let event = super::metrics::SnapshotLabels { event: "installed" };
                    self.metrics.snapshots.get_or_create(&event).inc();
                    self.metrics
                        .snapshot_seconds
                        .get_or_create(&event)
                        .observe(started.elapsed().as_secs_f64());
                    last = last.max(seq);
                }
                WriteJob::Driver(DiskJob::SaveSnapshot {
                    seq,
                    snapshot,
                    tail,
                }) => {
                    // A snapshot the node loop did not prepare a file for: write it here.
                    self.flush(&mut appends)?;
                    self.until_written(|storage| {
                        let hs = storage.hard_state();
                        storage.save_snapshot(snapshot.meta, &snapshot.data, &tail, hs)
                    })?;
                    self.stored_snapshot = true;
                    last = last.max(seq);
                }
                WriteJob::SavePrepared {
                    seq,
                    prepared,
                    tail,
                } => {
                    self.flush(&mut appends)?;
                    let started = std::time::Instant::now();
                    let index = prepared.meta().index;
                    self.until_written(|storage| {
                        if storage.snapshot_meta() == Some(prepared.meta()) {
                            // The file was installed before the disk filled up: only the log
                            // rewrite is left.
                            return storage.finish_compaction(&tail);
                        }
                        let hs = storage.hard_state();
                        storage.save_prepared_snapshot(&prepared, &tail, hs)
                    })?;
                    self.stored_snapshot = true;
                    ::log::info!(
                        "node {}: log compacted to index {index}; data dir now {} bytes (the log writer spent {:.1} ms on it)",
                        self.node_id,
                        self.storage.disk_usage(),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    last = last.max(seq);
                }
                WriteJob::DiscardPrepared(prepared) => {
                    self.storage.discard_prepared_snapshot(prepared)
                }
            }
        }
        self.flush(&mut appends)?;
        Ok(last)
    }

    fn flush(
        &mut self,
        appends: &mut Vec<(Option<HardState>, Vec<Entry>)>,
    ) -> Result<(), StorageError> {
        if appends.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.until_written(|storage| {
            storage.save_batch(appends.iter().map(|(hs, e)| (*hs, e.as_slice())))
        })?;
        self.metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        appends.clear();
        Ok(())
    }

    /// Runs `write` until it does not fail for lack of space: a full disk is reported once,
    /// then the same write is tried again every `NO_SPACE_RETRY` (it changed nothing), and
    /// `SpaceBack` is reported when it goes through. Any other error is returned.
    fn until_written(
        &mut self,
        mut write: impl FnMut(&mut Storage) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        loop {
            match write(&mut self.storage) {
                Err(e) if e.is_no_space() => {
                    if !self.no_space {
                        self.no_space = true;
                        ::log::error!("node {}: {e}", self.node_id);
                        let _ = self.done.send(Ok(Report::NoSpace(e.to_string())));
                    }
                    if self.closing.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                    std::thread::sleep(NO_SPACE_RETRY);
                }
                result => {
                    if result.is_ok() && self.no_space {
                        self.no_space = false;
                        ::log::warn!(
                            "node {}: the disk has space again; the writes it refused are durable now",
                            self.node_id
                        );
                        let _ = self.done.send(Ok(Report::SpaceBack));
                    }
                    return result;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::types::{Snapshot, SnapshotMeta};
    use crate::storage::prepare_snapshot;

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range
            .map(|i| Entry::command(term, i, format!("e{i}").into_bytes()))
            .collect()
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        Snapshot {
            membership: Default::default(),
            meta: SnapshotMeta { index, term },
            data: bytes::Bytes::copy_from_slice(data),
        }
    }

    /// Waits for reports until `seq` is durable.
    async fn durable_through(w: &mut LogWriter, seq: u64) {
        let mut done = 0;
        while done < seq {
            if let Report::Durable(n) = w.report().await.expect("no storage error") {
                done = done.max(n);
            }
        }
    }

    #[tokio::test]
    async fn snapshot_jobs_are_carried_out_in_their_place_between_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), 1).unwrap();
        let mut w = LogWriter::start(storage, 1, Default::default()).unwrap();
        let hs = HardState { term: 2, vote: 1 };
        // Appends 1..=5, the leader's snapshot at 3 keeping 4..=5, then 6: queued back to back,
        // so the writer may take them in one batch or several; the result must be the same.
        w.queue(WriteJob::Driver(DiskJob::Append {
            seq: 1,
            hard_state: Some(hs),
            entries: entries(2, 1..=5),
        }));
        w.queue(WriteJob::Driver(DiskJob::InstallSnapshot {
            seq: 2,
            hard_state: None,
            snapshot: snapshot(3, 2, b"state at 3"),
            tail: entries(2, 4..=5),
        }));
        w.queue(WriteJob::Driver(DiskJob::Append {
            seq: 3,
            hard_state: None,
            entries: entries(2, 6..=6),
        }));
        durable_through(&mut w, 3).await;
        drop(w);
        let (_, recovered) = Storage::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.hard_state, hs);
        assert_eq!(recovered.snapshot, Some(snapshot(3, 2, b"state at 3")));
        assert_eq!(recovered.entries, entries(2, 4..=6));
    }

    /// A writer that was given entries 1..=4 (seq 1), then the snapshot at 2 keeping 3..=4,
    /// encoded and written under the temporary name elsewhere as the node loop does (seq 2).
    fn log_then_prepared_snapshot() -> (tempfile::TempDir, LogWriter, SnapshotMeta) {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), 1).unwrap();
        let mut w = LogWriter::start(storage, 1, Default::default()).unwrap();
        w.queue(WriteJob::Driver(DiskJob::Append {
            seq: 1,
            hard_state: Some(HardState { term: 1, vote: 1 }),
            entries: entries(1, 1..=4),
        }));
        let meta = SnapshotMeta { index: 2, term: 1 };
        let prepared = prepare_snapshot(dir.path(), meta, b"state at 2").unwrap();
        w.queue(WriteJob::SavePrepared {
            seq: 2,
            prepared,
            tail: entries(1, 3..=4),
        });
        (dir, w, meta)
    }

    #[tokio::test]
    async fn a_stored_snapshot_is_reported_mapped_from_its_file_after_it_is_durable() {
        let (dir, mut w, meta) = log_then_prepared_snapshot();
        let mut durable = 0;
        let (got_meta, data) = loop {
            match w.report().await.expect("no storage error") {
                Report::Durable(n) => durable = durable.max(n),
                Report::SnapshotStored(m, d) => break (m, d),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(durable, 2, "reported after the job is durable");
        assert_eq!(got_meta, meta);
        assert_eq!(&data[..], b"state at 2");
        // The mapping stays good after the next snapshot replaces the file by rename.
        let next =
            prepare_snapshot(dir.path(), SnapshotMeta { index: 4, term: 1 }, b"at 4").unwrap();
        w.queue(WriteJob::SavePrepared {
            seq: 3,
            prepared: next,
            tail: Vec::new(),
        });
        durable_through(&mut w, 3).await;
        assert_eq!(&data[..], b"state at 2");
    }

    #[tokio::test]
    async fn a_prepared_snapshot_is_installed_by_the_writer_and_a_stale_one_discarded() {
        let (dir, mut w, meta) = log_then_prepared_snapshot();
        durable_through(&mut w, 2).await;
        // A second one that will not be used is removed, and nothing else changes.
        let stale = prepare_snapshot(dir.path(), meta, b"unused").unwrap();
        w.queue(WriteJob::DiscardPrepared(stale));
        w.queue(WriteJob::Driver(DiskJob::Append {
            seq: 3,
            hard_state: None,
            entries: entries(1, 5..=5),
        }));
        durable_through(&mut w, 3).await;
        drop(w);
        assert!(!dir
            .path()
            .join(crate::storage::SNAPSHOT_PREPARED_FILE_NAME)
            .exists());
        let (_, recovered) = Storage::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.snapshot, Some(snapshot(2, 1, b"state at 2")));
        assert_eq!(recovered.entries, entries(1, 3..=5));
    }
}
