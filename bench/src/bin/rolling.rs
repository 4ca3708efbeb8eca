//! `raftd-rolling`: the cost of a rolling restart to writers.
//!
//! Starts 3 `raftd` processes on loopback (authenticated by a cluster secret, as the launcher
//! does), keeps writers putting back to back, and restarts every node in turn with SIGTERM,
//! waiting for each to be back before the next. Reports, per restart, whether the node led and
//! the longest a single write took while the node was stopping and starting again. With
//! `--no-handover` the nodes are started with that flag (a stopping leader does not transfer
//! leadership first), which is how raftd stopped before leadership transfer.
//!
//! ```text
//! raftd-rolling --raftd target/release/raftd [--no-handover] [--rounds 3] [--writers 4]
//! ```
//! One JSON object per restart on stdout, then a summary object.

use clap::Parser;
use raftd::client::{Client, ClientOptions};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "raftd-rolling",
    about = "Time writes through a rolling SIGTERM restart"
)]
struct Args {
    /// The raftd binary.
    #[arg(long)]
    raftd: PathBuf,
    /// Start the nodes with --no-handover (stop without transferring leadership).
    #[arg(long)]
    no_handover: bool,
    /// Rolling restarts of all three nodes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Writers putting back to back.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

struct Node {
    id: u64,
    addr: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, raftd: &PathBuf) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let child = Command::new(raftd)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", raftd.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on a child we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

/// One acknowledged write: when it was sent and how long it took.
type Write = (Instant, Duration);

async fn writer(
    addrs: Vec<SocketAddr>,
    id: usize,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Write>>>,
) {
    let mut client = Client::new(
        addrs,
        ClientOptions {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    );
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        if client.put(&format!("w{id}"), &n.to_string()).await.is_ok() {
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t, t.elapsed()));
        }
        n += 1;
    }
}

async fn status(addr: SocketAddr) -> Option<raftd::rpc::types::StatusResponse> {
    let mut c = Client::new(vec![addr], ClientOptions::default());
    tokio::time::timeout(Duration::from_secs(1), c.status_of(addr))
        .await
        .ok()?
        .ok()
}

async fn run(args: Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("raftd-rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret).map_err(|e| e.to_string())?;
    let ports = free_ports(3)?;
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let id = i as u64 + 1;
            let peers: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("{}={}", j + 1, addrs[j]))
                .collect();
            let mut a = vec![
                "--id".to_string(),
                id.to_string(),
                "--listen".into(),
                addrs[i].to_string(),
                "--peers".into(),
                peers.join(","),
                "--data-dir".into(),
                dir.join(format!("node{id}")).display().to_string(),
                "--cluster-secret-file".into(),
                secret_file.display().to_string(),
            ];
            if args.no_handover {
                a.push("--no-handover".into());
            }
            Node {
                id,
                addr: addrs[i],
                args: a,
                log: dir.join(format!("node{id}.log")),
                child: None,
            }
        })
        .collect();
    for n in &mut nodes {
        n.start(&args.raftd)?;
    }
    let mut probe = Client::new(addrs.clone(), ClientOptions::default());
    probe
        .put("ready", "1")
        .await
        .map_err(|e| format!("the cluster never took a write: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..args.writers)
        .map(|i| tokio::spawn(writer(addrs.clone(), i, stop.clone(), writes.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // (node, led, stopped at, back at)
    let mut restarts = Vec::new();
    for _ in 0..args.rounds {
        for node in nodes.iter_mut() {
            let led = status(node.addr).await.is_some_and(|s| s.role == "Leader");
            let t0 = Instant::now();
            node.stop();
            node.start(&args.raftd)?;
            // Back: it answers and follows a leader.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(s) = status(node.addr).await {
                    if s.leader_id.is_some() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} did not come back", node.id));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let t1 = Instant::now();
            // Let the writers run on a healthy cluster before the next stop.
            tokio::time::sleep(Duration::from_millis(700)).await;
            restarts.push((node.id, led, t0, t1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let writes = writes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut leader_stalls = Vec::new();
    let mut follower_stalls = Vec::new();
    for (id, led, t0, t1) in &restarts {
        // Writes that were in flight at some point between the stop and the node's return.
        let worst = writes
            .iter()
            .filter(|(start, took)| *start <= *t1 && *start + *took >= *t0)
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default();
        let ms = worst.as_secs_f64() * 1000.0;
        if *led {
            leader_stalls.push(ms);
        } else {
            follower_stalls.push(ms);
        }
        println!(
            "{}",
            json!({"node": id, "was_leader": led, "longest_write_ms": (ms * 10.0).round() / 10.0,
                   "back_after_ms": ((*t1 - *t0).as_secs_f64() * 1000.0).round()})
        );
    }
    leader_stalls.sort_by(|a, b| a.total_cmp(b));
    follower_stalls.sort_by(|a, b| a.total_cmp(b));
    let round = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| (x * 10.0).round() / 10.0).collect() };
    let all: Vec<f64> = writes
        .iter()
        .map(|(_, t)| t.as_secs_f64() * 1000.0)
        .collect();
    println!(
        "{}",
        json!({
            "handover": !args.no_handover,
            "writes": all.len(),
            "leader_restarts": leader_stalls.len(),
            "longest_write_during_leader_restart_ms": round(&leader_stalls),
            "follower_restarts": follower_stalls.len(),
            "longest_write_during_follower_restart_ms": round(&follower_stalls),
            "max_ms": leader_stalls.iter().chain(&follower_stalls).copied().fold(0.0, f64::max),
        })
    );
    for n in &mut nodes {
        n.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftd-rolling: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftd-rolling: {e}");
            std::process::ExitCode::from(3)
        }
    }
}
