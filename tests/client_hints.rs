//! The client library against fake nodes on 127.0.0.1: `NotLeader` hints are followed, but
//! stale ones cannot trap it. Found by raftsim (seed 49325): two removed nodes still running,
//! one naming the other as leader and the other knowing none, kept a client going back and
//! forth between them while the real leader was never asked.

use futures_util::{SinkExt, StreamExt};
use raftd::client::{Client, ClientOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A fake node: answers every request with `answer(request)`.
async fn fake(answer: impl Fn(&Value) -> Value + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
                while let Some(Ok(frame)) = framed.next().await {
                    let Ok(req) = serde_json::from_slice::<Value>(&frame) else {
                        return;
                    };
                    let resp = answer(&req);
                    let bytes = serde_json::to_vec(&resp).expect("json");
                    if framed.send(bytes::Bytes::from(bytes)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn not_leader(req: &Value, hint: Option<(u64, SocketAddr)>) -> Value {
    json!({
        "type": "Error",
        "id": req["id"],
        "code": "NotLeader",
        "message": "not the leader",
        "leader_id": hint.map(|h| h.0),
        "leader_addr": hint.map(|h| h.1.to_string()),
    })
}

#[test]
fn stale_hints_between_two_nodes_do_not_keep_the_client_from_the_leader() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let leader = fake(|req| json!({"type": "Ok", "id": req["id"], "revision": 7})).await;
        // B knows no leader; A names B.
        let b = fake(|req| not_leader(req, None)).await;
        let a = fake(move |req| not_leader(req, Some((3, b)))).await;
        // In this order, "the node after the one that knew nothing" is A again: a client that
        // moves on from where it is would go A → B → A → B … and never reach the leader.
        let mut client = Client::new(
            vec![a, leader, b],
            ClientOptions {
                deadline: Duration::from_secs(5),
                ..ClientOptions::default()
            },
        );
        let put = tokio::time::timeout(Duration::from_secs(10), client.put("k", "v")).await;
        assert!(
            matches!(put, Ok(Ok(()))),
            "the leader was never reached: {put:?}"
        );
    });
}

#[test]
fn a_hint_is_followed_to_the_leader_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let leader = fake(|req| json!({"type": "Ok", "id": req["id"], "revision": 1})).await;
        let follower = fake(move |req| not_leader(req, Some((2, leader)))).await;
        // The hint names a node the client was not told about: it is added and asked.
        let mut client = Client::new(vec![follower], ClientOptions::default());
        client.put("k", "v").await.expect("put through the hint");
    });
}
