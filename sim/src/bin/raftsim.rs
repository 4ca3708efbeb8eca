//! raftsim: seeded random fault schedules against the simulated cluster, checked for safety
//! and liveness (the schedules, runner and checks are in `raftd_sim::nemesis`).
//!
//!   raftsim --seeds 500 --from 1     run seeds 1..=500; last line `N passed, M failed`
//!   raftsim --seed 17                replay seed 17 with a readable trace
//!   raftsim --schedule shrunk.json   replay a saved (shrunk) schedule with a trace
//!   raftsim --bug stale-read ...     switch on a classic bug (the checks must catch it)

use clap::Parser;
use raftd_sim::bugs::{Bug, BugSet};
use raftd_sim::nemesis::{fmt_time, run_schedule, shrink, GenOpts, RunOpts, Schedule};
use raftd_sim::SEC;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "raftsim",
    about = "Random fault schedules against a simulated raftd cluster, checked for safety and liveness"
)]
struct Args {
    /// Run this many seeds (from --from).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of --seeds.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Replay one seed with a trace of faults, elections and commits.
    #[arg(long, conflicts_with = "schedule")]
    seed: Option<u64>,
    /// Replay a schedule saved as JSON (as printed for a shrunk failure) with a trace.
    #[arg(long)]
    schedule: Option<std::path::PathBuf>,
    /// Virtual seconds of faults per schedule.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Cluster size (default: random in 3..=7 per seed).
    #[arg(long)]
    nodes: Option<usize>,
    /// Switch on a classic bug in every node: commit-old-term, vote-without-persist,
    /// truncate-stale-append, stale-read, double-apply.
    #[arg(long = "bug")]
    bugs: Vec<String>,
    /// Do not shrink the first failing schedule.
    #[arg(long)]
    no_shrink: bool,
    /// Runs allowed for shrinking.
    #[arg(long, default_value_t = 300)]
    shrink_runs: usize,
    /// Stop after this many failing seeds (0: never).
    #[arg(long, default_value_t = 0)]
    max_failures: u64,
    /// Threads running seeds in parallel.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Virtual seconds allowed, after the faults stop, for a leader and a successful write.
    #[arg(long, default_value_t = 10.0)]
    liveness: f64,
    /// Also write the (shrunk) failing schedule to this JSON file.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The cores' own log lines, for a replay: RUST_LOG=info raftsim --seed N.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"))
        .is_test(false)
        .try_init();
    let mut bugs = BugSet::none();
    for name in &args.bugs {
        let Some(bug) = Bug::from_name(name) else {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            eprintln!("raftsim: unknown bug {name:?}; known: {}", names.join(", "));
            return ExitCode::from(2);
        };
        bugs.insert(bug);
    }
    let gen = GenOpts {
        nodes: args.nodes,
        duration_us: (args.duration * SEC as f64) as u64,
    };
    let opts = RunOpts {
        liveness_us: (args.liveness * SEC as f64) as u64,
        bugs,
        ..RunOpts::default()
    };
    if let Some(path) = &args.schedule {
        let schedule = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Schedule>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("raftsim: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        return replay(&schedule, &opts, &args);
    }
    if let Some(seed) = args.seed {
        return replay(&Schedule::generate(seed, &gen), &opts, &args);
    }
    many(&args, &gen, &opts)
}

/// One schedule, with a trace; a failure is shrunk.
fn replay(schedule: &Schedule, opts: &RunOpts, args: &Args) -> ExitCode {
    print!("{}", schedule.describe());
    println!("trace:");
    let traced = RunOpts {
        trace: true,
        ..opts.clone()
    };
    quiet_panics();
    let started = Instant::now();
    let result = run_schedule(schedule, &traced);
    match result {
        Ok(stats) => {
            println!(
                "PASSED in {:.2?}: {} client ops ({} completed, {} writes), {} terms with a leader, {} simulated, recovery {}",
                started.elapsed(),
                stats.ops,
                stats.ops_completed,
                stats.writes_completed,
                stats.leaders,
                fmt_time(stats.virtual_us),
                fmt_time(stats.recovery_us)
            );
            println!("1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            if !args.no_shrink {
                report_shrunk(schedule, &failure, opts, args);
            }
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn report_shrunk(
    schedule: &Schedule,
    failure: &raftd_sim::nemesis::Failure,
    opts: &RunOpts,
    args: &Args,
) {
    let started = Instant::now();
    let (small, small_failure, runs) = shrink(schedule, failure, opts, args.shrink_runs);
    println!(
        "shrunk seed {} from {} to {} events ({} of faults) in {runs} runs, {:.1?}:",
        schedule.seed,
        schedule.events.len(),
        small.events.len(),
        fmt_time(small.duration_us),
        started.elapsed()
    );
    print!("{}", small.describe());
    println!("  fails with: {small_failure}");
    let json = serde_json::to_string(&small).unwrap_or_default();
    let bugs: String = args.bugs.iter().map(|b| format!(" --bug {b}")).collect();
    match &args.save {
        Some(path) => match std::fs::write(path, &json) {
            Ok(()) => println!(
                "  replay the shrunk schedule: raftsim{bugs} --schedule {}",
                path.display()
            ),
            Err(e) => println!("  cannot write {}: {e}", path.display()),
        },
        None => println!(
            "  replay the shrunk schedule: save this line as FILE and run raftsim{bugs} --schedule FILE\n  {json}"
        ),
    }
    println!(
        "  replay the original: raftsim{bugs} --seed {}{}{}",
        schedule.seed,
        args.nodes
            .map_or(String::new(), |n| format!(" --nodes {n}")),
        if args.duration == 5.0 {
            String::new()
        } else {
            format!(" --duration {}", args.duration)
        }
    );
}

/// The sim's own assertions panic; the runner catches them and reports them as failures, so
/// the default hook's output would only be noise.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

fn many(args: &Args, gen: &GenOpts, opts: &RunOpts) -> ExitCode {
    quiet_panics();
    let started = Instant::now();
    let next = AtomicU64::new(args.from);
    let end = args.from.saturating_add(args.seeds);
    let stop = AtomicBool::new(false);
    let passed = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let virtual_us = AtomicU64::new(0);
    let membership: Mutex<std::collections::BTreeMap<&'static str, (u64, u64)>> =
        Mutex::new(Default::default());
    // The first failing seed (lowest), to shrink at the end.
    let first_failure: Mutex<Option<(Schedule, raftd_sim::nemesis::Failure)>> = Mutex::new(None);
    let worker = || loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let seed = next.fetch_add(1, Ordering::Relaxed);
        if seed >= end {
            return;
        }
        let schedule = Schedule::generate(seed, gen);
        match run_schedule(&schedule, opts) {
            Ok(stats) => {
                passed.fetch_add(1, Ordering::Relaxed);
                virtual_us.fetch_add(stats.virtual_us, Ordering::Relaxed);
                let mut m = membership.lock().unwrap_or_else(|e| e.into_inner());
                for (kind, (asked, ok)) in stats.membership {
                    let e = m.entry(kind).or_default();
                    e.0 += asked;
                    e.1 += ok;
                }
            }
            Err(failure) => {
                let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                let first_line = failure.message.lines().next().unwrap_or("").to_string();
                println!(
                    "seed {seed} FAILED ({:?} at {}): {first_line}",
                    failure.kind,
                    fmt_time(failure.at_us)
                );
                let mut first = first_failure.lock().unwrap_or_else(|e| e.into_inner());
                if first.as_ref().is_none_or(|(s, _)| s.seed > seed) {
                    *first = Some((schedule, failure));
                }
                if args.max_failures > 0 && n >= args.max_failures {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..args.jobs.max(1) {
            s.spawn(worker);
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let passed = passed.into_inner();
    let failed = failed.into_inner();
    let ran = passed + failed;
    if let Some((schedule, failure)) = first_failure
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        println!("first failing seed {}: {failure}", schedule.seed);
        if !args.no_shrink {
            report_shrunk(&schedule, &failure, opts, args);
        }
    }
    println!(
        "ran {ran} seeds in {elapsed:.1} s: {:.2} seeds/s, {:.0} virtual s simulated",
        ran as f64 / elapsed.max(1e-9),
        virtual_us.into_inner() as f64 / SEC as f64
    );
    let membership = membership.into_inner().unwrap_or_else(|e| e.into_inner());
    if !membership.is_empty() {
        let parts: Vec<String> = membership
            .iter()
            .map(|(kind, (asked, ok))| format!("{kind} {ok}/{asked}"))
            .collect();
        println!(
            "membership requests of the passing seeds, answered Ok/asked: {}",
            parts.join(", ")
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
