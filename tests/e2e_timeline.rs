//! End to end: `raftctl timeline` on a real cluster's logs, rendered in headless Chromium.
//!
//! Three nodes log as JSON (`--log-format json`); the leader is killed with SIGKILL, another is
//! elected, the killed node restarts, and writes go on throughout. The page must show a lane
//! per node, a band per term each node was in, two leaderships, the killed node's silence, and
//! a commit line per node; and a real browser must lay all of that out (the page's own script
//! records what has a size in `<body data-rendered>`, which `--dump-dom` gives back).
//!
//! Needs Debian's `chromium` (`.ci/run` and `scripts/test.sh` install it); `RAFTD_CHROMIUM`
//! names another binary.

use raftd::client::{Client, ClientOptions};
use raftd_testkit::process::{raftctl, run, Cluster};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RAFTD_CHROMIUM") {
        return PathBuf::from(p);
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "this test renders a page in headless Chromium, which is not installed: run \
         `apt-get install chromium` (scripts/test.sh does), or set RAFTD_CHROMIUM"
    );
}

/// The page as the browser has it after running its scripts.
fn dump_dom(page: &Path, profile: &Path) -> String {
    let url = format!("file://{}", page.display());
    let profile = format!("--user-data-dir={}", profile.display());
    let r = run(
        &chromium(),
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &profile,
            "--dump-dom",
            &url,
        ],
    );
    assert_eq!(r.code, 0, "chromium: {}", r.stderr);
    r.stdout
}

fn writes(rt: &tokio::runtime::Runtime, cluster: &Cluster, n: usize) {
    let mut c = Client::new(
        cluster.addrs(),
        ClientOptions {
            deadline: TEN_S,
            ..ClientOptions::default()
        },
    );
    rt.block_on(async {
        for i in 0..n {
            c.put(&format!("k{i}"), "v").await.expect("put");
        }
    });
}

#[test]
fn the_timeline_of_a_real_cluster_renders_in_a_browser_with_lanes_terms_and_commits() {
    let rt = raftd_testkit::runtime();
    let mut cluster = Cluster::start_with(3, &["--log-format", "json"]);
    let first = cluster.leader(TEN_S);
    writes(&rt, &cluster, 200);
    cluster.node(first).kill();
    let rest: Vec<u64> = (1..=3).filter(|n| *n != first).collect();
    let (second, _) = cluster
        .wait_for_leader(&rest, TEN_S)
        .expect("a new leader after the kill");
    writes(&rt, &cluster, 200);
    cluster.node(first).start();
    let (back, _) = cluster
        .wait_for_leader(&[1, 2, 3], TEN_S)
        .expect("one leader once the killed node is back");
    assert_eq!(back, second);
    writes(&rt, &cluster, 200);
    // Every node has logged its commit index (the first time it moves, at once).
    raftd_testkit::process::wait_for(TEN_S, || {
        let n = (1..=3)
            .filter(|n| {
                cluster.nodes[*n as usize - 1]
                    .log()
                    .contains("commit index")
            })
            .count();
        (n == 3).then_some(())
    })
    .expect("a progress line from every node");

    let dir = cluster.dir.path().to_path_buf();
    let page = dir.join("timeline.html");
    let logs: Vec<String> = (1..=3)
        .map(|n| cluster.node(n).log_path.display().to_string())
        .collect();
    let mut args = vec!["timeline"];
    args.extend(logs.iter().map(String::as_str));
    let page_s = page.display().to_string();
    args.extend(["-o", page_s.as_str()]);
    let r = raftctl("127.0.0.1:1", &args);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches(r#"class="lane""#).count(), 3);
    assert_eq!(html.matches(r#"<polyline class="commit""#).count(), 3);
    assert!(
        html.matches(r#"class="gap""#).count() >= 1,
        "the killed node's silence"
    );
    assert!(
        html.matches("event start").count() >= 4,
        "three starts and a restart"
    );

    let dom = dump_dom(&page, &dir.join("chromium-profile"));
    let attr = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| {
            panic!(
                "the page's script did not run: {}",
                &dom[..dom.len().min(500)]
            )
        });
    let rendered: Value = serde_json::from_str(&attr.replace("&quot;", "\"")).expect("JSON");
    println!("rendered in Chromium: {rendered}");
    assert_eq!(rendered["lanes"], 3, "a lane per node: {rendered}");
    let terms = rendered["terms"].as_u64().unwrap();
    assert!(terms >= 2, "a band for each term, two at least: {rendered}");
    assert!(
        rendered["bands"].as_u64().unwrap() >= 3,
        "every lane has bands: {rendered}"
    );
    assert!(rendered["leaderships"].as_u64().unwrap() >= 2, "{rendered}");
    assert!(rendered["gaps"].as_u64().unwrap() >= 1, "{rendered}");
    assert_eq!(
        rendered["commit_lines"], 3,
        "a commit line per node: {rendered}"
    );
    assert!(rendered["events"].as_u64().unwrap() >= 6, "{rendered}");
}
