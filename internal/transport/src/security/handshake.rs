//! The peer handshake: what must happen on a connection, after TLS (if any) and before the
//! first Raft message, for its Hello to count.
//!
//! ```text
//! connector                                   acceptor
//!   Hello {node_id: a, nonce: Na}     ──▶       (TLS: a's certificate must name node a)
//!                                     ◀──     Challenge {node_id: b, nonce: Nb, proof: P_acceptor}
//!   (checks P_acceptor)
//!   Auth {proof: P_connector}         ──▶       (checks P_connector)
//!   Raft messages…                    ──▶
//! ```
//!
//! Without a cluster secret the Hello carries no nonce and only the first line happens. When a
//! check fails, the checking side closes the connection; the acceptor first sends
//! `HandshakeRefused {reason}` so that an honest but misconfigured peer's log says why.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::secret::{fresh_nonce, from_hex, to_hex, Side, Transcript, NONCE_BYTES, PROOF_BYTES};
use super::{tls, Security};
use crate::stream::Stream;

pub(crate) type Conn = Framed<Stream, LengthDelimitedCodec>;

/// The frames of the handshake. Only `Hello` can start a connection; a first frame that is not
/// one makes it a client connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum HandshakeFrame {
    Hello {
        node_id: u64,
        /// The connector's nonce, in hex; present when it has a cluster secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    Challenge {
        node_id: u64,
        nonce: String,
        proof: String,
    },
    Auth {
        proof: String,
    },
    HandshakeRefused {
        reason: String,
    },
}

impl HandshakeFrame {
    pub fn encode(&self) -> bytes::Bytes {
        // A fixed set of string and integer fields: serializing cannot fail. Fall back to an
        // empty object rather than panic if it ever did; the other side then just closes.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec()))
    }

    pub fn decode(frame: &[u8]) -> Option<HandshakeFrame> {
        serde_json::from_slice(frame).ok()
    }
}

/// Why a handshake failed, in words for the log of the side that saw it.
pub(crate) type Refusal = String;

/// The acceptor's half. `hello` is the connection's first frame. On success the connection is
/// node `node_id`'s; on failure the reason has been sent to the other end, and the caller closes.
pub(crate) async fn accept(
    security: &Security,
    own_id: u64,
    conn: &mut Conn,
    node_id: u64,
    nonce: Option<&str>,
    timeout: Duration,
) -> Result<(), Refusal> {
    let result = tokio::time::timeout(timeout, check(security, own_id, conn, node_id, nonce))
        .await
        .unwrap_or_else(|_| Err(format!("no Auth frame within {timeout:?}")));
    if let Err(reason) = &result {
        let refused = HandshakeFrame::HandshakeRefused {
            reason: reason.clone(),
        };
        // Best effort: a stranger may not read at all.
        let _ = tokio::time::timeout(timeout, conn.send(refused.encode())).await;
    }
    result
}

async fn check(
    security: &Security,
    own_id: u64,
    conn: &mut Conn,
    node_id: u64,
    nonce: Option<&str>,
) -> Result<(), Refusal> {
    if security.tls.is_some() {
        match conn.get_ref().peer_certificate() {
            None => {
                return Err(format!(
                    "a peer must present a certificate from the cluster CA naming DNS:{}",
                    tls::node_name(node_id)
                ))
            }
            Some(cert) if !tls::names_node(cert, node_id) => {
                return Err(format!(
                    "the client certificate does not name DNS:{}",
                    tls::node_name(node_id)
                ))
            }
            Some(_) => {}
        }
    }
    let Some(secret) = &security.secret else {
        return Ok(());
    };
    let connector_nonce = match nonce {
        None => {
            return Err(
                "this node requires peers to prove the cluster secret (--cluster-secret-file)"
                    .into(),
            )
        }
        Some(hex) => {
            from_hex::<NONCE_BYTES>(hex).ok_or("the Hello's nonce is not 32 bytes of hex")?
        }
    };
    let transcript = Transcript {
        connector: node_id,
        acceptor: own_id,
        connector_nonce,
        acceptor_nonce: fresh_nonce(),
    };
    let challenge = HandshakeFrame::Challenge {
        node_id: own_id,
        nonce: to_hex(&transcript.acceptor_nonce),
        proof: to_hex(&secret.proof(Side::Acceptor, &transcript)),
    };
    conn.send(challenge.encode())
        .await
        .map_err(|e| format!("cannot send the challenge: {e}"))?;
    let frame = match conn.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(format!("reading the Auth frame: {e}")),
        None => return Err("closed before sending its Auth frame".into()),
    };
    let proof = match HandshakeFrame::decode(&frame) {
        Some(HandshakeFrame::Auth { proof }) => proof,
        _ => return Err("the frame after the challenge is not an Auth frame".into()),
    };
    match from_hex::<PROOF_BYTES>(&proof) {
        Some(p) if secret.verify(Side::Connector, &transcript, &p) => Ok(()),
        _ => Err("wrong proof of the cluster secret (a different secret, or a replay)".into()),
    }
}

/// The connector's half, on a fresh connection to `peer_id`. On success, Raft messages may
/// follow; on failure, the reason (the caller closes the connection).
pub(crate) async fn connect(
    security: &Security,
    own_id: u64,
    peer_id: u64,
    conn: &mut Conn,
) -> Result<(), Refusal> {
    let Some(secret) = &security.secret else {
        let hello = HandshakeFrame::Hello {
            node_id: own_id,
            nonce: None,
        };
        return conn
            .send(hello.encode())
            .await
            .map_err(|e| format!("sending Hello: {e}"));
    };
    let connector_nonce = fresh_nonce();
    let hello = HandshakeFrame::Hello {
        node_id: own_id,
        nonce: Some(to_hex(&connector_nonce)),
    };
    conn.send(hello.encode())
        .await
        .map_err(|e| format!("sending Hello: {e}"))?;
    let frame = match conn.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(format!("reading the challenge: {e}")),
        None => return Err("closed the connection before sending a challenge".into()),
    };
    let (node_id, nonce, proof) = match HandshakeFrame::decode(&frame) {
        Some(HandshakeFrame::Challenge {
            node_id,
            nonce,
            proof,
        }) => (node_id, nonce, proof),
        Some(HandshakeFrame::HandshakeRefused { reason }) => {
            return Err(format!("refused our handshake: {reason}"))
        }
        _ => return Err("answered Hello with something other than a challenge".into()),
    };
    if node_id != peer_id {
        return Err(format!(
            "is node {node_id}, not node {peer_id} (check --peers)"
        ));
    }
    let acceptor_nonce = from_hex::<NONCE_BYTES>(&nonce)
        .ok_or("sent a challenge whose nonce is not 32 bytes of hex")?;
    let transcript = Transcript {
        connector: own_id,
        acceptor: peer_id,
        connector_nonce,
        acceptor_nonce,
    };
    match from_hex::<PROOF_BYTES>(&proof) {
        Some(p) if secret.verify(Side::Acceptor, &transcript, &p) => {}
        _ => {
            return Err(
                "does not know the cluster secret (its proof is wrong: a different --cluster-secret-file?)"
                    .into(),
            )
        }
    }
    let auth = HandshakeFrame::Auth {
        proof: to_hex(&secret.proof(Side::Connector, &transcript)),
    };
    conn.send(auth.encode())
        .await
        .map_err(|e| format!("sending Auth: {e}"))
}
