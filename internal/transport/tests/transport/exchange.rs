//! Happy paths, reconnection, backpressure and shutdown over real TCP on 127.0.0.1.

use super::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use raftd_transport::{
    client_handler, reject_clients, PeerEvent, SendError, Transport, TransportConfig,
};
use tokio::net::TcpListener;

/// Receives exactly `count` messages and returns them grouped by sender.
async fn recv_messages(
    rx: &mut tokio::sync::mpsc::Receiver<PeerEvent<Msg>>,
    count: usize,
) -> HashMap<u64, Vec<Msg>> {
    within("messages", async {
        let mut got: HashMap<u64, Vec<Msg>> = HashMap::new();
        let mut n = 0;
        while n < count {
            if let Some(PeerEvent::Message { from, msg }) = rx.recv().await {
                got.entry(from).or_default().push(msg);
                n += 1;
            }
        }
        got
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_both_ways() {
    init_logs();
    let mut nodes = simple_cluster(2).await;
    wait_mesh(&mut nodes).await;

    for n in 0..100 {
        nodes[0].t.send(2, Msg::Ping { n }).unwrap();
        nodes[1].t.send(1, Msg::Ping { n: 1000 + n }).unwrap();
    }
    let at2 = recv_messages(&mut nodes[1].rx, 100).await;
    let at1 = recv_messages(&mut nodes[0].rx, 100).await;
    // One connection per direction, so order is preserved.
    let expect2: Vec<Msg> = (0..100).map(|n| Msg::Ping { n }).collect();
    let expect1: Vec<Msg> = (0..100).map(|n| Msg::Ping { n: 1000 + n }).collect();
    assert_eq!(at2[&1], expect2);
    assert_eq!(at1[&2], expect1);

    // Counters are bumped right after the flush, which may trail the receiver by a moment.
    let frame_bytes = |n: u64| serde_json::to_vec(&Msg::Ping { n }).unwrap().len() as u64 + 4;
    let want_bytes: u64 = (0..100).map(frame_bytes).sum();
    within("stats to catch up", async {
        loop {
            let s = nodes[0].t.stats().peer(2);
            if s.frames_sent == 100 {
                assert_eq!(s.bytes_sent, want_bytes);
                assert_eq!(s.frames_dropped, 0);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    for node in nodes {
        node.t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_full_mesh() {
    init_logs();
    let mut nodes = simple_cluster(3).await;
    wait_mesh(&mut nodes).await;

    for node in &nodes {
        for to in 1..=3u64 {
            if to != node.id {
                for k in 0..10 {
                    node.t
                        .send(
                            to,
                            Msg::Ping {
                                n: node.id * 100 + k,
                            },
                        )
                        .unwrap();
                }
            }
        }
    }
    for node in nodes.iter_mut() {
        let got = recv_messages(&mut node.rx, 20).await;
        for from in (1..=3u64).filter(|&p| p != node.id) {
            let expect: Vec<Msg> = (0..10).map(|k| Msg::Ping { n: from * 100 + k }).collect();
            assert_eq!(got[&from], expect, "node {} from {from}", node.id);
        }
    }
    for node in nodes {
        node.t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_peer_restart_on_same_port() {
    init_logs();
    let mut nodes = simple_cluster(2).await;
    wait_mesh(&mut nodes).await;
    let old = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&a.t, 2, &mut { old.rx }, 1).await;

    let b_addr = old.addr;
    old.t.shutdown().await;
    wait_event(&mut a.rx, "Disconnected from 2", |ev| {
        matches!(ev, PeerEvent::Disconnected { peer: 2, .. })
    })
    .await;

    // The listener is closed by the time shutdown returns, so the port can be bound again right away.
    let listener = TcpListener::bind(b_addr).await.unwrap();
    let cfg = TransportConfig::new(2, HashMap::from([(1, a.addr)]));
    let (b, mut b_rx) = Transport::<Msg>::start(cfg, listener, reject_clients());

    // While node 2 was away node 1 kept retrying; that must not produce more Disconnected events.
    let seen = wait_event(&mut a.rx, "Connected to 2 again", |ev| {
        matches!(ev, PeerEvent::Connected { peer: 2 })
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|ev| matches!(ev, PeerEvent::Disconnected { .. })),
        "extra events: {seen:?}"
    );
    wait_connected(&mut b_rx, &[1]).await;

    deliver(&a.t, 2, &mut b_rx, 2).await;
    deliver(&b, 1, &mut a.rx, 3).await;

    a.t.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_without_blocking() {
    init_logs();
    // A peer that completes the TCP handshake (kernel backlog) but never reads: writes stall once the
    // socket buffers fill, and then the queue of 4 fills up.
    let stalled = bind_local().await;
    let stalled_addr = stalled.local_addr().unwrap();
    let listener = bind_local().await;
    let mut cfg = TransportConfig::new(1, HashMap::from([(2, stalled_addr)]));
    cfg.peer_queue_capacity = 4;
    let (t, mut rx) = Transport::<Msg>::start(cfg, listener, reject_clients());
    wait_connected(&mut rx, &[2]).await;

    let blob = Msg::Blob("x".repeat(256 * 1024));
    let mut full = 0u64;
    let mut ok = 0u64;
    let started = Instant::now();
    for _ in 0..2000 {
        let before = Instant::now();
        match t.send(2, blob.clone()) {
            Ok(()) => ok += 1,
            Err(SendError::QueueFull) => full += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        // Queuing is a move (the peer's task encodes); anything near a second would mean blocking.
        assert!(before.elapsed() < Duration::from_secs(1), "send blocked");
        if full >= 10 {
            break;
        }
        if started.elapsed() > DEADLINE {
            break;
        }
    }
    assert!(full >= 10, "queue never filled (ok={ok}, full={full})");
    let stats = t.stats().peer(2);
    assert!(stats.frames_dropped >= full, "{stats:?}");

    // The writer is stuck in a flush; shutdown must still be prompt.
    let started = Instant::now();
    t.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_is_refused_and_an_oversized_message_is_dropped_alone() {
    init_logs();
    let mut nodes = cluster(2, |cfg| cfg.max_frame_bytes = 1024, |_| reject_clients()).await;
    wait_mesh(&mut nodes).await;
    let t = nodes[0].t.clone();
    assert!(matches!(
        t.send(42, Msg::Ping { n: 1 }),
        Err(SendError::UnknownPeer)
    ));
    // Our own id is removed from the peer list.
    assert!(matches!(
        t.send(1, Msg::Ping { n: 1 }),
        Err(SendError::UnknownPeer)
    ));
    assert_eq!(t.peer_ids(), vec![2]);
    // Over the frame limit: the peer would refuse it, so it is never written; the messages
    // around it go out on the same connection.
    t.send(2, Msg::Ping { n: 1 }).unwrap();
    t.send(2, Msg::Blob("y".repeat(2000))).unwrap();
    t.send(2, Msg::Ping { n: 2 }).unwrap();
    let got = recv_messages(&mut nodes[1].rx, 2).await;
    assert_eq!(got[&1], vec![Msg::Ping { n: 1 }, Msg::Ping { n: 2 }]);
    let stats = t.stats().peer(2);
    assert_eq!(stats.frames_dropped, 1, "{stats:?}");
    assert_no_message(&drain(&mut nodes[1].rx), "after the oversized one");
    for node in nodes {
        node.t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_and_closes_everything() {
    init_logs();
    // Busy node: a live peer, a peer that never accepts, an idle raw connection and a client
    // whose handler never finishes.
    let blackhole = bind_local().await;
    let mut nodes = cluster(
        2,
        |cfg| {
            if cfg.node_id == 1 {
                cfg.peers.insert(3, blackhole.local_addr().unwrap());
            }
        },
        |_| client_handler(|_conn| std::future::pending::<()>()),
    )
    .await;
    wait_mesh(&mut nodes).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();

    let _idle = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        client.write_all(b"\x00\x00\x00\x02{}").await.unwrap();
    }

    let other_handle = a.t.clone();
    let started = Instant::now();
    a.t.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");

    assert!(matches!(
        other_handle.send(2, Msg::Ping { n: 0 }),
        Err(SendError::Shutdown)
    ));
    // Every task has ended, so the event stream ends after the buffered events.
    within("event channel to close", async {
        while a.rx.recv().await.is_some() {}
    })
    .await;
    // The client connection was closed by us.
    within("client connection to close", async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    // And the listening port is released.
    assert!(tokio::net::TcpStream::connect(a.addr).await.is_err());
    b.t.shutdown().await;
}
