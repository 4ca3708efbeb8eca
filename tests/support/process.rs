//! Real `raftd` processes on 127.0.0.1 for end-to-end tests, and a tiny client for `Status`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_raftd");

/// `n` free loopback ports (bound and released; the OS does not hand them out again at once).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub struct Node {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    peers: String,
    child: Option<Child>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let child = Command::new(BIN)
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftd");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on a child pid we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        status(self.addr())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let peers: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, p)| format!("{}=127.0.0.1:{p}", j + 1))
                .collect();
            let mut node = Node {
                id,
                port: ports[i],
                data_dir: dir.path().join(format!("node{id}")),
                log_path: dir.path().join(format!("node{id}.log")),
                peers: peers.join(","),
                child: None,
            };
            node.start();
            nodes.push(node);
        }
        Cluster { nodes, dir }
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Waits until exactly one of `among` reports itself leader and every one of them names it
    /// as leader in the same term. Returns (leader, term).
    pub fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> Option<(u64, u64)> {
        wait_for(timeout, || {
            let statuses: Vec<serde_json::Value> = among
                .iter()
                .map(|id| self.nodes[*id as usize - 1].status())
                .collect::<Option<_>>()?;
            let leaders: Vec<&serde_json::Value> =
                statuses.iter().filter(|s| s["role"] == "Leader").collect();
            if leaders.len() != 1 {
                return None;
            }
            let leader = leaders[0]["node_id"].as_u64()?;
            let term = leaders[0]["term"].as_u64()?;
            let agreed = statuses.iter().all(|s| {
                s["leader_id"].as_u64() == Some(leader) && s["term"].as_u64() == Some(term)
            });
            agreed.then_some((leader, term))
        })
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- node {} -----\n{}", n.id, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one raw frame and reads one response frame.
pub fn request(addr: SocketAddr, body: &[u8]) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(1000)))
        .ok()?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame).ok()?;
    read_frame(&mut s)
}

pub fn read_frame(s: &mut TcpStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

pub fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    request(addr, br#"{"type":"Status","id":7}"#)
}

pub fn data_dir_exists(p: &Path) -> bool {
    p.join("raft.wal").exists()
}
