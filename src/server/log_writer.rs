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
