//! The two systems under test behind one small interface: put, linearizable get, find the
//! leader, check every member is up. raftd is reached through its own client library, etcd
//! through its v3 gRPC API (the etcd-client crate, behind the `etcd` feature).

use raftd::client::{Client, ClientOptions};
use raftd::rpc::types::Consistency;
use std::net::SocketAddr;
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
    Raftd(Box<Client>),
    #[cfg(feature = "etcd")]
    Etcd(Box<crate::etcd::EtcdConn>),
}

/// How long one operation may take, retries included, before it counts as an error.
pub const OP_DEADLINE: Duration = Duration::from_secs(5);

impl Conn {
    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c) => c.put(key, value).await.map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.put(key, value).await,
        }
    }

    /// A linearizable read (raftd: ReadIndex on the leader; etcd: its default Range).
    pub async fn get(&mut self, key: &str) -> Result<(), String> {
        match self {
            Conn::Raftd(c) => c
                .get(key, Consistency::Linearizable)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => c.get(key).await,
        }
    }
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
                .map(|_| Conn::Raftd(Box::new(Client::new(endpoints.to_vec(), opts.clone()))))
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
