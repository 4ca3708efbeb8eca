//! End to end under a nemesis: real `raftd` processes on 127.0.0.1 whose peer links all run
//! through fault-injecting proxies, with clients writing and reading while nodes are
//! partitioned (both ways, one way, through a bridge), black-holed, slowed, SIGKILLed and
//! restarted, and SIGSTOPped and continued. Afterwards the client history must be
//! linearizable, the cluster must recover (one leader, a write served) within a bound, and
//! every replica must hold the same data.
//!
//! `nemesis_short` runs in CI (~30 s, 3 nodes, every fault kind twice). `nemesis_soak` is the
//! long run by hand: `scripts/nemesis.sh --nodes 5 --duration 600 --seed 7`, or
//! `RAFTD_NEMESIS_SECS=600 RAFTD_NEMESIS_NODES=5 RAFTD_NEMESIS_SEED=7 cargo test --release
//! --test e2e_nemesis -- --ignored --nocapture`.

use raftd_testkit::nemesis;
use raftd_testkit::proxy;
use raftd_testkit::runtime;

use nemesis::{
    run_schedule, spawn_clients, FaultReport, HistoryStats, NemesisCluster, ScheduleConfig,
    WorkloadConfig, WorkloadCtl,
};
use raftd::client::{Client, ClientOptions, WatchEvent, Watcher};
use raftd::kv::mvcc::Event;
use raftd_testkit::check::{check_history, Input, Operation, Output};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on electing a leader and serving a write once every fault has ended.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

struct Spec {
    name: &'static str,
    nodes: usize,
    seed: u64,
    schedule: ScheduleConfig,
    workload: WorkloadConfig,
    /// At least this many operations must succeed over the run.
    min_ok: usize,
}

struct Outcome {
    history: Vec<Operation>,
    faults: FaultReport,
    /// Problems found while the cluster ran (recovery, convergence, crashes, anomalies).
    problems: Vec<String>,
    recovery: Option<Duration>,
    ok_after_heal: u64,
    wall: Duration,
    cluster: NemesisCluster,
}

async fn drive(spec: &Spec) -> Outcome {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut cluster = NemesisCluster::start(spec.nodes, &[]).await;
    let mut problems = Vec::new();
    let ids = cluster.ids();
    if cluster
        .wait_for_leader(&ids, Duration::from_secs(15))
        .await
        .is_none()
    {
        let path = cluster.keep_files();
        panic!(
            "[{} seed {}] no leader at start within 15 s (files in {})\n{}",
            spec.name,
            spec.seed,
            path.display(),
            cluster.log_tails(30)
        );
    }

    let ctl = Arc::new(WorkloadCtl::default());
    // A watcher of every workload key from the first revision, resuming through every fault.
    let watched: Arc<std::sync::Mutex<Vec<Event>>> = Arc::default();
    let watch_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_all(
        cluster.addrs(),
        1,
        watched.clone(),
        watch_stop.clone(),
    ));
    let clients = spawn_clients(cluster.addrs(), &spec.workload, start, ctl.clone());
    // Let the clients get going before the first fault.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let faults = run_schedule(&mut cluster, &spec.schedule, &mut rng, start).await;
    problems.extend(faults.crashes.iter().cloned());

    // Every fault has ended (run_schedule healed links, continued and restarted nodes): the
    // cluster must elect a leader and serve a write within the bound.
    let healed = Instant::now();
    let ok_at_heal = ctl.ok.load(Ordering::Relaxed);
    let mut probe = Client::new(
        cluster.addrs(),
        ClientOptions {
            deadline: RECOVERY_BOUND,
            attempt_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    );
    let recovery = match probe.put("nemesis-probe", "after-heal").await {
        Ok(()) => Some(healed.elapsed()),
        Err(e) => {
            problems.push(format!(
                "no write served within {RECOVERY_BOUND:?} after the faults ended: {e}"
            ));
            None
        }
    };
    if recovery.is_some_and(|d| d > RECOVERY_BOUND) {
        problems.push(format!(
            "the write after the faults took {recovery:?} (bound {RECOVERY_BOUND:?})"
        ));
    }
    if cluster
        .wait_for_leader(&ids, RECOVERY_BOUND)
        .await
        .is_none()
    {
        problems.push(format!(
            "the nodes did not agree on one leader within {RECOVERY_BOUND:?} after the faults"
        ));
    }

    // The clients must make progress again too: a few more successes, bounded in time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl.ok.load(Ordering::Relaxed) < ok_at_heal + 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok_after_heal = ctl.ok.load(Ordering::Relaxed) - ok_at_heal;
    if ok_after_heal == 0 {
        problems.push("no client operation succeeded after the faults ended".into());
    }

    ctl.stop.store(true, Ordering::Relaxed);
    let join_bound =
        spec.workload.op_deadline + spec.workload.attempt_timeout + Duration::from_secs(5);
    let mut history = Vec::new();
    for handle in clients {
        match tokio::time::timeout(join_bound, handle).await {
            Ok(Ok(report)) => {
                problems.extend(report.anomalies);
                history.extend(report.history);
            }
            Ok(Err(e)) => problems.push(format!("a client task failed: {e}")),
            Err(_) => problems.push(format!("a client did not stop within {join_bound:?}")),
        }
    }

    // With the clients stopped, every replica must apply the same log and hold the same data.
    let mut keys = spec.workload.key_names();
    keys.push("nemesis-probe".into());
    if let Err(e) = cluster
        .check_convergence(&keys, Duration::from_secs(15))
        .await
    {
        problems.push(e);
    }
    let none_killed = Default::default();
    for id in cluster.unexpected_exits(&none_killed) {
        problems.push(format!("node {id} is not running at the end"));
    }
    problems.extend(check_watch(&cluster, &history, watcher, watched, watch_stop).await);

    Outcome {
        history,
        faults,
        problems,
        recovery,
        ok_after_heal,
        wall: start.elapsed(),
        cluster,
    }
}

/// Watches every key starting with "k" from `from`, collecting what it delivers until `stop`.
async fn watch_all(
    addrs: Vec<std::net::SocketAddr>,
    from: u64,
    out: Arc<std::sync::Mutex<Vec<Event>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let opts = ClientOptions {
        deadline: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let mut w =
        Watcher::new(addrs, opts, "k", None, true, Some(from)).map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
            Ok(Ok(WatchEvent::Change(e))) => out.lock().expect("events").push(e),
            Ok(Ok(WatchEvent::Progress(_))) | Err(_) => {}
            Ok(Err(e)) => return Err(format!("the watch failed: {e}")),
        }
    }
    Ok(())
}

/// The watch that ran through the faults delivered exactly what a fresh watch from revision 1
/// at another node delivers once the cluster is quiet: the history of the workload's keys, in
/// revision order, once each. And every acknowledged write is in it.
async fn check_watch(
    cluster: &NemesisCluster,
    history: &[Operation],
    watcher: tokio::task::JoinHandle<Result<(), String>>,
    watched: Arc<std::sync::Mutex<Vec<Event>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut probe = Client::new(cluster.addrs(), ClientOptions::default());
    let last = match probe
        .range(&raftd::client::store::RangeRequest::prefix("k"))
        .await
    {
        // The latest write of a key still there: the watch must get at least that far.
        Ok(r) => r.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0),
        Err(e) => return vec![format!("cannot read the keys: {e}")],
    };
    let reached = |events: &[Event]| events.last().map_or(0, |e| e.mod_revision) >= last;
    let deadline = Instant::now() + Duration::from_secs(15);
    let fresh: Arc<std::sync::Mutex<Vec<Event>>> = Arc::default();
    let fresh_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut addrs = cluster.addrs();
    addrs.rotate_left(1);
    let fresh_task = tokio::spawn(watch_all(addrs, 1, fresh.clone(), fresh_stop.clone()));
    let mut quiet_since = None;
    while Instant::now() < deadline {
        let (a, b) = (
            watched.lock().expect("events").clone(),
            fresh.lock().expect("events").clone(),
        );
        if reached(&a) && a.len() == b.len() {
            // Equal lengths twice, 300 ms apart: both are done.
            match quiet_since {
                Some(t) if Instant::now() >= t + Duration::from_millis(300) => break,
                None => quiet_since = Some(Instant::now()),
                _ => {}
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    fresh_stop.store(true, Ordering::Relaxed);
    for (what, task) in [("the watch", watcher), ("the fresh watch", fresh_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{what}: {e}")),
            Err(e) => problems.push(format!("{what} panicked: {e}")),
        }
    }
    let (got, want) = (
        watched.lock().expect("events").clone(),
        fresh.lock().expect("events").clone(),
    );
    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        problems.push(format!(
            "the watch that ran through the faults delivered {} events, a fresh one {}; first difference at {at}: {:?} vs {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at)
        ));
    }
    if got
        .windows(2)
        .any(|w| (w[0].mod_revision, &w[0].key) >= (w[1].mod_revision, &w[1].key))
    {
        problems.push("the watch delivered events out of order or twice".into());
    }
    // Every acknowledged write of a value is one of the events (values are unique per op).
    let puts: std::collections::HashSet<(&str, &str)> = got
        .iter()
        .filter_map(|e| Some((e.key.as_str(), e.value.as_deref()?)))
        .collect();
    for op in history {
        let written = match (&op.input, &op.output) {
            (Input::Put(v), Output::Done) => Some(v),
            (
                Input::Cas { value: Some(v), .. },
                Output::Cas {
                    succeeded: true, ..
                },
            ) => Some(v),
            _ => None,
        };
        if let Some(v) = written {
            if !puts.contains(&(op.key.as_str(), v.as_str())) {
                problems.push(format!(
                    "the acknowledged write {}={v} is missing from the watch",
                    op.key
                ));
                break;
            }
        }
    }
    println!(
        "watch: {} events through the faults, the same as a fresh watch: {}",
        got.len(),
        got == want
    );
    problems
}

fn run(spec: Spec) {
    println!(
        "[{}] seed {} nodes {} clients {} keys {}",
        spec.name, spec.seed, spec.nodes, spec.workload.clients, spec.workload.keys
    );
    let rt = runtime();
    let mut out = rt.block_on(drive(&spec));
    let stats = HistoryStats::of(&out.history);
    let checked = Instant::now();
    let verdict = check_history(&out.history);
    let check_time = checked.elapsed();

    println!("[{}] fault log (ms since start):", spec.name);
    for (ms, what) in &out.faults.log {
        println!("  {ms:>8}  {what}");
    }
    println!(
        "[{}] seed {}: {:.1} s wall; {}; {} elections won, {} peer-down events; {}; recovery write {:?}; {} ok ops after heal; checker {:.2} s: {}",
        spec.name,
        spec.seed,
        out.wall.as_secs_f64(),
        out.faults.summary(),
        out.cluster.count_in_logs("now leader"),
        out.cluster.count_in_logs(" down in term "),
        stats,
        out.recovery,
        out.ok_after_heal,
        check_time.as_secs_f64(),
        if verdict.is_ok() { "linearizable" } else { "NOT LINEARIZABLE" }
    );

    let mut problems = out.problems.clone();
    if let Err(v) = &verdict {
        problems.push(v.to_string());
    }
    if stats.ok < spec.min_ok {
        problems.push(format!(
            "only {} operations succeeded (want at least {})",
            stats.ok, spec.min_ok
        ));
    }
    if std::env::var_os("RAFTD_NEMESIS_KEEP").is_some() {
        println!(
            "[{}] node logs and data kept in {}",
            spec.name,
            out.cluster.keep_files().display()
        );
    }
    if !problems.is_empty() {
        let path = out.cluster.keep_files();
        panic!(
            "[{} seed {}] {} problem(s); node logs and data kept in {}\n{}\n{}",
            spec.name,
            spec.seed,
            problems.len(),
            path.display(),
            problems.join("\n"),
            out.cluster.log_tails(20)
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// CI: 3 nodes, every fault kind twice in a seeded order, about 30 s.
#[test]
fn nemesis_short() {
    let seed = env_u64("RAFTD_NEMESIS_SEED").unwrap_or(0x5eed_0005);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x706c_616e);
    let plan = ScheduleConfig::each_kind(2, &mut rng);
    run(Spec {
        name: "nemesis_short",
        nodes: 3,
        seed,
        schedule: ScheduleConfig {
            plan: Some(plan),
            duration: Duration::from_secs(60),
            hold_ms: (800, 1400),
            gap_ms: (300, 600),
            stack: 0.0,
            max_rounds: 32,
        },
        workload: WorkloadConfig {
            op_deadline: Duration::from_secs(5),
            ..WorkloadConfig::new(6, seed)
        },
        min_ok: 100,
    });
}

/// By hand (see the module doc): RAFTD_NEMESIS_SECS (default 600), RAFTD_NEMESIS_NODES
/// (default 5), RAFTD_NEMESIS_SEED (default: from the clock, printed).
#[test]
#[ignore]
fn nemesis_soak() {
    let secs = env_u64("RAFTD_NEMESIS_SECS").unwrap_or(600);
    let nodes = env_u64("RAFTD_NEMESIS_NODES").unwrap_or(5) as usize;
    assert!(
        (1..=9).contains(&nodes),
        "RAFTD_NEMESIS_NODES must be 1..=9"
    );
    let seed = env_u64("RAFTD_NEMESIS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    // More keys on longer runs keep each key's history short enough to check quickly.
    let keys = (secs as usize / 10).clamp(5, 200);
    run(Spec {
        name: "nemesis_soak",
        nodes,
        seed,
        schedule: ScheduleConfig {
            plan: None,
            duration: Duration::from_secs(secs),
            hold_ms: (500, 4000),
            gap_ms: (200, 2000),
            stack: 0.3,
            max_rounds: 100_000,
        },
        workload: WorkloadConfig {
            keys,
            ..WorkloadConfig::new(8, seed)
        },
        min_ok: 100,
    });
}

/// The proxy itself: forwards, closes and refuses when cut, holds bytes when stalled and
/// delivers them in order when restored.
#[test]
fn proxy_cuts_stalls_and_restores() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    let rt = runtime();
    rt.block_on(async {
        let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let proxy = proxy::Proxy::start(1, 2, sink.local_addr().expect("addr"))
            .await
            .expect("start proxy");
        let t = Duration::from_secs(5);
        let short = Duration::from_millis(300);

        // Forwarding.
        let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
        let (mut server, _) = timeout(t, sink.accept())
            .await
            .expect("accept")
            .expect("accept");
        client.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        timeout(t, server.read_exact(&mut buf))
            .await
            .expect("forwarded")
            .expect("read");
        assert_eq!(&buf, b"hello");

        // A stall holds bytes; restore delivers them.
        proxy.stall();
        client.write_all(b"late!").await.expect("write");
        assert!(
            timeout(short, server.read_exact(&mut buf)).await.is_err(),
            "a stalled link forwarded bytes"
        );
        proxy.restore();
        timeout(t, server.read_exact(&mut buf))
            .await
            .expect("delivered")
            .expect("read");
        assert_eq!(&buf, b"late!");

        // A cut closes the live connection on both sides and refuses new ones.
        proxy.cut();
        let n = timeout(t, server.read(&mut buf))
            .await
            .expect("closed")
            .unwrap_or(0);
        assert_eq!(n, 0, "the target side was not closed by the cut");
        let n = timeout(t, client.read(&mut buf))
            .await
            .expect("closed")
            .unwrap_or(0);
        assert_eq!(n, 0, "the sender side was not closed by the cut");
        let mut again = TcpStream::connect(proxy.listen)
            .await
            .expect("connect while cut");
        let n = timeout(t, again.read(&mut buf))
            .await
            .expect("refused")
            .unwrap_or(0);
        assert_eq!(n, 0, "a connection made while cut was not closed");
        assert!(
            timeout(short, sink.accept()).await.is_err(),
            "a connection made while cut reached the target"
        );

        // Restored: new connections flow again, with a delay if one is set.
        proxy.restore();
        proxy.set_delay(Duration::from_millis(100));
        let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
        let (mut server, _) = timeout(t, sink.accept())
            .await
            .expect("accept")
            .expect("accept");
        let sent = Instant::now();
        client.write_all(b"again").await.expect("write");
        timeout(t, server.read_exact(&mut buf))
            .await
            .expect("forwarded")
            .expect("read");
        assert_eq!(&buf, b"again");
        assert!(
            sent.elapsed() >= Duration::from_millis(100),
            "the delay was not applied"
        );
    });
}
