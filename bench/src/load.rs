//! Closed-loop load: N clients, each with exactly one request in flight, over a warm-up and
//! then a fixed measuring window. Only operations that both start and finish inside the
//! window count, so the warm-up's and the drain's requests never inflate the figures.

use crate::backend::{self, Conn, System};
use crate::latency::{Latencies, Summary};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Get,
    /// A linearizable read of 100 consecutive keys.
    Range,
    /// A transaction: if the key's value is not "x", put the new value, else read it.
    Txn,
    /// A lease keep-alive (each client keeps its own lease).
    Keepalive,
}

/// Keys a `range` reads.
pub const RANGE_KEYS: u32 = 100;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub op: Op,
    pub clients: usize,
    pub conns: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub keys: u32,
    pub value_bytes: usize,
    pub progress: bool,
    /// Watches of the whole key prefix opened on one member before the load (to measure what
    /// they cost writes); each counts the events it receives.
    pub watchers: usize,
    /// The watchers count events without decoding them (raftd only; see
    /// `backend::spawn_watchers`).
    pub watch_raw: bool,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub system: System,
    pub op: Op,
    pub clients: usize,
    pub window_secs: f64,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    #[serde(flatten)]
    pub latency: Summary,
    /// The last error seen, if any, so a failing run says why.
    pub last_error: Option<String>,
    /// With `--watchers`: how many there were, and the events they received in the window
    /// (all together, and per second).
    pub watchers: usize,
    pub watch_raw: bool,
    pub watch_events: u64,
    pub watch_events_per_sec: f64,
}

struct ClientResult {
    latencies: Latencies,
    errors: u64,
    last_error: Option<String>,
}

pub fn key_name(i: u32) -> String {
    format!("bench/{i:05}")
}

fn value_of(len: usize, rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn run(
    system: System,
    endpoints: &[SocketAddr],
    spec: &LoadSpec,
) -> Result<LoadReport, String> {
    let watch_events = Arc::new(AtomicU64::new(0));
    let watchers = backend::spawn_watchers(
        system,
        endpoints,
        spec.watchers,
        "bench/",
        watch_events.clone(),
        spec.watch_raw,
    )
    .await?;
    let conns = backend::connect(system, endpoints, spec.clients, spec.conns).await?;
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.window;
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let spec = spec.clone();
        let counter = completed.clone();
        tasks.push(tokio::spawn(client_loop(
            conn,
            spec,
            i as u64,
            window_start,
            window_end,
            counter,
        )));
    }
    let progress = spec.progress.then(|| {
        tokio::spawn(report_progress(
            system,
            spec.clone(),
            start,
            window_start,
            window_end,
            completed.clone(),
        ))
    });
    // The watchers' events in the window: counted at its start and end.
    let events_at_start = {
        let we = watch_events.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start).await;
            let at_start = we.load(Ordering::Relaxed);
            tokio::time::sleep_until(window_end).await;
            we.load(Ordering::Relaxed) - at_start
        })
    };
    let mut latencies = Latencies::default();
    let (mut errors, mut last_error) = (0, None);
    for t in tasks {
        let r = t.await.map_err(|e| format!("a client task failed: {e}"))?;
        latencies.merge(r.latencies);
        errors += r.errors;
        if r.last_error.is_some() {
            last_error = r.last_error;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let events_in_window = events_at_start.await.unwrap_or(0);
    for w in watchers {
        w.abort();
    }
    let secs = spec.window.as_secs_f64();
    let latency = latencies.summary();
    Ok(LoadReport {
        system,
        op: spec.op,
        clients: spec.clients,
        window_secs: secs,
        ops: latency.count,
        watchers: spec.watchers,
        watch_raw: spec.watch_raw,
        watch_events: events_in_window,
        watch_events_per_sec: events_in_window as f64 / secs,
        errors,
        ops_per_sec: latency.count as f64 / secs,
        latency,
        last_error,
    })
}

async fn client_loop(
    mut conn: Conn,
    spec: LoadSpec,
    index: u64,
    window_start: Instant,
    window_end: Instant,
    counter: Arc<AtomicU64>,
) -> ClientResult {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ index);
    let value = value_of(spec.value_bytes, &mut rng);
    let mut out = ClientResult {
        latencies: Latencies::default(),
        errors: 0,
        last_error: None,
    };
    loop {
        let began = Instant::now();
        if began >= window_end {
            return out;
        }
        let n = rng.gen_range(0..spec.keys.max(1));
        let key = key_name(n);
        let result = match spec.op {
            Op::Put => conn.put(&key, &value).await,
            Op::Get => conn.get(&key).await,
            Op::Range => {
                let first = n.min(spec.keys.saturating_sub(RANGE_KEYS));
                conn.range(&key_name(first), &key_name(first + RANGE_KEYS))
                    .await
            }
            Op::Txn => conn.txn(&key, &value).await,
            Op::Keepalive => conn.keepalive().await,
        };
        let ended = Instant::now();
        let counts = began >= window_start && ended <= window_end;
        match result {
            Ok(()) => {
                counter.fetch_add(1, Ordering::Relaxed);
                if counts {
                    out.latencies.record(ended - began);
                }
            }
            Err(e) => {
                if counts {
                    out.errors += 1;
                }
                out.last_error = Some(e);
                // Do not spin on a cluster that refuses everything.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One line a second on stderr: where the run is and the rate over the last second.
async fn report_progress(
    system: System,
    spec: LoadSpec,
    start: Instant,
    window_start: Instant,
    window_end: Instant,
    counter: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    loop {
        let now = tick.tick().await;
        let total = counter.load(Ordering::Relaxed);
        let phase = if now < window_start {
            "warm-up"
        } else if now <= window_end {
            "measuring"
        } else {
            "draining"
        };
        eprintln!(
            "[{system} {:?} x{}] {:>5.1}s {phase:<9} {:>8} ops/s",
            spec.op,
            spec.clients,
            (now - start).as_secs_f64(),
            total - last,
        );
        last = total;
    }
}
