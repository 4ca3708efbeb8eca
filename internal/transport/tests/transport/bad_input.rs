//! Hostile and malformed input on the shared port, client hand-off, and the connection cap.

use super::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use raftd_transport::framing;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// Node id that node 1 accepts as a peer but that never connects for real, so raw connections can
/// impersonate it without disturbing node 2's connection.
const PHANTOM: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_does_not_disturb_the_node() {
    init_logs();
    let phantom_addr = dead_addr().await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut nodes = cluster(
        2,
        |cfg| {
            if cfg.node_id == 1 {
                cfg.peers.insert(PHANTOM, phantom_addr);
                cfg.max_frame_bytes = 1024 * 1024;
            }
        },
        |_| reply_handler(b"echo:", Some(seen_tx.clone())),
    )
    .await;
    wait_connected(&mut nodes[1].rx, &[1]).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    let mut tag = 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // Garbage: the first four bytes read as a length far above the limit.
    let s = raw(a.addr, b"this is definitely not a frame\r\n").await;
    assert_closed(s, "garbage connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // Huge length prefix as the first frame.
    let s = raw(a.addr, &[0x7f, 0xff, 0xff, 0xff, b'{', b'}']).await;
    assert_closed(s, "huge-prefix connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // Hello from a node that is not a member.
    let s = raw(a.addr, &frame(&framing::encode_hello(99))).await;
    assert_closed(s, "unknown-Hello connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // A valid Hello followed by a frame that is not a Msg.
    let mut bytes = frame(&framing::encode_hello(PHANTOM));
    bytes.extend(frame(br#"{"NotAMsg":true}"#));
    let s = raw(a.addr, &bytes).await;
    assert_closed(s, "bad-Msg connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // A valid Hello followed by an oversized frame.
    let mut bytes = frame(&framing::encode_hello(PHANTOM));
    bytes.extend_from_slice(&(2u32 * 1024 * 1024).to_be_bytes());
    let s = raw(a.addr, &bytes).await;
    assert_closed(s, "oversized-frame connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // Half a frame, then the sender closes its side.
    let mut s = raw(a.addr, &[0, 0, 0, 100, b'{', b'"']).await;
    s.shutdown().await.unwrap();
    assert_closed(s, "half-frame connection to close").await;
    tag += 1;
    deliver(&b.t, 1, &mut a.rx, tag).await;

    // Messages from the phantom id are delivered once it behaves.
    let mut bytes = frame(&framing::encode_hello(PHANTOM));
    bytes.extend(frame(&serde_json::to_vec(&Msg::Ping { n: 77 }).unwrap()));
    let _s = raw(a.addr, &bytes).await;
    wait_event(&mut a.rx, "message from the phantom peer", |ev| {
        matches!(
            ev,
            raftd_transport::PeerEvent::Message {
                from: PHANTOM,
                msg: Msg::Ping { n: 77 }
            }
        )
    })
    .await;

    // The garbage connection was (by design) a client whose first frame was undecodable as a frame
    // length, so the handler saw nothing yet.
    assert!(seen_rx.try_recv().is_err());

    // Node 1 still sends to node 2 as well.
    deliver(&a.t, 2, &mut { b.rx }, 100).await;
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_hello_first_frame_goes_to_client_handler() {
    init_logs();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut nodes = cluster(
        2,
        |_| {},
        |_| reply_handler(b"echo:", Some(seen_tx.clone())),
    )
    .await;
    wait_mesh(&mut nodes).await;

    let stream = TcpStream::connect(nodes[0].addr).await.unwrap();
    let mut client = Framed::new(stream, framing::codec(1024));
    let request = br#"{"type":"Get","key":"k"}"#;
    client.send(Bytes::from_static(request)).await.unwrap();
    let first = within("handler to see the first frame", seen_rx.recv())
        .await
        .unwrap();
    assert_eq!(&first[..], request);
    let reply = within("reply", client.next()).await.unwrap().unwrap();
    assert_eq!(&reply[..], &b"echo:{\"type\":\"Get\",\"key\":\"k\"}"[..]);

    // The connection stays with the handler for later frames.
    client.send(Bytes::from_static(b"second")).await.unwrap();
    let reply = within("second reply", client.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..], b"echo:second");

    // Peers are unaffected.
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&b.t, 1, &mut a.rx, 1).await;
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_handshake_timeout() {
    init_logs();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut nodes = cluster(
        1,
        |cfg| {
            cfg.max_connections = 1;
            cfg.handshake_timeout = Duration::from_millis(500);
        },
        |_| reply_handler(b"echo:", Some(seen_tx.clone())),
    )
    .await;
    let a = nodes.pop().unwrap();

    // The only permit goes to a connection that never sends anything.
    let idle = TcpStream::connect(a.addr).await.unwrap();
    let stream = TcpStream::connect(a.addr).await.unwrap();
    let mut client = Framed::new(stream, framing::codec(1024));
    client.send(Bytes::from_static(b"hi")).await.unwrap();

    // While the idle connection holds the permit the client is not served...
    let early = tokio::time::timeout(Duration::from_millis(200), seen_rx.recv()).await;
    assert!(early.is_err(), "client served beyond the connection cap");
    // ...the idle one is closed by the handshake timeout, which frees the permit.
    assert_closed(idle, "idle connection to time out").await;
    let reply = within("reply after the permit is freed", client.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..], b"echo:hi");
    a.t.shutdown().await;
}
