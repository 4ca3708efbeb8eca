//! `raftd`: parse the command line, load the configuration, run the node until SIGTERM/Ctrl-C.
//! `raftd restore BACKUP …` seeds a new data dir from a backup instead (docs/OPERATIONS.md).

use clap::Parser;
use raftd::config::{Cli, LogFormat, NodeConfig};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "restore") {
        return restore(RestoreCli::parse_from(std::env::args_os().skip(1)));
    }
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if cli.log_format == LogFormat::Json {
        logger.format(json_line);
    }
    logger.init();
    let cfg = match NodeConfig::load(&cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let id = cfg.id;
    match runtime.block_on(raftd::server::run(cfg, shutdown_signal())) {
        Ok(()) => {
            log::info!("node {id}: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line on stderr (where the log goes too) that says what to fix.
            eprintln!("raftd: node {id}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `raftd restore`: the command line.
#[derive(Parser, Debug)]
#[command(
    name = "raftd restore",
    about = "Seed the data dir of a member of a new cluster from a backup (raftctl snapshot save). \
             Restore every member from the same file with the same --peers, then start them as usual."
)]
struct RestoreCli {
    /// The backup file.
    backup: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long, value_name = "N")]
    id: u64,
    /// Every member of the new cluster, this node included: 1=127.0.0.1:8000,2=…
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    peers: String,
    /// The new data dir (must not exist yet, or be empty; default: data/node<ID>).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn restore(cli: RestoreCli) -> ExitCode {
    let members: std::collections::BTreeMap<_, _> = match raftd::config::parse_peers(&cli.peers) {
        Ok(list) => {
            let n = list.len();
            let map: std::collections::BTreeMap<_, _> = list.into_iter().collect();
            if map.len() != n {
                eprintln!(
                    "raftd restore: a node id appears twice in --peers; give each member once"
                );
                return ExitCode::from(2);
            }
            map
        }
        Err(e) => {
            eprintln!("raftd restore: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = cli
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("data/node{}", cli.id)));
    match raftd::server::restore::restore(&cli.backup, &dir, cli.id, &members) {
        Ok(r) => {
            println!(
                "restored node {} into {}: snapshot at index {} (term {}), revision {}, {} keys; members {:?}; data dir incarnation {:x}",
                cli.id,
                dir.display(),
                r.meta.index,
                r.meta.term,
                r.revision,
                r.keys,
                r.members,
                r.incarnation
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftd restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One log record as one JSON object on one line (`--log-format json`): the same events as the
/// text format, with the node id taken from the message's `node N:` prefix when it has one.
fn json_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use std::io::Write;
    let msg = record.args().to_string();
    let node = msg
        .strip_prefix("node ")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(id, _)| id.parse::<u64>().ok());
    let line = serde_json::json!({
        "ts": buf.timestamp_micros().to_string(),
        "level": record.level().as_str(),
        "target": record.target(),
        "node": node,
        "msg": msg,
    });
    writeln!(buf, "{line}")
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
