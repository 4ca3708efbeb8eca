//! etcd through its v3 gRPC API (etcd-client), for the side-by-side runs.

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A clone of a shared gRPC channel (cloning an etcd-client `Client` shares its connection),
/// and the lease it keeps alive once it did, with its keep-alive stream (reused, as etcd's
/// own clients do).
pub struct EtcdConn(
    Client,
    Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
);

impl EtcdConn {
    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.0
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// etcd's default Range is linearizable (serializable = false).
    pub async fn get(&mut self, key: &str) -> Result<(), String> {
        self.0
            .get(key, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn range(&mut self, start: &str, end: &str) -> Result<(), String> {
        self.0
            .get(start, Some(GetOptions::new().with_range(end)))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn txn(&mut self, key: &str, value: &str) -> Result<(), String> {
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::NotEqual, "x")])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.0.txn(txn).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// One keep-alive request and its answer on the lease's stream.
    pub async fn keepalive(&mut self) -> Result<(), String> {
        if self.1.is_none() {
            let id = self
                .0
                .lease_grant(60, None)
                .await
                .map_err(|e| e.to_string())?
                .id();
            let pair = self
                .0
                .lease_keep_alive(id)
                .await
                .map_err(|e| e.to_string())?;
            self.1 = Some(pair);
        }
        let Some((keeper, stream)) = self.1.as_mut() else {
            return Err("no lease".into());
        };
        keeper.keep_alive().await.map_err(|e| e.to_string())?;
        stream
            .message()
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "the keep-alive stream ended".to_string())
    }
}

/// A watch of every key under `prefix` at `endpoint`, counting the events it receives.
pub async fn watch(
    endpoint: SocketAddr,
    prefix: &str,
    events: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut c = client(&[endpoint]).await?;
    let mut stream = c
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            events.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
        }
    }))
}

fn urls(endpoints: &[SocketAddr]) -> Vec<String> {
    endpoints.iter().map(|a| format!("http://{a}")).collect()
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(crate::backend::OP_DEADLINE)
}

async fn client(endpoints: &[SocketAddr]) -> Result<Client, String> {
    Client::connect(urls(endpoints), Some(options()))
        .await
        .map_err(|e| format!("connecting to etcd at {endpoints:?}: {e}"))
}

/// `count` clients over `conns` channels, each channel balancing over every endpoint as
/// etcd's own clients do (a follower forwards writes to the leader).
pub async fn connect(
    endpoints: &[SocketAddr],
    count: usize,
    conns: usize,
) -> Result<Vec<EtcdConn>, String> {
    let mut channels = Vec::new();
    for _ in 0..conns.clamp(1, count.max(1)) {
        channels.push(client(endpoints).await?);
    }
    Ok((0..count)
        .map(|i| EtcdConn(channels[i % channels.len()].clone(), None))
        .collect())
}

pub async fn find_leader(endpoints: &[SocketAddr]) -> Result<SocketAddr, String> {
    let mut last = String::from("no endpoint given");
    for &addr in endpoints {
        match client(&[addr]).await {
            Ok(mut c) => match c.status().await {
                Ok(s) => {
                    let me = s.header().map(|h| h.member_id());
                    if s.leader() != 0 && me == Some(s.leader()) {
                        return Ok(addr);
                    }
                    last = format!("{addr} is not the leader");
                }
                Err(e) => last = format!("{addr}: {e}"),
            },
            Err(e) => last = e,
        }
    }
    Err(format!("no etcd member says it leads ({last})"))
}

pub async fn check_members(endpoints: &[SocketAddr]) -> Result<(), String> {
    for &addr in endpoints {
        let mut c = client(&[addr]).await?;
        let s = c.status().await.map_err(|e| format!("{addr}: {e}"))?;
        if s.leader() == 0 {
            return Err(format!("{addr} knows no leader yet"));
        }
    }
    Ok(())
}
