//! Proof that raftsim's checks bite: for each classic Raft bug (cargo features `bug-*`, see
//! src/bugs.rs), `raftsim --bug NAME` must report a failing schedule within a stated number of
//! seeds (the seeds are fixed, so this is deterministic).
//!
//! `cargo test` builds without features, so this test builds raftsim itself with
//! `--features bugs` into its own target directory (`target/bugs`; a separate directory,
//! because the running `cargo test` holds the lock on `target/`). The first build compiles the
//! dependencies again (a few minutes on 2 cores); later ones only rebuild raftd.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Each bug, and the number of seeds (from seed 1) within which raftsim must catch it; the
/// comment names the first seed that does and the check that fires.
const BUGS: &[(&str, u64)] = &[
    // seed 177: an unsafe commit (a node without the entry could still win an election).
    ("commit-old-term", 250),
    // seed 52: a node votes twice in one term after a crash.
    ("vote-without-persist", 80),
    // seed 1: a follower drops acknowledged entries, so a committed entry is on too few nodes
    // (an unsafe commit; other seeds fail leader completeness or liveness).
    ("truncate-stale-append", 10),
    // seed 5: a deposed leader's read makes a history non-linearizable.
    ("stale-read", 40),
    // seed 1: a retried write applied twice makes a history non-linearizable.
    ("double-apply", 10),
];

fn buggy_raftsim() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("bugs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let started = Instant::now();
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--features", "bugs", "--bin", "raftsim"])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --features bugs failed");
    eprintln!(
        "built raftsim with --features bugs in {:.1?}",
        started.elapsed()
    );
    target.join("debug").join("raftsim")
}

fn summary(stdout: &str) -> (u64, u64) {
    let last = stdout.lines().last().unwrap_or("");
    let parts: Vec<&str> = last.split(' ').collect();
    match parts.as_slice() {
        [p, "passed,", f, "failed"] => (
            p.parse().expect("passed count"),
            f.parse().expect("failed count"),
        ),
        _ => panic!("last line is not `N passed, M failed`: {last:?}\n{stdout}"),
    }
}

#[test]
fn raftsim_catches_each_classic_bug() {
    let raftsim = buggy_raftsim();
    for &(bug, seeds) in BUGS {
        let started = Instant::now();
        let out = Command::new(&raftsim)
            .args(["--bug", bug, "--seeds", &seeds.to_string(), "--from", "1"])
            .args(["--max-failures", "1", "--no-shrink"])
            .output()
            .expect("run raftsim");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (passed, failed) = summary(&stdout);
        eprintln!(
            "{bug}: caught at seed {} after {passed} passing seeds, {:.1?}",
            passed + 1,
            started.elapsed()
        );
        assert!(
            failed >= 1 && !out.status.success(),
            "raftsim did not catch bug {bug} within {seeds} seeds:\n{stdout}"
        );
        assert!(passed < seeds);
    }
    // The same build with no bug switched on passes those seeds.
    let out = Command::new(&raftsim)
        .args(["--seeds", "20", "--from", "1"])
        .output()
        .expect("run raftsim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(summary(&stdout), (20, 0), "{stdout}");
}

#[test]
fn raftsim_shrinks_a_failing_schedule() {
    let raftsim = buggy_raftsim();
    let out = Command::new(&raftsim)
        .args([
            "--bug",
            "double-apply",
            "--seed",
            "1",
            "--shrink-runs",
            "60",
        ])
        .output()
        .expect("run raftsim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("shrunk seed 1 from"), "{stdout}");
    assert!(stdout.contains("--schedule FILE"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
}
