//! Failover: SIGKILL the leader while clients write, and time from the kill to the first
//! write that was sent after the kill and acknowledged.
//!
//! Writes in flight at the kill may hang until their client's timeout (an etcd follower that
//! forwarded a proposal to the dead leader answers only after its request timeout), which
//! would measure the timeout, not the cluster. So from the kill on, a fresh probe write starts
//! every 10 ms on its own connection, as new requests from many users would; the first probe
//! acknowledged ends the measurement. Writes sent before the kill never count: the old leader
//! may have committed them before it died.

use crate::backend::{self, System};
use crate::load::key_name;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub system: System,
    pub killed: SocketAddr,
    pub killed_pid: i32,
    pub failover_ms: f64,
    pub probes_sent: usize,
}

const PROBE_EVERY: Duration = Duration::from_millis(10);

/// `pid_file` names the file holding the pid of the member serving a client port, with
/// `{port}` standing for the port (scripts/bench-vs-etcd.sh writes them).
pub async fn run(
    system: System,
    endpoints: &[SocketAddr],
    pid_file: &str,
    writers: usize,
    give_up: Duration,
) -> Result<FailoverReport, String> {
    let leader = backend::find_leader(system, endpoints).await?;
    let path = pid_file.replace("{port}", &leader.port().to_string());
    let pid: i32 = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading the leader's pid file {path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("pid file {path} does not hold a pid: {e}"))?;

    // Background writers keep the leader loaded up to the kill (and the cluster after it).
    let mut tasks = JoinSet::new();
    let (flow_tx, mut flow_rx) = mpsc::unbounded_channel::<()>();
    let value = "v".repeat(256);
    for (i, mut conn) in backend::connect(system, endpoints, writers, writers)
        .await?
        .into_iter()
        .enumerate()
    {
        let (flow_tx, value) = (flow_tx.clone(), value.clone());
        tasks.spawn(async move {
            for n in 0u32.. {
                let key = key_name((i as u32 * 1000 + n) % 10_000);
                match conn.put(&key, &value).await {
                    Ok(()) => {
                        let _ = flow_tx.send(());
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    drop(flow_tx);
    let flowing = Instant::now() + Duration::from_secs(10);
    for _ in 0..50 {
        if !matches!(
            tokio::time::timeout_at(flowing, flow_rx.recv()).await,
            Ok(Some(()))
        ) {
            return Err("writes did not flow before the kill".into());
        }
    }

    // Probe connections are made before the kill so that setting them up is not timed.
    let max_probes = (give_up.as_millis() / PROBE_EVERY.as_millis()).max(1) as usize;
    let probes = backend::connect(system, endpoints, max_probes, writers).await?;

    // SAFETY: kill(2) takes plain integers and has no memory effects on this process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!(
            "kill -9 {pid} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let killed_at = Instant::now();
    let deadline = killed_at + give_up;
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Instant>();
    let mut probes = probes.into_iter().enumerate();
    let mut sent = 0;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let acked = loop {
        tokio::select! {
            Some(t) = ack_rx.recv() => break Ok(t),
            _ = tick.tick() => {
                if Instant::now() >= deadline {
                    break Err(format!("no write acknowledged within {give_up:?} of the kill"));
                }
                if let Some((n, mut conn)) = probes.next() {
                    sent += 1;
                    let (ack_tx, value) = (ack_tx.clone(), value.clone());
                    tasks.spawn(async move {
                        if conn.put(&key_name(n as u32 % 10_000), &value).await.is_ok() {
                            let _ = ack_tx.send(Instant::now());
                        }
                        std::future::pending::<()>().await;
                    });
                }
            }
        }
    };
    tasks.abort_all();
    let acked = acked?;
    Ok(FailoverReport {
        system,
        killed: leader,
        killed_pid: pid,
        failover_ms: (acked - killed_at).as_secs_f64() * 1000.0,
        probes_sent: sent,
    })
}
