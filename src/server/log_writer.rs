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
use std::sync::mpsc as std_mpsc;
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

pub struct LogWriter {
    jobs: Option<std_mpsc::Sender<WriteJob>>,
    /// The highest sequence number durable after each batch, or the error that stopped the
    /// writer (after which it writes nothing more).
    done: mpsc::UnboundedReceiver<Result<u64, StorageError>>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread; it owns `storage` from now on.
    pub fn start(storage: Storage, node_id: u64) -> std::io::Result<LogWriter> {
        let (jobs_tx, jobs_rx) = std_mpsc::channel::<WriteJob>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("raftd-wal-{node_id}"))
            .spawn(move || write_loop(node_id, storage, &jobs_rx, &done_tx))?;
        Ok(LogWriter {
            jobs: Some(jobs_tx),
            done: done_rx,
            thread: Some(thread),
        })
    }

    pub fn queue(&mut self, job: WriteJob) {
        // A send fails only if the writer thread ended, which it does after reporting an error
        // (or a panic); `durable()` returns that error, which stops the node.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Waits for the writer's next report: the sequence number now durable.
    pub async fn durable(&mut self) -> Result<u64, StorageError> {
        match self.done.recv().await {
            Some(result) => result,
            None => Err(StorageError::WriterGone),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(
    node_id: u64,
    mut storage: Storage,
    jobs: &std_mpsc::Receiver<WriteJob>,
    done: &mpsc::UnboundedSender<Result<u64, StorageError>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = write_batch(node_id, &mut storage, batch);
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// Makes one batch durable, in order; returns the highest sequence number in it.
fn write_batch(
    node_id: u64,
    storage: &mut Storage,
    batch: Vec<WriteJob>,
) -> Result<u64, StorageError> {
    let mut last = 0;
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
                flush(storage, &mut appends)?;
                let hs = hard_state.unwrap_or(storage.hard_state());
                storage.save_snapshot(snapshot.meta, &snapshot.data, &tail, hs)?;
                last = last.max(seq);
            }
            WriteJob::Driver(DiskJob::SaveSnapshot {
                seq,
                snapshot,
                tail,
            }) => {
                // A snapshot the node loop did not prepare a file for: write it here.
                flush(storage, &mut appends)?;
                let hs = storage.hard_state();
                storage.save_snapshot(snapshot.meta, &snapshot.data, &tail, hs)?;
                last = last.max(seq);
            }
            WriteJob::SavePrepared {
                seq,
                prepared,
                tail,
            } => {
                flush(storage, &mut appends)?;
                let started = std::time::Instant::now();
                let index = prepared.meta().index;
                let hs = storage.hard_state();
                storage.save_prepared_snapshot(prepared, &tail, hs)?;
                ::log::info!(
                    "node {node_id}: log compacted to index {index}; data dir now {} bytes (the log writer spent {:.1} ms on it)",
                    storage.disk_usage(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                last = last.max(seq);
            }
            WriteJob::DiscardPrepared(prepared) => storage.discard_prepared_snapshot(prepared),
        }
    }
    flush(storage, &mut appends)?;
    Ok(last)
}

fn flush(
    storage: &mut Storage,
    appends: &mut Vec<(Option<HardState>, Vec<Entry>)>,
) -> Result<(), StorageError> {
    if appends.is_empty() {
        return Ok(());
    }
    let result = storage.save_batch(appends.iter().map(|(hs, e)| (*hs, e.as_slice())));
    appends.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::types::{Snapshot, SnapshotMeta};
    use crate::storage::prepare_snapshot;
    use std::sync::Arc;

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range
            .map(|i| Entry::command(term, i, format!("e{i}").into_bytes()))
            .collect()
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        Snapshot {
            membership: Default::default(),
            meta: SnapshotMeta { index, term },
            data: Arc::new(data.to_vec()),
        }
    }

    /// Waits for reports until `seq` is durable.
    async fn durable_through(w: &mut LogWriter, seq: u64) {
        let mut done = 0;
        while done < seq {
            done = done.max(w.durable().await.expect("no storage error"));
        }
    }

    #[tokio::test]
    async fn snapshot_jobs_are_carried_out_in_their_place_between_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), 1).unwrap();
        let mut w = LogWriter::start(storage, 1).unwrap();
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

    #[tokio::test]
    async fn a_prepared_snapshot_is_installed_by_the_writer_and_a_stale_one_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), 1).unwrap();
        let mut w = LogWriter::start(storage, 1).unwrap();
        w.queue(WriteJob::Driver(DiskJob::Append {
            seq: 1,
            hard_state: Some(HardState { term: 1, vote: 1 }),
            entries: entries(1, 1..=4),
        }));
        // Encoded and written under the temporary name elsewhere, as the node loop does.
        let meta = SnapshotMeta { index: 2, term: 1 };
        let prepared = prepare_snapshot(dir.path(), meta, b"state at 2").unwrap();
        w.queue(WriteJob::SavePrepared {
            seq: 2,
            prepared,
            tail: entries(1, 3..=4),
        });
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
