//! `raftctl`: a command-line client for a raftd cluster (docs/CLIENT_PROTOCOL.md).
//!
//! ```text
//! raftctl --cluster 127.0.0.1:8000,127.0.0.1:8001,127.0.0.1:8002 put KEY VALUE
//! raftctl … get KEY [--stale] | del KEY | cas KEY EXPECTED NEW | status
//! raftctl --cacert ca.pem [--cert me.pem --key me-key.pem] …   (TLS)
//! raftctl cert ca|node ID|client NAME --dir DIR               (make certificates)
//! raftctl … member list | member add ID ADDR [--learner] | member promote ID | member remove ID
//! raftctl … leader transfer [ID]
//! raftctl … snapshot save FILE | snapshot status FILE
//! raftctl … get KEY --prefix [--limit N] [--keys-only] [--rev N] | del KEY --prefix
//! raftctl … watch KEY [--prefix] [--rev N] | txn (JSON on stdin) | compact REV
//! raftctl … lease grant TTL | lease keepalive ID | lease revoke ID | lease ttl ID
//! raftctl … put KEY VALUE --lease ID
//! ```
//! Exit status: 0 on success; 1 when `get` finds no value or a `cas` does not match; 2 on
//! usage errors; 3 when the cluster cannot be reached or refuses the request.

mod cert;
mod elect;
mod endpoint;
mod members;
mod snapshot;
mod store;
mod timeline;

use clap::{Parser, Subcommand};
use raftd::client::{tls_config, Client, ClientError, ClientOptions};
use raftd::rpc::types::Consistency;
use serde_json::json;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "raftctl", version, about = "Talk to a raftd cluster")]
struct Cli {
    /// The cluster's nodes, HOST:PORT,...
    #[arg(
        long,
        env = "RAFTCTL_CLUSTER",
        default_value = "127.0.0.1:8000,127.0.0.1:8001,127.0.0.1:8002"
    )]
    cluster: String,
    /// Speak TLS, trusting the CA in this PEM file to sign the nodes' certificates.
    #[arg(long, env = "RAFTCTL_CACERT", value_name = "FILE", global = true)]
    cacert: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for nodes started with --client-cert-auth.
    #[arg(
        long = "cert",
        id = "client_cert",
        env = "RAFTCTL_CERT",
        value_name = "FILE",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(
        long = "key",
        id = "client_key",
        env = "RAFTCTL_KEY",
        value_name = "FILE",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
    /// Print one JSON object instead of plain text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease: it is deleted when the lease expires or is revoked.
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Print KEY's value (exit 1 if absent), or with --prefix every key and value under KEY.
    Get {
        key: String,
        /// Read from whichever node answers, without confirming with the leader (may be behind).
        #[arg(long)]
        stale: bool,
        /// Every key starting with KEY, in key order (a key line, then a value line).
        #[arg(long)]
        prefix: bool,
        /// At most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Print only how many keys match.
        #[arg(long)]
        count_only: bool,
        /// Read the store as it was at this revision.
        #[arg(long)]
        rev: Option<u64>,
    },
    /// Delete KEY, or with --prefix every key starting with KEY (prints how many).
    #[command(alias = "delete")]
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Print every change of KEY (or of every key under it, with --prefix), one line each,
    /// from revision --rev (default: from now) until interrupted.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        rev: Option<u64>,
    },
    /// Run a transaction read as JSON from stdin: {"compare":[…],"success":[…],"failure":[…]}
    /// (exit 1 when the failure branch ran).
    Txn,
    /// Forget the history before revision REV.
    Compact { rev: u64 },
    /// Grant, keep alive, revoke or inspect leases.
    #[command(subcommand)]
    Lease(store::LeaseCmd),
    /// Campaign to lead election NAME as PROPOSAL; lead until interrupted (see
    /// docs/CLIENT_PROTOCOL.md, "Leader election").
    Elect {
        name: String,
        proposal: String,
        /// The lease's ttl in seconds: how long a dead leader holds the election.
        #[arg(long, default_value_t = 5)]
        ttl: u64,
    },
    /// Set KEY to NEW only if its value is EXPECTED (exit 1 if it is not).
    Cas {
        key: String,
        /// The value KEY must have (omit with --expect-absent).
        expected: Option<String>,
        /// The new value (omit with --delete).
        new: Option<String>,
        /// Succeed only if KEY is absent.
        #[arg(long)]
        expect_absent: bool,
        /// Delete KEY instead of setting it.
        #[arg(long)]
        delete: bool,
    },
    /// Show every node's status.
    Status,
    /// Make TLS certificates for a cluster (a CA, node and client certificates).
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// List, add, promote or remove members.
    #[command(subcommand)]
    Member(members::MemberCmd),
    /// Hand leadership to another voter.
    #[command(subcommand)]
    Leader(members::LeaderCmd),
    /// Each node of --cluster as it sees itself (`endpoint status [-w table|json]`).
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCmd),
    /// Back the cluster up (`snapshot save FILE`), or check a backup (`snapshot status FILE`).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Draw the nodes' logs (text or --log-format json) as one HTML page: a lane per node,
    /// terms, leaders, elections, stops and starts, peers down, snapshots.
    Timeline {
        /// The nodes' log files, e.g. data/logs/*.log.
        #[arg(required = true)]
        logs: Vec<std::path::PathBuf>,
        /// The page to write.
        #[arg(short = 'o', long = "output", default_value = "timeline.html")]
        output: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Cert(cmd) = &cli.command {
        return cert::run(cmd);
    }
    if let Cmd::Timeline { logs, output } = &cli.command {
        return match timeline::run(logs, output) {
            Ok(n) => {
                println!("{}: {n} events drawn", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftctl: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Cmd::Snapshot(snapshot::SnapshotCmd::Status { file }) = &cli.command {
        return match snapshot::status(file) {
            Ok((value, text)) => {
                if cli.json {
                    println!("{value}");
                } else {
                    println!("{text}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftctl: {e}");
                ExitCode::from(1)
            }
        };
    }
    let tls = match (&cli.cacert, &cli.client_cert, &cli.client_key) {
        (None, None, None) => None,
        (None, _, _) => {
            eprintln!("raftctl: --cert and --key need --cacert (the CA that signed the nodes' certificates)");
            return ExitCode::from(2);
        }
        (Some(ca), cert, key) => {
            let identity = cert.as_deref().zip(key.as_deref());
            match tls_config(ca, identity) {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    eprintln!("raftctl: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let nodes = match parse_cluster(&cli.cluster) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("raftctl: {e}");
            return ExitCode::from(2);
        }
    };
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        eprintln!("raftctl: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftctl: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let opts = ClientOptions {
        deadline: Duration::from_secs_f64(cli.timeout),
        attempt_timeout: Duration::from_secs_f64(cli.timeout.min(3.0)),
        tls,
        ..ClientOptions::default()
    };
    rt.block_on(run(cli, nodes, opts))
}

fn parse_cluster(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = part
            .to_socket_addrs()
            .map_err(|e| format!("bad --cluster address {part:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--cluster address {part:?} resolves to nothing"))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err("--cluster lists no nodes; give HOST:PORT,...".into());
    }
    Ok(out)
}

async fn run(cli: Cli, nodes: Vec<SocketAddr>, opts: ClientOptions) -> ExitCode {
    let mut client = Client::new(nodes.clone(), opts.clone());
    let json_out = cli.json;
    let result: Result<(serde_json::Value, String, u8), ClientError> = match cli.command {
        Cmd::Put {
            key,
            value,
            lease: Some(lease),
        } => store::put_with_lease(&mut client, &key, &value, lease).await,
        Cmd::Put {
            key,
            value,
            lease: None,
        } => client.put(&key, &value).await.map(|()| {
            (
                json!({"ok": true, "key": key, "value": value}),
                "OK".to_string(),
                0,
            )
        }),
        Cmd::Get {
            key,
            stale,
            prefix,
            limit,
            keys_only,
            count_only,
            rev,
        } if prefix || limit > 0 || keys_only || count_only || rev.is_some() => {
            store::get(
                &mut client,
                store::GetArgs {
                    key,
                    prefix,
                    limit,
                    keys_only,
                    count_only,
                    rev,
                    stale,
                },
            )
            .await
        }
        Cmd::Get { key, stale, .. } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            client.get(&key, consistency).await.map(|value| {
                let text = value
                    .clone()
                    .unwrap_or_else(|| format!("(key {key:?} not found)"));
                let code = if value.is_some() { 0 } else { 1 };
                (json!({"key": key, "value": value}), text, code)
            })
        }
        Cmd::Del { key, prefix: true } => store::del_prefix(&mut client, &key).await,
        Cmd::Del { key, prefix: false } => client
            .delete(&key)
            .await
            .map(|()| (json!({"ok": true, "key": key}), "OK".to_string(), 0)),
        Cmd::Watch { key, prefix, rev } => {
            store::watch(nodes.clone(), opts, &key, prefix, rev, json_out).await
        }
        Cmd::Txn => store::txn(&mut client).await,
        Cmd::Compact { rev } => store::compact(&mut client, rev).await,
        Cmd::Lease(cmd) => store::lease(&mut client, cmd, json_out).await,
        Cmd::Elect {
            name,
            proposal,
            ttl,
        } => elect::elect(nodes.clone(), opts, &name, &proposal, ttl, json_out).await,
        Cmd::Cas {
            key,
            expected,
            new,
            expect_absent,
            delete,
        } => {
            let (expected, new) = match cas_args(expected, new, expect_absent, delete) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("raftctl: {e}");
                    return ExitCode::from(2);
                }
            };
            client
                .cas(&key, expected.as_deref(), new.as_deref())
                .await
                .map(|(ok, value)| {
                    let shown = value.clone().unwrap_or_else(|| "(absent)".into());
                    let text = if ok {
                        format!("OK (value now {shown})")
                    } else {
                        format!("NOT SWAPPED: current value is {shown}")
                    };
                    (
                        json!({"key": key, "succeeded": ok, "value": value}),
                        text,
                        if ok { 0 } else { 1 },
                    )
                })
        }
        Cmd::Cert(_)
        | Cmd::Timeline { .. }
        | Cmd::Snapshot(snapshot::SnapshotCmd::Status { .. }) => {
            unreachable!("handled before connecting")
        }
        Cmd::Snapshot(snapshot::SnapshotCmd::Save { file }) => {
            snapshot::save(&mut client, &file).await
        }
        Cmd::Member(cmd) => members::member(&mut client, cmd).await,
        Cmd::Leader(cmd) => members::leader(&mut client, cmd).await,
        Cmd::Endpoint(cmd) => endpoint::run(&mut client, &nodes, cmd, json_out).await,
        Cmd::Status => {
            let mut rows = Vec::new();
            let mut text = Vec::new();
            for addr in &nodes {
                match client.status_of(*addr).await {
                    Ok(s) => {
                        text.push(format!(
                            "{addr}  node {}  {:<9} term {:<4} leader {:<4} commit {:<6} applied {:<6} last_log {}",
                            s.node_id,
                            s.role,
                            s.term,
                            s.leader_id.map_or("-".to_string(), |l| l.to_string()),
                            s.commit_index,
                            s.last_applied,
                            s.last_log_index
                        ));
                        rows.push(serde_json::to_value(&s).unwrap_or(serde_json::Value::Null));
                    }
                    Err(e) => {
                        text.push(format!("{addr}  unreachable ({e})"));
                        rows.push(json!({"addr": addr.to_string(), "error": e.to_string()}));
                    }
                }
            }
            let reachable = rows.iter().any(|r| r.get("error").is_none());
            if !reachable {
                Err(ClientError::Unavailable(
                    Duration::from_secs_f64(cli.timeout),
                    "every node".into(),
                ))
            } else {
                Ok((json!({"nodes": rows}), text.join("\n"), 0))
            }
        }
    };
    match result {
        // Streaming commands (watch, elect) printed as they went.
        Ok((serde_json::Value::Null, text, code)) if text.is_empty() => ExitCode::from(code),
        Ok((value, text, code)) => {
            if json_out {
                println!("{value}");
            } else {
                println!("{text}");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            if json_out {
                println!("{}", json!({"error": e.to_string()}));
            }
            eprintln!("raftctl: {e}");
            ExitCode::from(3)
        }
    }
}

fn cas_args(
    expected: Option<String>,
    new: Option<String>,
    expect_absent: bool,
    delete: bool,
) -> Result<(Option<String>, Option<String>), String> {
    // Positional arguments fill EXPECTED first; with --expect-absent the only one is NEW.
    let (expected, new) = match (expect_absent, expected, new) {
        (true, Some(v), None) => (None, Some(v)),
        (true, None, None) => (None, None),
        (true, Some(_), Some(_)) => return Err("with --expect-absent give only KEY and NEW".into()),
        (false, e, n) => (e, n),
        (true, None, Some(v)) => (None, Some(v)),
    };
    if !expect_absent && expected.is_none() {
        return Err("cas needs EXPECTED (or --expect-absent)".into());
    }
    match (delete, new) {
        (true, None) => Ok((expected, None)),
        (true, Some(_)) => Err("with --delete give no NEW value".into()),
        (false, Some(n)) => Ok((expected, Some(n))),
        (false, None) => Err("cas needs NEW (or --delete)".into()),
    }
}
