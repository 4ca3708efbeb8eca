//! `raftctl get --prefix`, `del --prefix`, `txn`, `compact`, `watch` and `lease …`: the store
//! requests of protocol v2.

use crate::members::Shown;
use clap::Subcommand;
use raftd::client::store::RangeRequest;
use raftd::client::{Client, ClientError, ClientOptions, WatchEvent, Watcher};
use raftd::kv::mvcc::{EventKind, KeyValue};
use raftd::kv::txn::{Txn, TxnResponse};
use serde_json::json;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Grant a lease of TTL seconds; prints its id.
    Grant { ttl: u64 },
    /// Keep lease ID alive (every third of its ttl) until interrupted, or once with --once.
    Keepalive {
        id: u64,
        #[arg(long)]
        once: bool,
    },
    /// Revoke lease ID, deleting its keys.
    Revoke { id: u64 },
    /// What is left of lease ID's ttl, and its keys.
    Ttl { id: u64 },
}

/// `get` with a range: `--prefix`, `--limit`, `--keys-only`, `--rev`.
pub struct GetArgs {
    pub key: String,
    pub prefix: bool,
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    pub rev: Option<u64>,
    pub stale: bool,
}

pub async fn get(client: &mut Client, a: GetArgs) -> Result<Shown, ClientError> {
    let r = client
        .range(&RangeRequest {
            key: a.key.clone(),
            end: None,
            prefix: a.prefix,
            limit: a.limit,
            keys_only: a.keys_only,
            count_only: a.count_only,
            revision: a.rev,
            stale: a.stale,
        })
        .await?;
    let mut text: Vec<String> = Vec::new();
    if a.count_only {
        text.push(r.count.to_string());
    }
    for kv in &r.kvs {
        text.push(kv.key.clone());
        if let Some(v) = &kv.value {
            text.push(v.clone());
        }
    }
    if r.more {
        text.push(format!(
            "(… {} more; raise --limit)",
            r.count - r.kvs.len() as u64
        ));
    }
    // A single-key get of a missing key exits 1, like v1's get; an empty prefix is no error.
    let code = if !a.prefix && r.count == 0 { 1 } else { 0 };
    if !a.prefix && r.count == 0 {
        text.push(format!("(key {:?} not found)", a.key));
    }
    Ok((
        json!({"kvs": r.kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": r.more, "count": r.count, "revision": r.revision}),
        text.join("\n"),
        code,
    ))
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    serde_json::to_value(kv).unwrap_or(serde_json::Value::Null)
}

pub async fn del_prefix(client: &mut Client, key: &str) -> Result<Shown, ClientError> {
    let (deleted, revision) = client.delete_range(key, None, true).await?;
    Ok((
        json!({"deleted": deleted, "revision": revision}),
        deleted.to_string(),
        0,
    ))
}

pub async fn put_with_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    lease: u64,
) -> Result<Shown, ClientError> {
    let revision = client.put_with_lease(key, value, lease).await?;
    Ok((
        json!({"ok": true, "key": key, "value": value, "lease": lease, "revision": revision}),
        "OK".to_string(),
        0,
    ))
}

/// A transaction read as JSON from stdin: `{"compare": […], "success": […], "failure": […]}`.
pub async fn txn(client: &mut Client) -> Result<Shown, ClientError> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| {
        ClientError::BadRequest(format!("cannot read the transaction from stdin: {e}"))
    })?;
    let t: Txn = serde_json::from_str(&input).map_err(|e| {
        ClientError::BadRequest(format!(
            "stdin is not a transaction ({{\"compare\":[…],\"success\":[…],\"failure\":[…]}}): {e}"
        ))
    })?;
    t.validate().map_err(ClientError::BadRequest)?;
    let a = client.txn(t.compare, t.success, t.failure).await?;
    let mut text = vec![if a.succeeded { "SUCCESS" } else { "FAILURE" }.to_string()];
    for r in &a.responses {
        text.push(match r {
            TxnResponse::Put {} => "OK".to_string(),
            TxnResponse::Get { value, .. } => value.clone().unwrap_or_else(|| "(not found)".into()),
            TxnResponse::Range(r) => r
                .kvs
                .iter()
                .map(|kv| format!("{}\n{}", kv.key, kv.value.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n"),
            TxnResponse::Delete { deleted } | TxnResponse::DeleteRange { deleted } => {
                deleted.to_string()
            }
        });
    }
    Ok((
        json!({"succeeded": a.succeeded, "responses": a.responses, "revision": a.revision}),
        text.join("\n"),
        if a.succeeded { 0 } else { 1 },
    ))
}

pub async fn compact(client: &mut Client, revision: u64) -> Result<Shown, ClientError> {
    client.compact(revision).await?;
    Ok((
        json!({"ok": true, "compact_revision": revision}),
        format!("compacted revision {revision}"),
        0,
    ))
}

pub async fn lease(
    client: &mut Client,
    cmd: LeaseCmd,
    json_out: bool,
) -> Result<Shown, ClientError> {
    match cmd {
        LeaseCmd::Grant { ttl } => {
            let (id, ttl) = client.lease_grant(ttl).await?;
            Ok((
                json!({"lease_id": id, "ttl": ttl}),
                format!("lease {id} granted with TTL({ttl}s)"),
                0,
            ))
        }
        LeaseCmd::Keepalive { id, once } => loop {
            let ttl = client.lease_keep_alive(id).await?;
            if once {
                return Ok((
                    json!({"lease_id": id, "ttl": ttl}),
                    format!("lease {id} keepalived with TTL({ttl})"),
                    0,
                ));
            }
            if json_out {
                println!("{}", json!({"lease_id": id, "ttl": ttl}));
            } else {
                println!("lease {id} keepalived with TTL({ttl})");
            }
            tokio::time::sleep(Duration::from_millis((ttl * 1000 / 3).max(500))).await;
        },
        LeaseCmd::Revoke { id } => {
            let deleted = client.lease_revoke(id).await?;
            Ok((
                json!({"ok": true, "lease_id": id, "deleted": deleted}),
                format!("lease {id} revoked ({deleted} keys deleted)"),
                0,
            ))
        }
        LeaseCmd::Ttl { id } => {
            let l = client.lease_time_to_live(id).await?;
            Ok((
                json!({"lease_id": id, "ttl": l.ttl, "granted_ttl": l.granted_ttl, "keys": l.keys}),
                format!(
                    "lease {id} granted with TTL({}s), remaining({}s), attached keys({})",
                    l.granted_ttl,
                    l.ttl,
                    l.keys.join(", ")
                ),
                0,
            ))
        }
    }
}

/// Prints every change of KEY (or the prefix) from `rev` on, one line each, until interrupted
/// or the watch fails for good.
pub async fn watch(
    nodes: Vec<SocketAddr>,
    opts: ClientOptions,
    key: &str,
    prefix: bool,
    rev: Option<u64>,
    json_out: bool,
) -> Result<Shown, ClientError> {
    let mut w = Watcher::new(nodes, opts, key, None, prefix, rev)?;
    loop {
        match w.next().await? {
            WatchEvent::Change(e) => {
                if json_out {
                    println!("{}", serde_json::to_value(&e).unwrap_or_default());
                } else {
                    match e.kind {
                        EventKind::Put => println!(
                            "PUT {} {} (rev {})",
                            e.key,
                            e.value.unwrap_or_default(),
                            e.mod_revision
                        ),
                        EventKind::Delete => println!("DELETE {} (rev {})", e.key, e.mod_revision),
                    }
                }
            }
            WatchEvent::Progress(_) => {}
        }
    }
}
