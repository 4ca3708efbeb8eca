//! Failover: SIGKILL the leader while clients write, and time from the kill to the first
//! write that was sent after the kill and acknowledged. Writes acknowledged after the kill but
//! sent before it do not count: the old leader may have committed them before dying.

use crate::backend::{self, System};
use crate::load::key_name;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub system: System,
    pub killed: SocketAddr,
    pub killed_pid: i32,
    pub failover_ms: f64,
}

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

    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let conns = backend::connect(system, endpoints, writers, writers).await?;
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (killed_at, ack_tx) = (killed_at.clone(), ack_tx.clone());
        tasks.push(tokio::spawn(async move {
            let value = "v".repeat(256);
            let mut n = 0u32;
            loop {
                let sent = Instant::now();
                let sent_after_kill = killed_at.lock().await.is_some_and(|k| sent >= k);
                n = n.wrapping_add(1);
                let key = key_name((i as u32 * 1000 + n) % 10_000);
                match conn.put(&key, &value).await {
                    Ok(()) if sent_after_kill => {
                        let _ = ack_tx.send(Instant::now());
                        return;
                    }
                    Ok(()) => {
                        let _ = ack_tx.send(sent); // "writes flow", before the kill
                    }
                    // Retry at once: the client libraries pick the next member themselves.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }));
    }
    drop(ack_tx);

    // Let writes flow for a moment so the kill lands on a loaded leader.
    let flowing = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < 50 {
        match tokio::time::timeout_at(flowing, ack_rx.recv()).await {
            Ok(Some(_)) => seen += 1,
            _ => {
                abort_all(&tasks);
                return Err("writes did not flow before the kill".into());
            }
        }
    }
    let kill_time = {
        let mut guard = killed_at.lock().await;
        // SAFETY: kill(2) takes plain integers and has no memory effects on this process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc != 0 {
            abort_all(&tasks);
            return Err(format!(
                "kill -9 {pid} failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let now = Instant::now();
        *guard = Some(now);
        now
    };
    let deadline = kill_time + give_up;
    let result = loop {
        match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
            Ok(Some(t)) if t > kill_time => break Ok(t - kill_time),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break Err(format!("no write acknowledged within {give_up:?}")),
        }
    };
    abort_all(&tasks);
    let took = result?;
    Ok(FailoverReport {
        system,
        killed: leader,
        killed_pid: pid,
        failover_ms: took.as_secs_f64() * 1000.0,
    })
}

fn abort_all(tasks: &[tokio::task::JoinHandle<()>]) {
    for t in tasks {
        t.abort();
    }
}
