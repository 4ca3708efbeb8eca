//! `raftd`: parse the command line, load the configuration, run the node until SIGTERM/Ctrl-C.

use clap::Parser;
use raftd::config::{Cli, LogFormat, NodeConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
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
