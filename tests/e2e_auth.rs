//! End to end: strangers at every node of an authenticated cluster, by every way in. With a
//! cluster secret: a Hello without the handshake, and the whole handshake with a wrong secret.
//! With TLS (and --client-cert-auth): plaintext, no certificate, another node's certificate,
//! a certificate from another CA, an expired one. Each stranger then sends a RequestVote of a
//! much higher term and an AppendEntries contradicting the committed index 1. Every connection
//! is refused before any of its messages is read: no node's term reaches the stranger's, no
//! data changes, every node keeps running and the cluster keeps serving. The TLS cluster also
//! takes a node's new certificate across a restart (rotation).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raftd::client::{Client, ClientOptions};
use raftd::rpc::types::Consistency;
use raftd_testkit::process::{self, Auth, Cluster, Got, RawConn};
use raftd_transport::framing::{self, HandshakeFrame};
use raftd_transport::security::certs::{Ca, Validity};
use raftd_transport::security::secret::{self, Side, Transcript};
use raftd_transport::security::ClusterSecret;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::codec::Framed;

const TEN_S: Duration = Duration::from_secs(10);

/// The RequestVote and the conflicting AppendEntries a stranger claiming `claimed` sends `to`.
fn attack(claimed: u64, to: u64, high: u64) -> [Value; 2] {
    [
        json!({"from":claimed,"to":to,"msg":{
            "type":"RequestVote","term":high,"candidate_id":claimed,
            "last_log_index":1_000_000,"last_log_term":high,"pre_vote":false}}),
        json!({"from":claimed,"to":to,"msg":{
            "type":"AppendEntries","term":high,"leader_id":claimed,
            "prev_log_index":0,"prev_log_term":0,
            "entries":[{"term":high,"index":1,"kind":"Command","data":"AAAA"}],
            "leader_commit":1}}),
    ]
}

fn is_refusal(v: &Value) -> bool {
    v["type"] == "HandshakeRefused"
}

/// Reads until the node closes the connection; returns the frames before the close.
fn until_closed(s: &mut RawConn, what: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match s.read(TEN_S) {
            Got::Frame(v) => frames.push(v),
            Got::Closed => return frames,
            other => panic!("{what}: the node did not close the connection ({other:?})"),
        }
    }
}

fn opts(tls: Option<Arc<rustls::ClientConfig>>) -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(20),
        tls,
        ..ClientOptions::default()
    }
}

/// Writes k0..k4 and waits until every node has applied them; returns the highest term seen.
async fn load(c: &Cluster, client: &mut Client) -> u64 {
    for i in 0..5 {
        client
            .put(&format!("k{i}"), &format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("put: {e}\n{}", c.logs()));
    }
    let commit = client
        .status_of(c.nodes[0].addr())
        .await
        .expect("status")
        .commit_index;
    let mut term = 0;
    for n in &c.nodes {
        let deadline = tokio::time::Instant::now() + TEN_S;
        loop {
            let s = client.status_of(n.addr()).await.expect("status");
            if s.last_applied >= commit {
                term = term.max(s.term);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} behind",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    term
}

/// After the strangers: every node runs, no term reached theirs, the data is all there (read
/// linearizably) and a new write goes through.
async fn assert_unharmed(c: &mut Cluster, client: &mut Client, high: u64) {
    for id in 1..=3u64 {
        assert!(c.node(id).is_running(), "node {id} exited:\n{}", c.logs());
        let s = client
            .status_of(c.nodes[id as usize - 1].addr())
            .await
            .expect("status");
        assert!(
            s.term < high,
            "node {id} moved to the stranger's term {}",
            s.term
        );
    }
    for i in 0..5 {
        let v = client
            .get(&format!("k{i}"), Consistency::Linearizable)
            .await;
        assert_eq!(v.expect("get"), Some(format!("v{i}")), "{}", c.logs());
    }
    client
        .put("after", "strangers")
        .await
        .expect("a write after the strangers");
    let logs = c.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        !logs.contains("refusing AppendEntries"),
        "a stranger's message was read:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_secret_no_stranger_gets_a_message_in() {
    let mut c = Cluster::start(3);
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|n| n.addr()).collect();
    let mut client = Client::new(addrs, opts(None));
    let high = load(&c, &mut client).await + 100;
    let wrong = ClusterSecret::from_bytes(&[0x5a; 32]).unwrap();
    for to in 1..=3u64 {
        let claimed = to % 3 + 1;
        let addr = c.nodes[to as usize - 1].addr();
        // A Hello that skips the handshake.
        let mut s = RawConn::connect(addr);
        s.send_json(&json!({"type":"Hello","node_id":claimed}));
        for m in attack(claimed, to, high) {
            let _ = s.send_bytes(&process::frame(m.to_string().as_bytes()));
        }
        let got = until_closed(&mut s, "a Hello without the handshake");
        assert!(got.len() == 1 && is_refusal(&got[0]), "node {to}: {got:?}");

        // The whole handshake, with a wrong secret.
        let mut s = RawConn::connect(addr);
        let nonce = secret::fresh_nonce();
        s.send_json(&json!({"type":"Hello","node_id":claimed,"nonce":secret::to_hex(&nonce)}));
        let challenge = s.recv("the challenge");
        assert_eq!(challenge["type"], "Challenge", "{challenge}");
        let t = Transcript {
            connector: claimed,
            acceptor: to,
            connector_nonce: nonce,
            acceptor_nonce: secret::from_hex(challenge["nonce"].as_str().unwrap()).unwrap(),
        };
        let proof = secret::to_hex(&wrong.proof(Side::Connector, &t));
        s.send_json(&json!({"type":"Auth","proof":proof}));
        for m in attack(claimed, to, high) {
            let _ = s.send_bytes(&process::frame(m.to_string().as_bytes()));
        }
        let got = until_closed(&mut s, "a wrong secret");
        assert!(got.len() == 1 && is_refusal(&got[0]), "node {to}: {got:?}");
    }
    assert_unharmed(&mut c, &mut client, high).await;
    assert!(c.logs().contains("refused a peer connection"));
}

/// Opens TLS to `addr` with `cfg`, sends `frames`, and returns what came back before the node
/// closed the connection (nothing if the TLS handshake itself failed).
async fn tls_stranger(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    frames: &[Value],
) -> Vec<HandshakeFrame> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let Ok(tls) = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
    else {
        return Vec::new();
    };
    let mut conn = Framed::new(tls, framing::codec(1 << 20));
    for f in frames {
        if conn.send(Bytes::from(f.to_string())).await.is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let read_all = async {
        while let Some(Ok(f)) = conn.next().await {
            got.push(
                HandshakeFrame::decode(&f)
                    .unwrap_or_else(|| panic!("a non-handshake frame: {f:?}")),
            );
        }
    };
    tokio::time::timeout(TEN_S, read_all)
        .await
        .expect("the node closes the connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_no_stranger_gets_a_message_in_and_certificates_rotate_by_restart() {
    let mut c = Cluster::start_auth(
        3,
        &[],
        Auth::Tls {
            client_cert_auth: true,
        },
    );
    let pki = c.pki.take().expect("a TLS cluster has certificates");
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|n| n.addr()).collect();
    let mut client = Client::new(addrs.clone(), opts(Some(pki.client_tls())));
    let high = load(&c, &mut client).await + 100;

    let other = Ca::generate("someone else's CA", Validity::days(1)).unwrap();
    let tls_as = |name: &str, issued| {
        let (cert, key) = pki.write(name, &issued);
        raftd::client::tls_config(&pki.ca_file(), Some((&cert, &key))).unwrap()
    };
    for to in 1..=3u64 {
        let claimed = to % 3 + 1;
        let third = 6 - to - claimed;
        let addr = addrs[to as usize - 1];
        let mut frames = vec![json!({"type":"Hello","node_id":claimed})];
        frames.extend(attack(claimed, to, high));

        // Plaintext to the TLS port: one plaintext error, then closed.
        let mut s = RawConn::connect(addr);
        for f in &frames {
            let _ = s.send_bytes(&process::frame(f.to_string().as_bytes()));
        }
        let got = until_closed(&mut s, "plaintext");
        assert!(
            got.len() == 1
                && got[0]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("requires TLS"),
            "node {to}: {got:?}"
        );

        let cases = [
            (
                "no certificate",
                raftd::client::tls_config(&pki.ca_file(), None).unwrap(),
            ),
            (
                "another node's certificate",
                tls_as("third", pki.ca.node(third, &[], Validity::days(1)).unwrap()),
            ),
            (
                "another CA's certificate",
                tls_as(
                    "foreign",
                    other.node(claimed, &[], Validity::days(1)).unwrap(),
                ),
            ),
            (
                "an expired certificate",
                tls_as(
                    "expired",
                    pki.ca.node(claimed, &[], Validity::expired()).unwrap(),
                ),
            ),
        ];
        for (what, cfg) in cases {
            let got = tls_stranger(addr, cfg, &frames).await;
            assert!(
                got.iter()
                    .all(|f| matches!(f, HandshakeFrame::HandshakeRefused { .. })),
                "node {to}, {what}: {got:?}"
            );
        }
    }
    assert_unharmed(&mut c, &mut client, high).await;
    let logs = c.logs();
    assert!(
        logs.contains("refused a peer connection") && logs.contains("TLS handshake with"),
        "{logs}"
    );

    // Rotation: node 1 is restarted on a new certificate (same CA) and catches up.
    c.node(1).kill();
    pki.node_files(1);
    c.node(1).start();
    client
        .put("rotated", "yes")
        .await
        .expect("a write after the restart");
    let commit = client
        .status_of(addrs[1])
        .await
        .map(|s| s.commit_index)
        .unwrap_or(0);
    let caught_up = process::wait_for(TEN_S, || {
        let rt = tokio::runtime::Handle::current();
        let s = tokio::task::block_in_place(|| rt.block_on(client.status_of(addrs[0])));
        s.ok().filter(|s| s.last_applied >= commit).map(|_| ())
    });
    assert!(
        caught_up.is_some(),
        "node 1 did not rejoin on its new certificate:\n{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_handshake_recorded_on_the_wire_and_replayed_is_refused_at_every_node() {
    // Every peer link runs through a proxy, which can keep what a node sends.
    let mut c = raftd_testkit::nemesis::NemesisCluster::start(3, &[]).await;
    let mut client = Client::new(c.addrs(), opts(None));
    client.put("before", "replay").await.expect("a write");
    let mut high = 0;
    for id in 1..=3 {
        high = high.max(c.status(id).await.expect("status").term);
    }
    let high = high + 100;
    for to in 1..=3u64 {
        let from = to % 3 + 1;
        let proxy = &c.proxies[&(from, to)];
        // Close the link, then record node `from`'s next connection from its first byte.
        proxy.cut();
        proxy.record();
        proxy.restore();
        let deadline = tokio::time::Instant::now() + TEN_S;
        let recorded = loop {
            let r = proxy.recorded();
            if r.windows(13).any(|w| w == br#""type":"Auth""#) {
                break r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {from} never reconnected to {to}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The real handshake, word for word, straight to node `to`, then the attack.
        let mut s = RawConn::connect(c.nodes[to as usize - 1].addr());
        let _ = s.send_bytes(&recorded);
        for m in attack(from, to, high) {
            let _ = s.send_bytes(&process::frame(m.to_string().as_bytes()));
        }
        let got = until_closed(&mut s, "a replayed handshake");
        let types: Vec<&str> = got
            .iter()
            .map(|v| v["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            types,
            ["Challenge", "HandshakeRefused"],
            "node {to}: {got:?}"
        );
    }
    for id in 1..=3u64 {
        assert!(c.is_up(id), "node {id} exited");
        let s = c.status(id).await.expect("status");
        assert!(
            s.term < high,
            "node {id} moved to the stranger's term {}",
            s.term
        );
    }
    let v = client
        .get("before", Consistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(v.as_deref(), Some("replay"));
    client
        .put("after", "replay")
        .await
        .expect("a write after the replays");
    assert_eq!(
        c.count_in_logs("refusing AppendEntries"),
        0,
        "{}",
        c.log_tails(20)
    );
}
