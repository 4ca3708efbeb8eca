//! The two systems under test behind one small interface: put, linearizable get, find the
//! leader, check every member is up. raftd is reached through its own client library, etcd
//! through its v3 gRPC API (the etcd-client crate, behind the `etcd` feature).

use raftd::client::store::RangeRequest;
use raftd::client::{Client, ClientOptions, WatchEvent, Watcher};
use raftd::kv::txn::{CmpOp, Compare, CompareValue, Target, TxnOp};
use raftd::rpc::types::Consistency;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Raftd,
    Etcd,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Raftd => "raftd",
            System::Etcd => "etcd",
        })
    }
}

/// One client connection with (at most) one request in flight.
pub enum Conn {
    /// The client, and its lease once it kept one alive.
    Raftd(Box<Client>, Option<u64>),
    #[cfg(feature = "etcd")]
    Etcd(Box<crate::etcd::EtcdConn>),
}

/// How long one operation may take, retries included, before it counts as an error.
pub const OP_DEADLINE: Duration = Duration::from_secs(5);

impl Conn {
    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c, _) => c.put(key, value).await.map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.put(key, value).await,
        }
    }

    /// A linearizable read (raftd: ReadIndex on the leader; etcd: its default Range).
    pub async fn get(&mut self, key: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c, _) => c
                .get(key, Consistency::Linearizable)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.get(key).await,
        }
    }

    /// A linearizable read of the keys from `start` (inclusive) to `end` (exclusive).
    pub async fn range(&mut self, start: &str, end: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c, _) => c
                .range(&RangeRequest {
                    key: start.to_string(),
                    end: Some(end.to_string()),
                    ..RangeRequest::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.range(start, end).await,
        }
    }

    /// If the key's value is not "x", put `value`; else read the key.
    pub async fn txn(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c, _) => c
                .txn(
                    vec![Compare {
                        key: key.to_string(),
                        target: Target::Value,
                        op: CmpOp::Ne,
                        value: CompareValue::Str("x".into()),
                    }],
                    vec![TxnOp::Put {
                        key: key.to_string(),
                        value: value.to_string(),
                        lease: 0,
                    }],
                    vec![TxnOp::Get {
                        key: key.to_string(),
                    }],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.txn(key, value).await,
        }
    }

    /// Keeps this connection's lease alive (granting it, of 60 s, the first time).
    pub async fn keepalive(&mut self) -> Result<(), String> {
        match self {
            Conn::Raftd(c, lease) => {
                let id = match lease {
                    Some(id) => *id,
                    None => {
                        let (id, _) = c.lease_grant(60).await.map_err(|e| e.to_string())?;
                        *lease = Some(id);
                        id
                    }
                };
                c.lease_keep_alive(id)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.keepalive().await,
        }
    }
}

/// Opens `n` watches of every key under `prefix` on the leader (the member with the most
/// work already); each adds the events it receives to `events`. Returns their tasks (abort
/// them to stop). With `raw` (raftd only), each watch reads its frames and counts the events in
/// them without decoding the JSON, as a relay that forwards them would: the watchers then cost
/// the machine little, and what is left is what serving them costs the node.
pub async fn spawn_watchers(
    system: System,
    endpoints: &[SocketAddr],
    n: usize,
    prefix: &str,
    events: Arc<AtomicU64>,
    raw: bool,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let first = find_leader(system, endpoints).await?;
    let mut tasks = Vec::with_capacity(n);
    match system {
        System::Raftd if raw => {
            for _ in 0..n {
                tasks.push(raw_watch(first, prefix, events.clone()).await?);
            }
        }
        System::Raftd => {
            for _ in 0..n {
                let mut w = Watcher::new(vec![first], raftd_options(), prefix, None, true, None)
                    .map_err(|e| e.to_string())?;
                let events = events.clone();
                tasks.push(tokio::spawn(async move {
                    while let Ok(ev) = w.next().await {
                        if let WatchEvent::Change(_) = ev {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        #[cfg(feature = "etcd")]
        System::Etcd => {
            for _ in 0..n {
                tasks.push(crate::etcd::watch(first, prefix, events.clone()).await?);
            }
        }
        #[cfg(not(feature = "etcd"))]
        System::Etcd => {
            if n > 0 {
                return Err(NO_ETCD.into());
            }
        }
    }
    // Let the watches be set up before the load starts.
    tokio::time::sleep(Duration::from_millis(200 + n as u64)).await;
    Ok(tasks)
}

/// raftd's client settings: TLS when `RAFTCTL_CACERT` is set (as for raftctl, with
/// `RAFTCTL_CERT`/`RAFTCTL_KEY` for a client certificate), so the benchmark can measure TLS.
fn raftd_options() -> ClientOptions {
    let path = |name: &str| std::env::var_os(name).map(std::path::PathBuf::from);
    let tls = path("RAFTCTL_CACERT").map(|ca| {
        let (cert, key) = (path("RAFTCTL_CERT"), path("RAFTCTL_KEY"));
        let identity = cert.as_deref().zip(key.as_deref());
        raftd::client::tls_config(&ca, identity)
            .unwrap_or_else(|e| panic!("raftd-bench: RAFTCTL_CACERT etc.: {e}"))
    });
    ClientOptions {
        tls,
        ..ClientOptions::default()
    }
}

/// Opens `count` connections to the cluster at `endpoints` (client ports).
///
/// raftd: one TCP connection per client, each finding the leader by itself. etcd: `conns`
/// gRPC channels shared round-robin by the clients (HTTP/2 multiplexes them).
pub async fn connect(
    system: System,
    endpoints: &[SocketAddr],
    count: usize,
    conns: usize,
) -> Result<Vec<Conn>, String> {
    match system {
        System::Raftd => {
            let _ = conns;
            let opts = ClientOptions {
                deadline: OP_DEADLINE,
                attempt_timeout: Duration::from_secs(2),
                ..raftd_options()
            };
            Ok((0..count)
                .map(|_| {
                    Conn::Raftd(
                        Box::new(Client::new(endpoints.to_vec(), opts.clone())),
                        None,
                    )
                })
                .collect())
        }
        System::Etcd => etcd_connect(endpoints, count, conns).await,
    }
}

#[cfg(feature = "etcd")]
async fn etcd_connect(
    endpoints: &[SocketAddr],
    count: usize,
    conns: usize,
) -> Result<Vec<Conn>, String> {
    crate::etcd::connect(endpoints, count, conns)
        .await
        .map(|v| v.into_iter().map(|c| Conn::Etcd(Box::new(c))).collect())
}

#[cfg(not(feature = "etcd"))]
async fn etcd_connect(_: &[SocketAddr], _: usize, _: usize) -> Result<Vec<Conn>, String> {
    Err(NO_ETCD.into())
}

#[cfg(not(feature = "etcd"))]
const NO_ETCD: &str =
    "this raftd-bench was built without etcd support: cargo build --release -p raftd-bench --features etcd (needs protoc: apt-get install protobuf-compiler)";

/// A watch over a plain connection that counts the events of each `Events` frame by the
/// occurrences of `"kind":` in it (the benchmark's keys and values never contain it).
async fn raw_watch(
    addr: SocketAddr,
    prefix: &str,
    events: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let req = serde_json::json!({"type":"Watch","id":1,"key":prefix,"prefix":true}).to_string();
    let mut frame = (req.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(req.as_bytes());
    tcp.write_all(&frame).await.map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if tcp.read_exact(&mut len).await.is_err() {
                return;
            }
            buf.resize(u32::from_be_bytes(len) as usize, 0);
            if tcp.read_exact(&mut buf).await.is_err() {
                return;
            }
            let n = buf.windows(7).filter(|w| w == b"\"kind\":").count();
            events.fetch_add(n as u64, Ordering::Relaxed);
        }
    }))
}

/// The client endpoint of the current leader.
pub async fn find_leader(system: System, endpoints: &[SocketAddr]) -> Result<SocketAddr, String> {
    match system {
        System::Raftd => raftd_leader(endpoints).await,
        #[cfg(feature = "etcd")]
        System::Etcd => crate::etcd::find_leader(endpoints).await,
        #[cfg(not(feature = "etcd"))]
        System::Etcd => Err(NO_ETCD.into()),
    }
}

async fn raftd_leader(endpoints: &[SocketAddr]) -> Result<SocketAddr, String> {
    let mut client = Client::new(endpoints.to_vec(), raftd_options());
    let mut last = String::from("no endpoint given");
    for &addr in endpoints {
        match client.status_of(addr).await {
            Ok(s) if s.role == "Leader" => return Ok(addr),
            Ok(s) => last = format!("{addr} is {} in term {}", s.role, s.term),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(format!("no member says it leads ({last})"))
}

/// Ok when every member answers and the cluster takes a write.
pub async fn check_ready(system: System, endpoints: &[SocketAddr]) -> Result<(), String> {
    match system {
        System::Raftd => {
            let mut client = Client::new(endpoints.to_vec(), raftd_options());
            for &addr in endpoints {
                let s = client.status_of(addr).await.map_err(|e| e.to_string())?;
                if s.leader_id.is_none() {
                    return Err(format!("{addr} knows no leader yet"));
                }
            }
        }
        #[cfg(feature = "etcd")]
        System::Etcd => crate::etcd::check_members(endpoints).await?,
        #[cfg(not(feature = "etcd"))]
        System::Etcd => return Err(NO_ETCD.into()),
    }
    let mut conns = connect(system, endpoints, 1, 1).await?;
    conns[0].put("raftd-bench/ready", "1").await
}
