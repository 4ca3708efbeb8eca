//! The daemon's command line: bad configuration exits non-zero with a one-line error that says
//! what to fix; a data dir written by another node is refused.

use raftd_testkit::process;

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(process::bin())
        .args(args)
        .output()
        .expect("run raftd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_configuration_is_one_line_and_non_zero() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--peers",
                "2-127.0.0.1:1",
            ],
            "ID=HOST:PORT",
        ),
        (&["--id", "1", "--peers", "2=127.0.0.1:1"], "--listen"),
        (
            &[
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--peers",
                "2=127.0.0.1:1,2=127.0.0.1:2",
            ],
            "twice",
        ),
        (&["--listen", "127.0.0.1:0"], "--id"),
        (
            &[
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-ms",
                "500",
            ],
            "shorter",
        ),
    ];
    for (args, want) in cases {
        let (ok, stderr) = run(args);
        assert!(!ok, "{args:?} should fail");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line expected, got {stderr:?}"
        );
        assert!(
            lines[0].contains(want),
            "{args:?}: {stderr:?} should mention {want}"
        );
    }
}

#[test]
fn data_dir_of_another_node_and_unwritable_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let port = process::free_ports(1)[0];
    // First start as node 1 (then stop it), so the data dir belongs to node 1.
    let mut child = Command::new(process::bin())
        .args([
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = process::wait_for(std::time::Duration::from_secs(5), || {
        process::status(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "single node did not come up");
    let (ok, stderr) = run(&[
        "--id",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("node") && stderr.contains('1'), "{stderr}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (ok, stderr) = run(&[
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.join("sub").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        !stderr.trim().is_empty() && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}

/// The owner's command line as it reads: the whole member list, the node's own entry included,
/// and no --listen. Three such processes form a cluster, each listening on its own entry.
#[test]
fn the_whole_member_list_is_a_whole_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = process::free_ports(3);
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let peers = peers.join(",");
    let mut children: Vec<std::process::Child> = (1..=3)
        .map(|id| {
            Command::new(process::bin())
                .args(["--id", &id.to_string(), "--peers", &peers, "--data-dir"])
                .arg(dir.path().join(format!("node{id}")))
                .env("RUST_LOG", "warn")
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start raftd")
        })
        .collect();
    let addrs: Vec<std::net::SocketAddr> = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let leader = process::wait_for(std::time::Duration::from_secs(20), || {
        addrs.iter().find_map(|a| {
            let s = process::status(*a)?;
            (s["role"] == "Leader").then_some(s)
        })
    });
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let leader = leader.expect("the three nodes, each on its own entry, elect a leader");
    assert_eq!(leader["voters"], serde_json::json!([1, 2, 3]), "{leader}");
}

/// `--log-format json`: every line of a node's log is one JSON object with the time, level,
/// target, node and message, and the events are those of the text format.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut cluster = process::Cluster::start_with(3, &["--log-format", "json"]);
    let leader = cluster.leader(std::time::Duration::from_secs(10));
    let log = cluster.node(leader).log();
    let mut won = false;
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(v[field].is_string(), "no {field}: {line}");
        }
        if v["msg"].as_str().is_some_and(|m| m.contains("now leader")) {
            assert_eq!(v["node"], leader, "{line}");
            won = true;
        }
        lines += 1;
    }
    assert!(lines > 3, "{log}");
    assert!(won, "the election it won is in its log:\n{log}");
}
