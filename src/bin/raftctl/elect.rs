//! `raftctl elect NAME PROPOSAL`: the leader-election recipe on the store's primitives.
//!
//! 1. Grant a lease of `--ttl` seconds and keep it alive (every third of the ttl).
//! 2. Create NAME = PROPOSAL with the lease, only if NAME does not exist (a transaction on
//!    `create_revision == 0`). If that succeeds, this process leads, and the transaction's
//!    revision is its fencing token: pass it to whatever the leader writes to, which refuses
//!    any token lower than one it has seen.
//! 3. Otherwise watch NAME until it is deleted (its holder resigned, or its lease expired), and
//!    try again.
//!
//! A leader counts its lease from when it *sent* the last keep-alive that was answered: the
//! cluster expires the lease no earlier than a ttl after that keep-alive reached the leader,
//! so this process stops calling itself leader before anyone else can become it. It prints
//! `LEADER`, then `HOLD` with the time it may lead until after each keep-alive, and `LOST` if
//! that time passes, or `RESIGNED` on SIGTERM / Ctrl-C (it revokes the lease, so the next
//! candidate need not wait for the ttl). Times are ms since the Unix epoch.

use crate::members::Shown;
use raftd::client::{Client, ClientError, ClientOptions, WatchEvent, Watcher};
use raftd::kv::mvcc::EventKind;
use raftd::kv::txn::{CmpOp, Compare, CompareValue, Target, TxnOp, TxnResponse};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Wall-clock ms of a monotonic instant (for printing only).
fn wall_ms(at: Instant) -> u128 {
    let now = Instant::now();
    if at >= now {
        now_ms() + (at - now).as_millis()
    } else {
        now_ms().saturating_sub((now - at).as_millis())
    }
}

fn say(json_out: bool, what: &str, proposal: &str, fields: serde_json::Value) {
    if json_out {
        let mut v = json!({"event": what, "proposal": proposal});
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), fields.as_object()) {
            obj.extend(extra.clone());
        }
        println!("{v}");
    } else {
        let rest: Vec<String> = fields
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        println!("{what} {proposal} {}", rest.join(" "));
    }
}

pub async fn elect(
    nodes: Vec<SocketAddr>,
    opts: ClientOptions,
    name: &str,
    proposal: &str,
    ttl: u64,
    json_out: bool,
) -> Result<Shown, ClientError> {
    let mut client = Client::new(nodes.clone(), opts.clone());
    let sent = Instant::now();
    let (lease, ttl) = client.lease_grant(ttl).await?;
    // Until when this process may believe its lease is alive.
    let valid_until = Arc::new(Mutex::new(sent + Duration::from_secs(ttl)));
    let keeper = {
        let (valid_until, nodes, opts) = (valid_until.clone(), nodes.clone(), opts.clone());
        tokio::spawn(async move {
            let mut c = Client::new(nodes, opts);
            loop {
                tokio::time::sleep(Duration::from_millis((ttl * 1000 / 3).max(300))).await;
                let sent = Instant::now();
                match c.lease_keep_alive(lease).await {
                    Ok(_) => {
                        *valid_until.lock().unwrap_or_else(|p| p.into_inner()) =
                            sent + Duration::from_secs(ttl);
                    }
                    Err(ClientError::LeaseNotFound(_)) => return,
                    Err(_) => {} // try again; the lease may still be alive
                }
            }
        })
    };
    let until = || *valid_until.lock().unwrap_or_else(|p| p.into_inner());
    let result = campaign(
        &mut client,
        &nodes,
        &opts,
        name,
        proposal,
        lease,
        json_out,
        until,
    )
    .await;
    keeper.abort();
    match result {
        Ok(Outcome::Resigned) => {
            let _ = client.lease_revoke(lease).await;
            say(json_out, "RESIGNED", proposal, json!({"at": now_ms()}));
            Ok((json!(null), String::new(), 0))
        }
        Ok(Outcome::Lost) => Ok((json!(null), String::new(), 1)),
        Err(e) => Err(e),
    }
}

enum Outcome {
    Resigned,
    Lost,
}

#[allow(clippy::too_many_arguments)]
async fn campaign(
    client: &mut Client,
    nodes: &[SocketAddr],
    opts: &ClientOptions,
    name: &str,
    proposal: &str,
    lease: u64,
    json_out: bool,
    until: impl Fn() -> Instant,
) -> Result<Outcome, ClientError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClientError::BadRequest(format!("cannot catch SIGTERM: {e}")))?;
    loop {
        let t = client
            .txn(
                vec![Compare {
                    key: name.to_string(),
                    target: Target::CreateRevision,
                    op: CmpOp::Eq,
                    value: CompareValue::Int(0),
                }],
                vec![TxnOp::Put {
                    key: name.to_string(),
                    value: proposal.to_string(),
                    lease,
                }],
                vec![TxnOp::Get {
                    key: name.to_string(),
                }],
            )
            .await?;
        if t.succeeded {
            say(
                json_out,
                "LEADER",
                proposal,
                json!({"at": now_ms(), "token": t.revision}),
            );
            let mut shown = until();
            say(json_out, "HOLD", proposal, json!({"until": wall_ms(shown)}));
            loop {
                let deadline = until();
                if deadline != shown {
                    shown = deadline;
                    say(json_out, "HOLD", proposal, json!({"until": wall_ms(shown)}));
                }
                if Instant::now() >= deadline {
                    say(json_out, "LOST", proposal, json!({"at": now_ms()}));
                    return Ok(Outcome::Lost);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(100)).into()) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(Outcome::Resigned),
                    _ = term.recv() => return Ok(Outcome::Resigned),
                }
            }
        }
        let holder = match t.responses.first() {
            Some(TxnResponse::Get { value, .. }) => value.clone().unwrap_or_default(),
            _ => String::new(),
        };
        say(
            json_out,
            "WAITING",
            proposal,
            json!({"leader": holder, "at": now_ms()}),
        );
        // Wait until the holder's key goes, then campaign again.
        let mut w = Watcher::new(
            nodes.to_vec(),
            opts.clone(),
            name,
            None,
            false,
            Some(t.revision + 1),
        )?;
        loop {
            tokio::select! {
                ev = w.next() => {
                    if let WatchEvent::Change(e) = ev? {
                        if e.kind == EventKind::Delete {
                            break;
                        }
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Resigned),
                _ = term.recv() => return Ok(Outcome::Resigned),
            }
        }
    }
}
