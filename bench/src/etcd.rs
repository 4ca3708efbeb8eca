//! etcd through its v3 gRPC API (etcd-client), for the side-by-side runs.

use etcd_client::{Client, ConnectOptions};
use std::net::SocketAddr;
use std::time::Duration;

/// A clone of a shared gRPC channel (cloning an etcd-client `Client` shares its connection).
pub struct EtcdConn(Client);

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
        .map(|i| EtcdConn(channels[i % channels.len()].clone()))
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
