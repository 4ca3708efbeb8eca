//! One client connection: read frames, answer each request by its `id`.
//!
//! Bad input is answered, never fatal to the node: a frame that is not a JSON object gets
//! `BadRequest` with `"id": null` and the connection is closed (the stream can no longer be
//! trusted); a well-formed object with an unknown type or a mistyped field gets `BadRequest`
//! with its id and the connection stays open; an oversized frame gets `TooLarge` and is closed.

use super::node::NodeRequest;
use crate::rpc::types::{ClientRequest, ClientResponse, ErrorCode};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use raftd_transport::ClientConn;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What to do after answering a frame.
enum Next {
    Continue,
    Close,
}

pub async fn serve(conn: ClientConn, node: mpsc::Sender<NodeRequest>, shutdown: CancellationToken) {
    let ClientConn {
        peer_addr,
        first_frame,
        mut framed,
    } = conn;
    let mut pending = Some(first_frame);
    loop {
        let frame: BytesMut = match pending.take() {
            Some(frame) => frame,
            None => {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = framed.next() => next,
                };
                match next {
                    None => return,
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // The codec refuses frames over the limit before reading them.
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            let resp = ClientResponse::error(
                                None,
                                ErrorCode::TooLarge,
                                format!("frame rejected: {e}"),
                            );
                            let _ = framed.send(encode(&resp)).await;
                        }
                        ::log::debug!("client {peer_addr}: closing after a framing error: {e}");
                        return;
                    }
                }
            }
        };
        let (resp, next) = answer(&frame, &node, &shutdown).await;
        if framed.send(encode(&resp)).await.is_err() {
            return;
        }
        if let Next::Close = next {
            ::log::debug!("client {peer_addr}: closing after a frame that is not a JSON object");
            return;
        }
    }
}

async fn answer(
    frame: &[u8],
    node: &mpsc::Sender<NodeRequest>,
    shutdown: &CancellationToken,
) -> (ClientResponse, Next) {
    let value: serde_json::Value = match serde_json::from_slice(frame) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            let resp = ClientResponse::error(
                None,
                ErrorCode::BadRequest,
                "a request must be a JSON object",
            );
            return (resp, Next::Close);
        }
        Err(e) => {
            let resp = ClientResponse::error(
                None,
                ErrorCode::BadRequest,
                format!("not valid UTF-8 JSON: {e}"),
            );
            return (resp, Next::Close);
        }
    };
    let id = value.get("id").and_then(|v| v.as_u64());
    let request: ClientRequest = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            let resp =
                ClientResponse::error(id, ErrorCode::BadRequest, format!("bad request: {e}"));
            return (resp, Next::Continue);
        }
    };
    let shutting_down = || {
        ClientResponse::error(
            Some(request.id()),
            ErrorCode::ShuttingDown,
            "node is stopping; use another node",
        )
    };
    if shutdown.is_cancelled() {
        return (shutting_down(), Next::Close);
    }
    match request {
        ClientRequest::Status { id } => {
            let (tx, rx) = oneshot::channel();
            if node
                .send(NodeRequest::Status { id, reply: tx })
                .await
                .is_err()
            {
                return (shutting_down(), Next::Close);
            }
            match rx.await {
                Ok(status) => (ClientResponse::Status(status), Next::Continue),
                Err(_) => (shutting_down(), Next::Close),
            }
        }
    }
}

fn encode(resp: &ClientResponse) -> Bytes {
    // Serializing our own response types cannot fail (no maps with non-string keys, no
    // non-finite floats); fall back to a fixed error rather than panic if it ever did.
    match serde_json::to_vec(resp) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::from_static(br#"{"type":"Error","id":null,"code":"BadRequest","message":"internal encoding error"}"#),
    }
}
