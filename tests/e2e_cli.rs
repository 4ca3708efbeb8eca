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
