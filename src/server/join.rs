//! `--join`: a node with an empty data dir learns the cluster's members from a member it is
//! pointed at, once an operator has added it (`raftctl member add ID ADDR`). It needs them to
//! answer the leader (each node sends on its own connections, so it must know where the leader
//! listens); from then on the configuration in its log keeps them current.

use crate::client::{tls_config, Client, ClientError, ClientOptions};
use crate::config::NodeConfig;
use crate::rpc::types::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the members are asked again while this node is not in the configuration yet.
const RETRY: Duration = Duration::from_millis(500);
/// How often the wait is logged.
const REMIND: Duration = Duration::from_secs(10);

/// Waits until the cluster's configuration names this node, and returns its members (this node
/// included). `None` if `cancel` fired first.
pub async fn wait_to_be_added(
    cfg: &NodeConfig,
    cancel: &CancellationToken,
) -> Result<Option<BTreeMap<NodeId, SocketAddr>>, String> {
    let tls = match &cfg.security.tls {
        // A node certificate is also a client certificate (clientAuth), so this works with
        // --client-cert-auth too.
        Some(files) => Some(
            tls_config(&files.ca, Some((&files.cert, &files.key)))
                .map_err(|e| format!("cannot use the TLS files to ask the members: {e}"))?,
        ),
        None => None,
    };
    let mut client = Client::new(
        cfg.join.clone(),
        ClientOptions {
            deadline: Duration::from_secs(3),
            max_frame_bytes: cfg.max_frame_bytes,
            tls,
            ..ClientOptions::default()
        },
    );
    let mut reminded: Option<Instant> = None;
    loop {
        let answer = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            a = client.member_list() => a,
        };
        match answer {
            Ok(members) if members.iter().any(|m| m.id == cfg.id) => {
                let mut out = BTreeMap::new();
                for m in members {
                    if m.id == cfg.id {
                        out.insert(m.id, cfg.listen);
                        continue;
                    }
                    match m.addr.parse::<SocketAddr>() {
                        Ok(a) => {
                            out.insert(m.id, a);
                        }
                        Err(e) => ::log::warn!(
                            "node {}: member {} has an address that is not HOST:PORT ({:?}: {e}); it cannot be reached",
                            cfg.id,
                            m.id,
                            m.addr
                        ),
                    }
                }
                ::log::info!(
                    "node {}: the cluster's configuration names this node; joining with members {:?}",
                    cfg.id,
                    out.keys().collect::<Vec<_>>()
                );
                return Ok(Some(out));
            }
            Ok(_) => {
                if reminded.is_none_or(|t| t.elapsed() >= REMIND) {
                    ::log::info!(
                        "node {}: waiting to be added; run `raftctl --cluster {} member add {} {}`",
                        cfg.id,
                        cfg.join
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        cfg.id,
                        cfg.listen
                    );
                    reminded = Some(Instant::now());
                }
            }
            Err(e @ ClientError::BadRequest(_)) => return Err(e.to_string()),
            Err(e) => {
                if reminded.is_none_or(|t| t.elapsed() >= REMIND) {
                    ::log::warn!("node {}: cannot ask the members to join yet: {e}", cfg.id);
                    reminded = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
