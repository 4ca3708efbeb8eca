//! Filling a cluster: `puts` writes over `keys` distinct keys (key i, then overwrites from key 0
//! again once every key exists) by `clients` closed-loop clients, timing each tenth of the load.
//! The scale mode of scripts/bench-vs-etcd.sh runs it to see whether a store slows down as it
//! fills: the last tenth's rate against the first's.

use crate::backend::{self, Conn, System};
use crate::latency::{Latencies, Summary};
use crate::load::key_name;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct FillSpec {
    pub keys: u64,
    pub puts: u64,
    pub clients: usize,
    pub conns: usize,
    pub value_bytes: usize,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct FillReport {
    pub system: System,
    pub fill_keys: u64,
    pub puts: u64,
    pub clients: usize,
    pub secs: f64,
    pub ops_per_sec: f64,
    /// Puts per second in each tenth of the load, in order.
    pub tenths_ops_per_sec: Vec<f64>,
    /// The last tenth's rate over the first's.
    pub last_over_first: f64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// The longest time in which no put was acknowledged (a stall), in seconds.
    pub longest_stall_secs: f64,
    #[serde(flatten)]
    pub latency: Summary,
}

pub async fn run(
    system: System,
    endpoints: &[SocketAddr],
    spec: &FillSpec,
) -> Result<FillReport, String> {
    let conns = backend::connect(system, endpoints, spec.clients, spec.conns).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    // When each tenth of the puts had been acknowledged.
    let marks = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (next, done, marks, spec) = (next.clone(), done.clone(), marks.clone(), spec.clone());
        tasks.push(tokio::spawn(client(
            conn, i as u64, spec, next, done, marks,
        )));
    }
    let stall_ms = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (done, spec, stall_ms) = (done.clone(), spec.clone(), stall_ms.clone());
        tokio::spawn(async move { watch_progress(system, spec, start, done, stall_ms).await })
    };
    let mut latencies = Latencies::default();
    let (mut errors, mut last_error) = (0, None);
    for t in tasks {
        let (l, e, le) = t.await.map_err(|e| format!("a client task failed: {e}"))?;
        latencies.merge(l);
        errors += e;
        if le.is_some() {
            last_error = le;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    watcher.abort();
    let longest_stall_secs = stall_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let marks = marks.lock().map_err(|_| "poisoned")?.clone();
    let tenth = (spec.puts / 10).max(1) as f64;
    let mut tenths = Vec::new();
    let mut prev = start;
    for m in &marks {
        tenths.push(tenth / (*m - prev).as_secs_f64().max(1e-9));
        prev = *m;
    }
    let last_over_first = match (tenths.first(), tenths.last()) {
        (Some(f), Some(l)) if *f > 0.0 => l / f,
        _ => 0.0,
    };
    Ok(FillReport {
        system,
        fill_keys: spec.keys,
        puts: spec.puts,
        clients: spec.clients,
        secs,
        ops_per_sec: spec.puts as f64 / secs,
        tenths_ops_per_sec: tenths,
        last_over_first,
        errors,
        last_error,
        longest_stall_secs,
        latency: latencies.summary(),
    })
}

async fn client(
    mut conn: Conn,
    index: u64,
    spec: FillSpec,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    marks: Arc<Mutex<Vec<Instant>>>,
) -> (Latencies, u64, Option<String>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf111 ^ index);
    let (mut latencies, mut errors, mut last_error) = (Latencies::default(), 0, None);
    let tenth = (spec.puts / 10).max(1);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= spec.puts {
            return (latencies, errors, last_error);
        }
        let key = key_name((i % spec.keys.max(1)) as u32);
        let value: String = (0..spec.value_bytes)
            .map(|_| (b'a' + rng.gen_range(0..26u8)) as char)
            .collect();
        let began = Instant::now();
        // A put that fails (a leader change) is tried again: the load is a fixed set of puts.
        loop {
            match conn.put(&key, &value).await {
                Ok(()) => break,
                Err(e) => {
                    errors += 1;
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        latencies.record(began.elapsed());
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(tenth) && n / tenth <= 10 {
            if let Ok(mut m) = marks.lock() {
                m.push(Instant::now());
            }
        }
    }
}

/// A line every 5 s on stderr (with `progress`), and the longest time with no put acknowledged
/// (in `stall_ms`, to 100 ms).
async fn watch_progress(
    system: System,
    spec: FillSpec,
    start: Instant,
    done: Arc<AtomicU64>,
    stall_ms: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval_at(
        start + Duration::from_millis(100),
        Duration::from_millis(100),
    );
    let (mut last, mut last_change, mut since_print) = (0, start, 0u32);
    let mut printed = 0;
    loop {
        let now = tick.tick().await;
        let n = done.load(Ordering::Relaxed);
        if n != last {
            let stall = (now - last_change).as_millis() as u64;
            stall_ms.fetch_max(stall.saturating_sub(100), Ordering::Relaxed);
            last = n;
            last_change = now;
        }
        since_print += 1;
        if spec.progress && since_print >= 50 {
            since_print = 0;
            eprintln!(
                "[{system} fill x{}] {:>6.0}s {:>9} puts ({:.0}/s over the last 5 s)",
                spec.clients,
                (now - start).as_secs_f64(),
                n,
                (n - printed) as f64 / 5.0
            );
            printed = n;
        }
    }
}
