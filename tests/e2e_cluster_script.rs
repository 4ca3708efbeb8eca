//! End to end: `scripts/cluster.sh` as README tells an operator to use it: `start` three
//! nodes, `add 4` (an empty node joins, is caught up and becomes a voter), `remove 2` (taken
//! out of the configuration, then stopped), `status`, `stop`. Real processes on 127.0.0.1, on
//! ports picked free for the test (`RAFTD_BASE_PORT`), with the binaries this test build made
//! (`RAFTD_BIN_DIR`: the script builds nothing) and a data dir of its own (`RAFTD_DATA`).

use raftd_testkit::process::{request, status, wait_for};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TWENTY_S: Duration = Duration::from_secs(20);

/// One run of the script, and what it printed.
struct Out {
    ok: bool,
    text: String,
}

/// The script with this test's environment; stops every node it started when dropped.
struct Script {
    data: tempfile::TempDir,
    base: u16,
    http_base: u16,
    bin_dir: PathBuf,
}

impl Script {
    fn new() -> Script {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_raftd"))
            .parent()
            .expect("the binaries' directory")
            .to_path_buf();
        let base = free_block(5);
        let http_base = loop {
            let b = free_block(5);
            if b.abs_diff(base) >= 5 {
                break b;
            }
        };
        Script {
            data: tempfile::tempdir().expect("temp dir"),
            base,
            http_base,
            bin_dir,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env("RAFTD_DATA", self.data.path())
            .env("RAFTD_BASE_PORT", self.base.to_string())
            .env("RAFTD_HTTP_BASE_PORT", self.http_base.to_string())
            .env("RAFTD_BIN_DIR", &self.bin_dir)
            .env("RUST_LOG", "info")
            .output()
            .expect("run scripts/cluster.sh");
        Out {
            ok: out.status.success(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    fn addr(&self, node: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base - 1 + node as u16))
    }

    fn pid(&self, node: u64) -> Option<i32> {
        std::fs::read_to_string(self.data.path().join(format!("node{node}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=4 {
            let p = self.data.path().join(format!("logs/node{n}.log"));
            if let Ok(text) = std::fs::read_to_string(&p) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("--- node {n} (last 40 lines)\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Puts `key` through whichever of `via` takes it (within 20 s); whether one did.
    fn put(&self, via: &[u64], key: &str, value: &str) -> bool {
        let body = serde_json::json!({"type": "Put", "id": 1, "key": key, "value": value});
        let body = body.to_string();
        wait_for(TWENTY_S, || {
            via.iter().find_map(|n| {
                let v = request(self.addr(*n), body.as_bytes())?;
                (v["type"] == "Ok").then_some(())
            })
        })
        .is_some()
    }

    /// The members as the leader lists them: (id, role), sorted.
    fn members(&self, via: &[u64]) -> Option<Vec<(u64, String)>> {
        via.iter().find_map(|n| {
            let v = request(self.addr(*n), br#"{"type":"MemberList","id":1}"#)?;
            let list = v["members"].as_array()?;
            let mut m: Vec<(u64, String)> = list
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["role"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            m.sort();
            Some(m)
        })
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        // Whatever survived a failed stop.
        for n in 1..=4 {
            if let Some(pid) = self.pid(n) {
                // SAFETY: kill(2) on a pid this test's script started and recorded.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A base port whose next `n` ports are free now (bound and released).
fn free_block(n: u16) -> u16 {
    for _ in 0..200 {
        let base: u16 = rand::random::<u16>() % 20_000 + 20_000;
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// Whether the process runs: it exists and is not a zombie (nothing may reap what the script
/// started once the script has exited).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn cluster_script_starts_adds_removes_and_stops_nodes() {
    let s = Script::new();
    let start = s.run(&["start"]);
    assert!(start.ok, "start failed:\n{}", start.text);
    let leader = wait_for(TWENTY_S, || {
        (1..=3).find(|n| status(s.addr(*n)).is_some_and(|st| st["role"] == "Leader"))
    });
    assert!(leader.is_some(), "no leader\n{}", s.logs());
    assert!(
        s.put(&[1, 2, 3], "before-add", "1"),
        "no write taken\n{}",
        s.logs()
    );

    // Each node serves HTTP on its port of the HTTP block.
    let http = SocketAddr::from(([127, 0, 0, 1], s.http_base));
    let got = wait_for(TWENTY_S, || {
        let r = raftd_testkit::http::http(http, "GET", "/v1/kv/before-add", None).ok()?;
        (r.status == 200).then(|| r.text())
    });
    assert_eq!(got.as_deref(), Some("1"), "{}", s.logs());

    // add 4: it answers once node 4 is in a committed configuration.
    let add = s.run(&["add", "4"]);
    assert!(add.ok, "add 4 failed:\n{}\n{}", add.text, s.logs());
    let voters = wait_for(TWENTY_S, || {
        let m = s.members(&[1, 2, 3])?;
        (m.len() == 4 && m.iter().all(|(_, role)| role == "Voter")).then_some(m)
    });
    assert!(
        voters.is_some(),
        "node 4 never became a voter: {:?}\n{}",
        s.members(&[1, 2, 3]),
        s.logs()
    );
    // Node 4 holds what was written before it joined.
    let seen = wait_for(TWENTY_S, || {
        let v = request(
            s.addr(4),
            br#"{"type":"Get","id":1,"key":"before-add","consistency":"stale"}"#,
        )?;
        (v["value"] == "1").then_some(())
    });
    assert!(
        seen.is_some(),
        "node 4 never applied the write\n{}",
        s.logs()
    );

    // remove 2: out of the configuration, then stopped.
    let pid2 = s.pid(2).expect("node 2's pid file");
    let remove = s.run(&["remove", "2"]);
    assert!(remove.ok, "remove 2 failed:\n{}\n{}", remove.text, s.logs());
    assert!(!running(pid2), "node 2 still runs after remove");
    let members = wait_for(TWENTY_S, || {
        let m = s.members(&[1, 3, 4])?;
        (m.iter().map(|(id, _)| *id).collect::<Vec<_>>() == [1, 3, 4]).then_some(m)
    });
    assert!(
        members.is_some(),
        "members never became 1, 3, 4: {:?}\n{}",
        s.members(&[1, 3, 4]),
        s.logs()
    );
    // The cluster of 1, 3 and 4 takes writes.
    assert!(
        s.put(&[1, 3, 4], "after-remove", "2"),
        "no write after remove\n{}",
        s.logs()
    );

    let st = s.run(&["status"]);
    assert!(st.ok, "{}", st.text);
    for n in [1, 3, 4] {
        assert!(
            st.text.contains(&format!("node {n}  pid")),
            "status lists node {n}:\n{}",
            st.text
        );
    }
    assert!(
        !st.text.contains("node 2 "),
        "status lists node 2:\n{}",
        st.text
    );
    // Usage errors: a node that is not managed, and one that already is.
    let bad = s.run(&["remove", "2"]);
    assert!(!bad.ok && bad.text.contains("usage"), "{}", bad.text);
    let bad = s.run(&["add", "3"]);
    assert!(
        !bad.ok && bad.text.contains("already managed"),
        "{}",
        bad.text
    );

    let pids: Vec<i32> = [1, 3, 4].iter().filter_map(|n| s.pid(*n)).collect();
    let stop = s.run(&["stop"]);
    assert!(stop.ok, "{}", stop.text);
    for pid in pids {
        assert!(!running(pid), "pid {pid} still runs after stop");
    }
}
