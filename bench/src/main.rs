//! raftd-bench: closed-loop load and failover measurements against raftd or etcd, with the
//! identical workload for both. scripts/bench-vs-etcd.sh drives it; docs/PERFORMANCE.md has
//! the results and how to read them.

mod backend;
mod codec;
#[cfg(feature = "etcd")]
mod etcd;
mod failover;
mod fill;
mod image;
mod latency;
mod load;

use backend::System;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "raftd-bench",
    about = "Load and failover benchmarks for raftd and etcd"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// The system behind the endpoints.
    #[arg(long, value_enum)]
    system: System,
    /// Client endpoints of the members, comma-separated (raftd: client ports; etcd: client
    /// URLs' host:port).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<SocketAddr>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one closed-loop load and print its report as one JSON line on stdout.
    Load {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value = "put")]
        op: load::Op,
        /// Concurrent clients, each with one request in flight.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// etcd only: gRPC channels the clients share (raftd: one connection per client).
        #[arg(long, default_value_t = 16)]
        conns: usize,
        /// Connect only to the current leader (etcd: saves the follower-forwarding hop).
        #[arg(long)]
        leader_only: bool,
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        #[arg(long, default_value_t = 10_000)]
        keys: u32,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// Open this many watches of every benchmark key on the leader first, to measure what
        /// watch fan-out costs the load.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// raftd only: the watchers count events without decoding them, so they cost the
        /// machine little and the figure is what serving them costs the node.
        #[arg(long)]
        watch_raw: bool,
    },
    /// What encoding and decoding log entries costs, as raftd sends them (base64) and in other
    /// forms: one AppendEntries of ENTRIES puts, in a loop (JSON on stdout; no cluster needed).
    Codec {
        #[arg(long, default_value_t = 64)]
        entries: usize,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        /// Seconds per measurement (four of them).
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
    /// What a snapshot of a store of KEYS keys costs to encode and to load, binary and JSON
    /// (JSON on stdout; no cluster needed).
    Image {
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
    },
    /// Fill the store: PUTS puts over KEYS distinct keys, each tenth of the load timed (JSON on
    /// stdout).
    Fill {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Puts in all (default: KEYS, one per key).
        #[arg(long)]
        puts: Option<u64>,
        #[arg(long, default_value_t = 128)]
        clients: usize,
        /// etcd only: gRPC channels the clients share.
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        #[arg(long)]
        quiet: bool,
    },
    /// SIGKILL the leader under writes and time the next acknowledged write (JSON on stdout).
    Failover {
        #[command(flatten)]
        target: TargetArgs,
        /// Path of the file holding the pid of the member at a client port, `{port}` standing
        /// for the port, e.g. /tmp/bench/pids/{port}.pid.
        #[arg(long)]
        pid_file: String,
        #[arg(long, default_value_t = 4)]
        writers: usize,
        #[arg(long, default_value_t = 30.0)]
        give_up_secs: f64,
    },
    /// Wait until every member answers and the cluster takes a write.
    Ready {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 30.0)]
        timeout_secs: f64,
    },
    /// Print the client endpoint of the current leader.
    Leader {
        #[command(flatten)]
        target: TargetArgs,
    },
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{what} must be a non-negative number"))
}

async fn run(cli: Cli) -> Result<String, String> {
    match cli.cmd {
        Cmd::Load {
            target,
            op,
            clients,
            conns,
            leader_only,
            warmup_secs,
            secs: window,
            keys,
            value_bytes,
            quiet,
            watchers,
            watch_raw,
        } => {
            if clients == 0 {
                return Err("--clients must be at least 1".into());
            }
            let endpoints = if leader_only {
                vec![backend::find_leader(target.system, &target.endpoints).await?]
            } else {
                target.endpoints.clone()
            };
            let spec = load::LoadSpec {
                op,
                clients,
                conns,
                warmup: secs(warmup_secs, "warmup-secs")?,
                window: secs(window, "secs")?,
                keys,
                value_bytes,
                progress: !quiet,
                watchers,
                watch_raw,
            };
            let report = load::run(target.system, &endpoints, &spec).await?;
            serde_json::to_string(&report).map_err(|e| e.to_string())
        }
        Cmd::Codec {
            entries,
            value_bytes,
            secs,
        } => Ok(codec::run(entries.max(1), value_bytes, secs.max(0.01)).to_string()),
        Cmd::Image { keys, value_bytes } => image::run(keys, value_bytes).map(|v| v.to_string()),
        Cmd::Fill {
            target,
            keys,
            puts,
            clients,
            conns,
            value_bytes,
            quiet,
        } => {
            let spec = fill::FillSpec {
                keys,
                puts: puts.unwrap_or(keys),
                clients: clients.max(1),
                conns,
                value_bytes,
                progress: !quiet,
            };
            let report = fill::run(target.system, &target.endpoints, &spec).await?;
            serde_json::to_string(&report).map_err(|e| e.to_string())
        }
        Cmd::Failover {
            target,
            pid_file,
            writers,
            give_up_secs,
        } => {
            let report = failover::run(
                target.system,
                &target.endpoints,
                &pid_file,
                writers.max(1),
                secs(give_up_secs, "give-up-secs")?,
            )
            .await?;
            serde_json::to_string(&report).map_err(|e| e.to_string())
        }
        Cmd::Ready {
            target,
            timeout_secs,
        } => {
            let deadline = tokio::time::Instant::now() + secs(timeout_secs, "timeout-secs")?;
            loop {
                match backend::check_ready(target.system, &target.endpoints).await {
                    Ok(()) => return Ok(format!("{} ready", target.system)),
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(format!("{} not ready: {e}", target.system))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Cmd::Leader { target } => backend::find_leader(target.system, &target.endpoints)
            .await
            .map(|a| a.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raftd-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
