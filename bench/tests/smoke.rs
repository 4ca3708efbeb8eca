//! raftd-bench against a real 3-node raftd cluster on loopback, briefly: every subcommand
//! works and reports what it measured. Nothing here judges speed (benchmarks measure, tests
//! check); scripts/bench-vs-etcd.sh runs the real comparison.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_raftd-bench");

/// The raftd binary, built next to raftd-bench by `cargo test --workspace`.
fn raftd_bin() -> PathBuf {
    let dir = Path::new(BENCH).parent().expect("bench binary dir");
    let bin = dir.join("raftd");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(3);
        let mut c = Cluster {
            dir,
            ports,
            children: vec![None, None, None],
        };
        for i in 0..3 {
            c.start_node(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("{}=127.0.0.1:{}", j + 1, self.ports[j]))
            .collect();
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", i + 1)))
            .expect("node log");
        let child = Command::new(raftd_bin())
            .args(["--id", &(i + 1).to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftd");
        std::fs::write(self.pid_path(self.ports[i]), child.id().to_string()).expect("pid file");
        self.children[i] = Some(child);
    }

    /// Every node's log, for failure messages.
    fn logs(&self) -> String {
        (1..=3)
            .map(|n| {
                let path = self.dir.path().join(format!("node{n}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                format!("--- node {n}\n{text}")
            })
            .collect()
    }

    fn pid_path(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("{port}.pid"))
    }

    fn endpoints(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn bench(&self, args: &[&str]) -> Output {
        Command::new(BENCH)
            .args(args)
            .args(["--system", "raftd", "--endpoints", &self.endpoints()])
            .output()
            .expect("run raftd-bench")
    }

    /// Reaps a child that was killed from outside; true if it is gone.
    fn reap_killed(&mut self, pid: u32) -> bool {
        for child in self.children.iter_mut() {
            if child.as_ref().is_some_and(|c| c.id() == pid) {
                let mut c = child.take().expect("child");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if c.try_wait().expect("try_wait").is_some() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Still alive: the bench did not kill it. Clean up, report it.
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
        }
        false
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ok_json(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON object ({e}): {stdout}"))
}

#[test]
fn every_subcommand_measures_a_real_cluster() {
    let mut c = Cluster::start();
    let ready = c.bench(&["ready", "--timeout-secs", "30"]);
    assert!(
        ready.status.success(),
        "cluster not ready: {}",
        String::from_utf8_lossy(&ready.stderr)
    );

    let leader = c.bench(&["leader"]);
    let leader = String::from_utf8_lossy(&leader.stdout).trim().to_string();
    assert!(
        c.endpoints().split(',').any(|e| e == leader),
        "leader {leader:?} is not one of the endpoints"
    );

    for (op, watchers) in [
        ("put", "0"),
        ("get", "0"),
        ("range", "0"),
        ("txn", "0"),
        ("keepalive", "0"),
        ("put", "20"),
    ] {
        let out = c.bench(&[
            "load",
            "--op",
            op,
            "--clients",
            "4",
            "--warmup-secs",
            "0.2",
            "--secs",
            "1",
            "--watchers",
            watchers,
        ]);
        let r = ok_json(&out, op);
        assert_eq!(r["system"], "raftd");
        assert_eq!(r["op"], op);
        assert_eq!(r["clients"], 4);
        assert_eq!(r["errors"], 0, "{op}: {r}");
        let ops = r["ops"].as_u64().expect("ops");
        assert!(ops > 0, "{op}: nothing completed: {r}");
        let (p50, p99, max) = (
            r["p50_ms"].as_f64().expect("p50"),
            r["p99_ms"].as_f64().expect("p99"),
            r["max_ms"].as_f64().expect("max"),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max,
            "{op}: percentiles out of order: {r}"
        );
        // The progress lines went to stderr, one per second at least once.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ops/s"), "{op}: no progress line: {stderr}");
        if watchers != "0" {
            // Every watcher sees every put of the window.
            let events = r["watch_events"].as_u64().expect("watch_events");
            assert!(events >= ops, "{op} with {watchers} watchers: {r}");
        }
    }

    // The leader now, right before the kill: the loads above may have seen an election on a
    // loaded machine, which is not what this test is about (elections under load are counted
    // by the benchmark, not asserted here).
    let leader = c.bench(&["leader"]);
    let leader = String::from_utf8_lossy(&leader.stdout).trim().to_string();
    let pid_pattern = c.dir.path().join("{port}.pid");
    let out = c.bench(&[
        "failover",
        "--pid-file",
        pid_pattern.to_str().expect("utf-8 path"),
    ]);
    let r = ok_json(&out, "failover");
    assert_eq!(
        r["killed"].as_str(),
        Some(leader.as_str()),
        "failover killed another node than the leader; node logs:\n{}",
        c.logs()
    );
    assert!(r["failover_ms"].as_f64().expect("failover_ms") > 0.0, "{r}");
    let pid = r["killed_pid"].as_u64().expect("killed_pid") as u32;
    assert!(c.reap_killed(pid), "the leader (pid {pid}) was not killed");

    // The two survivors took a write after the kill; a new leader answers.
    let leader_after = c.bench(&["leader"]);
    let leader_after = String::from_utf8_lossy(&leader_after.stdout)
        .trim()
        .to_string();
    assert!(!leader_after.is_empty() && leader_after != leader);
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = Command::new(BENCH)
        .args(["load", "--system", "raftd", "--endpoints", "not-an-address"])
        .output()
        .expect("run raftd-bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));

    // Nobody listens on this port: `ready` gives up with the reason, within its timeout.
    let port = free_ports(1)[0];
    let started = Instant::now();
    let out = Command::new(BENCH)
        .args(["ready", "--system", "raftd", "--timeout-secs", "1"])
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run raftd-bench");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ready"));
}
