//! Peer authentication on real TCP: the cluster secret's challenge–response, TLS certificates
//! that name node ids, client certificates, and strangers of every kind refused before any of
//! their frames is read as a peer message.

use super::common::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use raftd_transport::framing::{self, HandshakeFrame};
use raftd_transport::security::certs::{Ca, Issued, Validity};
use raftd_transport::security::secret::{self, Side, Transcript};
use raftd_transport::security::{tls, ClusterSecret, NodeTls, TlsFiles};
use raftd_transport::{reject_clients, PeerEvent, TransportConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

fn secret(fill: u8) -> ClusterSecret {
    ClusterSecret::from_bytes(&[fill; 32]).unwrap()
}

fn ping(n: u64) -> Vec<u8> {
    serde_json::to_vec(&Msg::Ping { n }).unwrap()
}

/// A CA and the files it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::generate("test CA", Validity::days(1)).unwrap(),
        };
        std::fs::write(pki.ca_file(), pki.ca.cert_pem()).unwrap();
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn write(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        (cert, key)
    }

    fn node_issued(&self, id: u64) -> Issued {
        self.ca
            .node(id, &["127.0.0.1".into()], Validity::days(1))
            .unwrap()
    }

    fn node_tls(&self, id: u64, client_cert_auth: bool) -> Arc<NodeTls> {
        let (cert, key) = self.write(&format!("node-{id}"), &self.node_issued(id));
        let files = TlsFiles {
            cert,
            key,
            ca: self.ca_file(),
        };
        Arc::new(NodeTls::load(&files, id, client_cert_auth).unwrap())
    }

    /// A client configuration trusting this CA, presenting `identity` if given.
    fn client(&self, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        let files = identity.map(|i| self.write("client-identity", i));
        tls::client_config(
            &self.ca_file(),
            files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap()
    }
}

/// Opens TLS to `addr` checking the server's certificate for `server_name`. A server that
/// refuses our client certificate may only say so after the client's side has completed (TLS
/// 1.3), so an `Ok` here does not mean the server accepted us.
async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

fn hello(node_id: u64, nonce: Option<&[u8; 32]>) -> Bytes {
    HandshakeFrame::Hello {
        node_id,
        nonce: nonce.map(|n| secret::to_hex(n)),
    }
    .encode()
}

/// Reads frames until the connection ends (or errors); returns them.
async fn frames_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    what: &str,
) -> Vec<BytesMut> {
    within(what, async {
        let mut got = Vec::new();
        while let Some(Ok(f)) = conn.next().await {
            got.push(f);
        }
        got
    })
    .await
}

fn is_refusal(frame: &[u8]) -> bool {
    matches!(
        HandshakeFrame::decode(frame),
        Some(HandshakeFrame::HandshakeRefused { .. })
    )
}

/// Says Hello to node 1 as node 2 with a fresh nonce and reads the challenge: the connection,
/// the handshake's transcript and the acceptor's proof.
async fn hello_as_2(
    addr: SocketAddr,
) -> (
    Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    Transcript,
    String,
) {
    let nonce = secret::fresh_nonce();
    let mut s = Framed::new(
        raw(addr, &frame(&hello(2, Some(&nonce)))).await,
        framing::codec(1 << 20),
    );
    let challenge = within("the challenge", s.next()).await.unwrap().unwrap();
    let Some(HandshakeFrame::Challenge {
        node_id: 1,
        nonce: theirs,
        proof,
    }) = HandshakeFrame::decode(&challenge)
    else {
        panic!("not a challenge from node 1: {challenge:?}");
    };
    let t = Transcript {
        connector: 2,
        acceptor: 1,
        connector_nonce: nonce,
        acceptor_nonce: secret::from_hex(&theirs).unwrap(),
    };
    (s, t, proof)
}

/// After a refused stranger: its frames never became events, and the real peer still gets
/// through.
async fn assert_unharmed(a: &mut Node, b: &Node, tag: u64, what: &str) {
    assert_no_message(&drain(&mut a.rx), what);
    deliver(&b.t, a.id, &mut a.rx, tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_peers_talk_and_strangers_are_refused() {
    init_logs();
    let mut nodes = cluster(
        2,
        |cfg| cfg.security.secret = Some(secret(1)),
        |_| reject_clients(),
    )
    .await;
    wait_mesh(&mut nodes).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&b.t, 1, &mut a.rx, 1).await;
    deliver(&a.t, 2, &mut { b.rx }, 2).await;
    let b = Node {
        rx: tokio::sync::mpsc::channel(1).1,
        ..b
    };

    // A Hello without a nonce (an insecure node, or a stranger) and a message after it.
    let mut bytes = frame(&hello(2, None));
    bytes.extend(frame(&ping(99)));
    let mut s = Framed::new(raw(a.addr, &bytes).await, framing::codec(1 << 20));
    let got = frames_until_closed(&mut s, "a Hello without nonce to be refused").await;
    assert!(got.len() == 1 && is_refusal(&got[0]), "{got:?}");
    assert_unharmed(&mut a, &b, 3, "Hello without a nonce").await;

    // The whole handshake with the wrong secret.
    let (mut s, t, _) = hello_as_2(a.addr).await;
    let wrong = secret(2).proof(Side::Connector, &t);
    s.send(
        HandshakeFrame::Auth {
            proof: secret::to_hex(&wrong),
        }
        .encode(),
    )
    .await
    .unwrap();
    s.send(Bytes::from(ping(98))).await.unwrap();
    let got = frames_until_closed(&mut s, "a wrong proof to be refused").await;
    assert!(got.len() == 1 && is_refusal(&got[0]), "{got:?}");
    assert_unharmed(&mut a, &b, 4, "wrong secret").await;

    // The acceptor's own proof, sent back as the connector's (a reflection).
    let (mut s, _, proof) = hello_as_2(a.addr).await;
    s.send(HandshakeFrame::Auth { proof }.encode())
        .await
        .unwrap();
    s.send(Bytes::from(ping(97))).await.unwrap();
    let got = frames_until_closed(&mut s, "a reflected proof to be refused").await;
    assert!(got.len() == 1 && is_refusal(&got[0]), "{got:?}");
    assert_unharmed(&mut a, &b, 5, "reflected proof").await;

    // A message instead of the Auth frame.
    let mut bytes = frame(&hello(2, Some(&secret::fresh_nonce())));
    bytes.extend(frame(&ping(96)));
    let mut s = Framed::new(raw(a.addr, &bytes).await, framing::codec(1 << 20));
    let got = frames_until_closed(&mut s, "a skipped Auth to be refused").await;
    assert!(got.len() == 2 && is_refusal(&got[1]), "{got:?}");
    assert_unharmed(&mut a, &b, 6, "skipped Auth").await;

    a.t.shutdown().await;
    b.t.shutdown().await;
}

/// Forwards one connection from a node to `target`, keeping a copy of everything the node sent.
async fn recording_proxy() -> (
    SocketAddr,
    Arc<Mutex<Vec<u8>>>,
    tokio::sync::oneshot::Sender<SocketAddr>,
) {
    let listener = bind_local().await;
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let (target_tx, target_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let rec = recorded.clone();
    tokio::spawn(async move {
        let target = target_rx.await.unwrap();
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = TcpStream::connect(target).await.unwrap();
        let (mut in_r, mut in_w) = inbound.into_split();
        let (mut out_r, mut out_w) = outbound.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
        });
        let mut buf = [0u8; 4096];
        loop {
            match in_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    if out_w.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, recorded, target_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_handshake_replayed_is_refused() {
    init_logs();
    let (proxy, recorded, target) = recording_proxy().await;
    let la = bind_local().await;
    let lb = bind_local().await;
    let (addr_a, addr_b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let mut ca = TransportConfig::new(1, [(2, addr_b)].into_iter().collect());
    ca.security.secret = Some(secret(7));
    let mut cb = TransportConfig::new(2, [(1, proxy)].into_iter().collect());
    cb.security.secret = Some(secret(7));
    target.send(addr_a).unwrap();
    let (ta, rxa) = raftd_transport::Transport::<Msg>::start(ca, la, reject_clients());
    let (tb, rxb) = raftd_transport::Transport::<Msg>::start(cb, lb, reject_clients());
    let mut a = Node {
        id: 1,
        addr: addr_a,
        t: ta,
        rx: rxa,
    };
    let b = Node {
        id: 2,
        addr: addr_b,
        t: tb,
        rx: rxb,
    };
    deliver(&b.t, 1, &mut a.rx, 1).await;

    // Everything node 2 sent: its Hello, its Auth, its pings. Played again, word for word.
    let replay = recorded.lock().unwrap().clone();
    let original_nonce = match HandshakeFrame::decode(
        &replay[4..4 + u32::from_be_bytes(replay[..4].try_into().unwrap()) as usize],
    ) {
        Some(HandshakeFrame::Hello { nonce: Some(n), .. }) => n,
        other => panic!("the recording does not start with a Hello with nonce: {other:?}"),
    };
    let mut s = Framed::new(raw(a.addr, &replay).await, framing::codec(1 << 20));
    let got = frames_until_closed(&mut s, "the replay to be refused").await;
    assert_eq!(got.len(), 2, "{got:?}");
    match HandshakeFrame::decode(&got[0]) {
        Some(HandshakeFrame::Challenge { nonce, .. }) => assert_ne!(nonce, original_nonce),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    assert!(is_refusal(&got[1]), "{got:?}");
    assert_unharmed(&mut a, &b, 2, "replayed handshake").await;
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sends_nothing_to_an_acceptor_that_cannot_prove_the_secret() {
    init_logs();
    let fake = bind_local().await;
    let mut cfg = TransportConfig::new(1, [(2, fake.local_addr().unwrap())].into_iter().collect());
    cfg.security.secret = Some(secret(3));
    cfg.connect_backoff_min = std::time::Duration::from_millis(5);
    cfg.connect_backoff_max = std::time::Duration::from_millis(20);
    let (t, _rx) =
        raftd_transport::Transport::<Msg>::start(cfg, bind_local().await, reject_clients());
    // Frames queue up for node 2 all along; none may reach a fake node 2.
    let sender = {
        let t = t.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let _ = t.send(2, Msg::Ping { n });
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    // Three fakes: a wrong proof, the right proof from the wrong node id, then the real thing.
    for (who, proof_secret, node_id) in [
        ("wrong secret", secret(4), 2),
        ("wrong node", secret(3), 3),
        ("honest", secret(3), 2),
    ] {
        let (tcp, _) = within("node 1 to dial", fake.accept()).await.unwrap();
        let mut conn = Framed::new(tcp, framing::codec(1 << 20));
        let first = within("the Hello", conn.next()).await.unwrap().unwrap();
        let Some(HandshakeFrame::Hello {
            node_id: 1,
            nonce: Some(theirs),
        }) = HandshakeFrame::decode(&first)
        else {
            panic!("not a Hello with nonce: {first:?}");
        };
        let ours = secret::fresh_nonce();
        let t = Transcript {
            connector: 1,
            acceptor: node_id,
            connector_nonce: secret::from_hex(&theirs).unwrap(),
            acceptor_nonce: ours,
        };
        let challenge = HandshakeFrame::Challenge {
            node_id,
            nonce: secret::to_hex(&ours),
            proof: secret::to_hex(&proof_secret.proof(Side::Acceptor, &t)),
        };
        conn.send(challenge.encode()).await.unwrap();
        if who == "honest" {
            let auth = within("the Auth", conn.next()).await.unwrap().unwrap();
            let Some(HandshakeFrame::Auth { proof }) = HandshakeFrame::decode(&auth) else {
                panic!("not an Auth: {auth:?}");
            };
            assert!(secret(3).verify(
                Side::Connector,
                &t,
                &secret::from_hex::<32>(&proof).unwrap()
            ));
            let msg = within("a message", conn.next()).await.unwrap().unwrap();
            assert!(serde_json::from_slice::<Msg>(&msg).is_ok(), "{msg:?}");
        } else {
            let got = frames_until_closed(&mut conn, who).await;
            assert!(got.is_empty(), "{who}: node 1 sent {got:?}");
        }
    }
    sender.abort();
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_peers_talk_and_strangers_are_refused() {
    init_logs();
    let pki = Pki::new();
    let mut nodes = cluster(
        2,
        |cfg| {
            cfg.security.tls = Some(pki.node_tls(cfg.node_id, false));
            cfg.plaintext_on_tls_reply = Some(Bytes::from_static(b"use TLS"));
            if cfg.node_id == 1 {
                // Node 3 is a member that never connects, for strangers to claim.
                cfg.peers.insert(3, "127.0.0.1:9".parse().unwrap());
            }
        },
        |_| reject_clients(),
    )
    .await;
    wait_mesh(&mut nodes).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&b.t, 1, &mut a.rx, 1).await;
    let mut tag = 1;

    // Plaintext to the TLS port: one plaintext answer, closed.
    let mut bytes = frame(&hello(3, None));
    bytes.extend(frame(&ping(99)));
    let mut s = Framed::new(raw(a.addr, &bytes).await, framing::codec(1 << 20));
    let got = frames_until_closed(&mut s, "plaintext to be refused").await;
    assert_eq!(got, vec![BytesMut::from(&b"use TLS"[..])]);
    tag += 1;
    assert_unharmed(&mut a, &b, tag, "plaintext").await;

    let other_ca = Pki::new();
    let mallory = pki.ca.client("mallory", Validity::days(1)).unwrap();
    let foreign = other_ca.ca.node(3, &[], Validity::days(1)).unwrap();
    let expired = pki.ca.node(3, &[], Validity::expired()).unwrap();
    let cases = [
        ("no client certificate", pki.client(None)),
        (
            "node 2's valid certificate claiming node 3",
            pki.client(Some(&pki.node_issued(2))),
        ),
        (
            "a client certificate claiming node 3",
            pki.client(Some(&mallory)),
        ),
        (
            "node 3's certificate from another CA",
            pki.client(Some(&foreign)),
        ),
        ("node 3's expired certificate", pki.client(Some(&expired))),
    ];
    for (what, cfg) in cases {
        match tls_connect(a.addr, cfg, "raftd-node-1").await {
            Err(_) => {} // refused during the handshake
            Ok(stream) => {
                let mut s = Framed::new(stream, framing::codec(1 << 20));
                let _ = s.send(hello(3, None)).await;
                let _ = s.send(Bytes::from(ping(98))).await;
                let got = frames_until_closed(&mut s, what).await;
                assert!(got.iter().all(|f| is_refusal(f)), "{what}: {got:?}");
            }
        }
        tag += 1;
        assert_unharmed(&mut a, &b, tag, what).await;
    }

    // Node 3's valid certificate is let in as node 3 (the cases above were refused for their
    // certificates, not for the claim).
    let mut s = Framed::new(
        tls_connect(
            a.addr,
            pki.client(Some(&pki.ca.node(3, &[], Validity::days(1)).unwrap())),
            "raftd-node-1",
        )
        .await
        .unwrap(),
        framing::codec(1 << 20),
    );
    s.send(hello(3, None)).await.unwrap();
    s.send(Bytes::from(ping(42))).await.unwrap();
    wait_event(&mut a.rx, "node 3's message", |ev| {
        matches!(
            ev,
            PeerEvent::Message {
                from: 3,
                msg: Msg::Ping { n: 42 }
            }
        )
    })
    .await;
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_talk_to_a_server_whose_certificate_names_another_node() {
    init_logs();
    let pki = Pki::new();
    // A TLS server with node 3's certificate, listed as node 2.
    let issued = pki.node_issued(3);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let fake = bind_local().await;
    let mut cfg = TransportConfig::new(1, [(2, fake.local_addr().unwrap())].into_iter().collect());
    cfg.security.tls = Some(pki.node_tls(1, false));
    cfg.connect_backoff_min = std::time::Duration::from_millis(5);
    cfg.connect_backoff_max = std::time::Duration::from_millis(20);
    let (t, _rx) =
        raftd_transport::Transport::<Msg>::start(cfg, bind_local().await, reject_clients());
    for attempt in 0..3 {
        let _ = t.send(2, Msg::Ping { n: attempt });
        let (tcp, _) = within("node 1 to dial", fake.accept()).await.unwrap();
        let r = within("the TLS handshake", acceptor.accept(tcp)).await;
        match r {
            Err(_) => {}
            Ok(mut tls) => {
                // The client aborts once it has seen our certificate; nothing readable follows.
                let mut buf = [0u8; 64];
                let n = within("the client to give up", tls.read(&mut buf)).await;
                assert!(
                    !matches!(n, Ok(n) if n > 0),
                    "node 1 sent data to the wrong node"
                );
            }
        }
    }
    t.shutdown().await;
}

/// Whether a client with `cfg` gets an answer from `addr`.
async fn served(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> bool {
    let Ok(stream) = tls_connect(addr, cfg, "127.0.0.1").await else {
        return false;
    };
    let mut s = Framed::new(stream, framing::codec(1 << 20));
    if s.send(Bytes::from_static(b"hi")).await.is_err() {
        return false;
    }
    matches!(within("an answer or a close", s.next()).await, Some(Ok(f)) if &f[..] == b"ok:hi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_a_certificate_only_with_client_cert_auth() {
    init_logs();
    let pki = Pki::new();
    let other = Pki::new();
    for required in [false, true] {
        let nodes = cluster(
            1,
            |cfg| cfg.security.tls = Some(pki.node_tls(1, required)),
            |_| reply_handler(b"ok:", None),
        )
        .await;
        let addr = nodes[0].addr;
        let good = pki.ca.client("alice", Validity::days(1)).unwrap();
        assert!(
            served(addr, pki.client(Some(&good))).await,
            "a valid client certificate"
        );
        assert_eq!(
            served(addr, pki.client(None)).await,
            !required,
            "no certificate, required={required}"
        );
        let foreign = other.ca.client("alice", Validity::days(1)).unwrap();
        assert!(
            !served(addr, pki.client(Some(&foreign))).await,
            "a certificate from another CA"
        );
        let expired = pki.ca.client("alice", Validity::expired()).unwrap();
        assert!(
            !served(addr, pki.client(Some(&expired))).await,
            "an expired certificate"
        );
        // A client that does not trust the node's CA gives up on its own.
        assert!(
            !served(addr, other.client(Some(&good))).await,
            "a client trusting another CA"
        );
        for n in nodes {
            n.t.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_its_own_certificate_when_it_names_another_node_or_expired() {
    let pki = Pki::new();
    let (cert, key) = pki.write("node-2", &pki.node_issued(2));
    let files = TlsFiles {
        cert,
        key,
        ca: pki.ca_file(),
    };
    let err = NodeTls::load(&files, 1, false).unwrap_err().to_string();
    assert!(
        err.contains("node 1") && err.contains("raftd-node-1"),
        "{err}"
    );
    let (cert, key) = pki.write("old", &pki.ca.node(1, &[], Validity::expired()).unwrap());
    let err = NodeTls::load(
        &TlsFiles {
            cert,
            key,
            ca: pki.ca_file(),
        },
        1,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.to_lowercase().contains("expired"), "{err}");
    let missing = TlsFiles {
        cert: pki.dir.path().join("nope.pem"),
        key: pki.dir.path().join("nope-key.pem"),
        ca: pki.ca_file(),
    };
    let err = NodeTls::load(&missing, 1, false).unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_can_close_a_peers_inbound_connection() {
    init_logs();
    let mut nodes = simple_cluster(2).await;
    wait_mesh(&mut nodes).await;
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&b.t, 1, &mut a.rx, 1).await;
    assert!(a.t.close_inbound(2));
    wait_event(&mut b.rx, "node 2 to see its connection closed", |ev| {
        matches!(ev, PeerEvent::Disconnected { peer: 1, .. })
    })
    .await;
    // It reconnects, and its messages flow again.
    deliver(&b.t, 1, &mut a.rx, 2).await;
    assert!(!a.t.close_inbound(3), "no connection from node 3");
    a.t.shutdown().await;
    b.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_secret_together_both_hold() {
    init_logs();
    let pki = Pki::new();
    let mut nodes = cluster(
        2,
        |cfg| {
            cfg.security.tls = Some(pki.node_tls(cfg.node_id, false));
            cfg.security.secret = Some(secret(8));
        },
        |_| reject_clients(),
    )
    .await;
    wait_mesh(&mut nodes).await;
    let b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    deliver(&b.t, 1, &mut a.rx, 1).await;
    // Node 2's own valid certificate, but no proof of the secret: refused.
    let cfg = pki.client(Some(&pki.node_issued(2)));
    let mut s = Framed::new(
        tls_connect(a.addr, cfg, "raftd-node-1").await.unwrap(),
        framing::codec(1 << 20),
    );
    s.send(hello(2, None)).await.unwrap();
    s.send(Bytes::from(ping(91))).await.unwrap();
    let got = frames_until_closed(&mut s, "a certificate without the secret").await;
    assert!(got.len() == 1 && is_refusal(&got[0]), "{got:?}");
    assert_unharmed(&mut a, &b, 2, "certificate without the secret").await;
    a.t.shutdown().await;
    b.t.shutdown().await;
}
