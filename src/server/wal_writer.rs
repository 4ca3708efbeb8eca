//! The log writer: a thread of its own that writes and fsyncs what the node loop hands it, so
//! the node loop never waits for the disk.
//!
//! The node loop queues one write per `Ready` and goes on stepping messages and requests. The
//! writer takes every write queued by the time it is free and makes them durable with one
//! write and one fdatasync (group commit): while one fsync runs, the next batch gathers. It
//! reports back the sequence number of the last write of each batch; writes become durable in
//! the order they were queued.

use crate::rpc::types::{Entry, HardState};
use crate::storage::{Storage, StorageError};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::mpsc;

struct WriteJob {
    seq: u64,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

pub struct WalWriter {
    storage: Arc<Mutex<Storage>>,
    jobs: Option<std_mpsc::Sender<WriteJob>>,
    /// The highest sequence number durable after each batch, or the error that stopped the
    /// writer (after which it writes nothing more).
    done: mpsc::UnboundedReceiver<Result<u64, StorageError>>,
    thread: Option<JoinHandle<()>>,
    /// Sequence number of the last write queued.
    last_queued: u64,
    /// Sequence number of the last write known durable.
    last_durable: u64,
}

impl WalWriter {
    pub fn start(storage: Storage, node_id: u64) -> std::io::Result<WalWriter> {
        let storage = Arc::new(Mutex::new(storage));
        let (jobs_tx, jobs_rx) = std_mpsc::channel::<WriteJob>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let shared = storage.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raftd-wal-{node_id}"))
            .spawn(move || write_loop(&shared, &jobs_rx, &done_tx))?;
        Ok(WalWriter {
            storage,
            jobs: Some(jobs_tx),
            done: done_rx,
            thread: Some(thread),
            last_queued: 0,
            last_durable: 0,
        })
    }

    /// Queues a write; returns its sequence number.
    pub fn queue(&mut self, hard_state: Option<HardState>, entries: Vec<Entry>) -> u64 {
        self.last_queued += 1;
        let job = WriteJob {
            seq: self.last_queued,
            hard_state,
            entries,
        };
        // A send fails only if the writer thread ended, which it does after reporting an error
        // (or a panic); `durable()` returns that error, which stops the node.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
        self.last_queued
    }

    pub fn last_queued(&self) -> u64 {
        self.last_queued
    }

    pub fn idle(&self) -> bool {
        self.last_durable == self.last_queued
    }

    /// Waits for the writer's next report: the sequence number now durable.
    pub async fn durable(&mut self) -> Result<u64, StorageError> {
        match self.done.recv().await {
            Some(Ok(seq)) => {
                self.last_durable = self.last_durable.max(seq);
                Ok(seq)
            }
            Some(Err(e)) => Err(e),
            None => Err(StorageError::WriterGone),
        }
    }

    /// The storage, for what the node loop does itself (snapshots). Call only when `idle()`,
    /// so that nothing queued is written behind a compaction's back.
    pub fn storage(&self) -> MutexGuard<'_, Storage> {
        // The writer thread never panics while holding the lock (errors are returned), and if
        // it did, the data under it is still the last consistent state.
        self.storage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(
    storage: &Mutex<Storage>,
    jobs: &std_mpsc::Receiver<WriteJob>,
    done: &mpsc::UnboundedSender<Result<u64, StorageError>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let last = batch.last().map_or(0, |j| j.seq);
        let result = {
            let mut storage = storage.lock().unwrap_or_else(|p| p.into_inner());
            storage.save_batch(batch.iter().map(|j| (j.hard_state, j.entries.as_slice())))
        };
        let failed = result.is_err();
        if done.send(result.map(|()| last)).is_err() || failed {
            return;
        }
    }
}
