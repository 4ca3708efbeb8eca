//! Helpers shared by the integration tests: a test message type, cluster setup, and bounded waits.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use raftd_transport::{reject_clients, ClientHandler, PeerEvent, Transport, TransportConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;

/// Upper bound for any single wait in the tests; generous because the machine is shared.
pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Ping { n: u64 },
    Blob(String),
}

pub struct Node {
    pub id: u64,
    pub addr: SocketAddr,
    pub t: Transport<Msg>,
    pub rx: Receiver<PeerEvent<Msg>>,
}

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

pub async fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An address on which nothing listens (bound once, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = bind_local().await;
    l.local_addr().unwrap()
}

/// Starts `n` fully meshed nodes with ids 1..=n; `tweak` adjusts each config before start.
pub async fn cluster(
    n: u64,
    tweak: impl Fn(&mut TransportConfig),
    handler: impl Fn(u64) -> ClientHandler,
) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(bind_local().await);
    }
    let addrs: HashMap<u64, SocketAddr> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let peers = addrs
            .iter()
            .filter(|(&p, _)| p != id)
            .map(|(&p, &a)| (p, a))
            .collect();
        let mut cfg = TransportConfig::new(id, peers);
        tweak(&mut cfg);
        let addr = listener.local_addr().unwrap();
        let (t, rx) = Transport::start(cfg, listener, handler(id));
        nodes.push(Node { id, addr, t, rx });
    }
    nodes
}

pub async fn simple_cluster(n: u64) -> Vec<Node> {
    cluster(n, |_| {}, |_| reject_clients()).await
}

pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Receives events until `pred` matches one, returning it; all events seen (including it) are returned too.
pub async fn wait_event(
    rx: &mut Receiver<PeerEvent<Msg>>,
    what: &str,
    mut pred: impl FnMut(&PeerEvent<Msg>) -> bool,
) -> Vec<PeerEvent<Msg>> {
    within(what, async {
        let mut seen = Vec::new();
        loop {
            let ev = rx.recv().await.expect("event channel closed");
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    })
    .await
}

/// Waits until Connected has been seen for every id in `peers`.
pub async fn wait_connected(rx: &mut Receiver<PeerEvent<Msg>>, peers: &[u64]) {
    let mut missing: HashSet<u64> = peers.iter().copied().collect();
    wait_event(rx, "Connected events", |ev| {
        if let PeerEvent::Connected { peer } = ev {
            missing.remove(peer);
        }
        missing.is_empty()
    })
    .await;
}

/// Waits for every node to have its outbound connections to all the others up.
pub async fn wait_mesh(nodes: &mut [Node]) {
    let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    for node in nodes.iter_mut() {
        let others: Vec<u64> = ids.iter().copied().filter(|&p| p != node.id).collect();
        wait_connected(&mut node.rx, &others).await;
    }
}

/// Sends pings from `from` to `to` until one arrives on `to_rx` (retrying, because a connection may be
/// in the middle of being re-established). Returns the number of attempts.
pub async fn deliver(
    from: &Transport<Msg>,
    to: u64,
    to_rx: &mut Receiver<PeerEvent<Msg>>,
    tag: u64,
) -> u64 {
    let sender = from.node_id();
    within("a message to get through", async {
        for attempt in 0..1000u64 {
            let n = tag * 1_000_000 + attempt;
            let _ = from.send(to, Msg::Ping { n });
            let got = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match to_rx.recv().await {
                        Some(PeerEvent::Message {
                            from,
                            msg: Msg::Ping { n: m },
                        }) if from == sender && m / 1_000_000 == tag => return,
                        Some(_) => continue,
                        None => panic!("event channel closed"),
                    }
                }
            })
            .await;
            if got.is_ok() {
                return attempt + 1;
            }
        }
        panic!("message never delivered");
    })
    .await
}

/// Waits until the transport closes `stream` (EOF or reset).
pub async fn assert_closed<S: tokio::io::AsyncRead + Unpin>(mut stream: S, what: &str) {
    within(what, async {
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
}

pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Takes every event already delivered, without waiting.
pub fn drain(rx: &mut Receiver<PeerEvent<Msg>>) -> Vec<PeerEvent<Msg>> {
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        seen.push(ev);
    }
    seen
}

/// Asserts that no peer message is among `events`.
pub fn assert_no_message(events: &[PeerEvent<Msg>], what: &str) {
    let messages: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, PeerEvent::Message { .. }))
        .collect();
    assert!(messages.is_empty(), "{what}: delivered {messages:?}");
}

/// A client handler that answers every frame with `prefix` and the frame, reporting each
/// connection's first frame to `seen` if given.
pub fn reply_handler(
    prefix: &'static [u8],
    seen: Option<tokio::sync::mpsc::UnboundedSender<bytes::Bytes>>,
) -> raftd_transport::ClientHandler {
    use futures_util::{SinkExt, StreamExt};
    raftd_transport::client_handler(move |conn: raftd_transport::ClientConn| {
        let seen = seen.clone();
        async move {
            let raftd_transport::ClientConn {
                first_frame,
                mut framed,
                ..
            } = conn;
            if let Some(seen) = &seen {
                let _ = seen.send(first_frame.clone().freeze());
            }
            let mut next = Some(first_frame);
            while let Some(f) = next {
                let mut reply = prefix.to_vec();
                reply.extend_from_slice(&f);
                if framed.send(bytes::Bytes::from(reply)).await.is_err() {
                    return;
                }
                next = match framed.next().await {
                    Some(Ok(f)) => Some(f),
                    _ => None,
                };
            }
        }
    })
}
