//! The daemon's configuration: command-line flags over an optional TOML file, validated once at
//! start-up with errors that say what to fix.

mod limits;
mod security;

pub use limits::{raft_config, ReplicationLimits};
pub use security::{SecurityConfig, SecurityError};

use crate::rpc::types::NodeId;
use clap::Parser;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Command line of `raftd` (see docs/CLIENT_PROTOCOL.md).
/// Revisions of history kept by default.
pub const DEFAULT_AUTO_COMPACT_REVISIONS: u64 = 10_000;

/// `--snapshot-log-percent`: a snapshot waits for a log a quarter of the state's size.
pub const DEFAULT_SNAPSHOT_LOG_PERCENT: u64 = 25;

/// `--snapshot-catchup-entries` (etcd keeps 5,000).
pub const DEFAULT_SNAPSHOT_CATCHUP_ENTRIES: u64 = 10_000;

/// `--log-format`.
#[derive(clap::ValueEnum, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Parser, Debug, Default, Clone)]
#[command(name = "raftd", version, about = "A Raft consensus daemon")]
pub struct Cli {
    /// TOML file with the same settings; flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer).
    #[arg(long, value_name = "N")]
    pub id: Option<NodeId>,
    /// Address to serve peers and clients on, e.g. 127.0.0.1:8000.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The other members, e.g. 2=127.0.0.1:8001,3=127.0.0.1:8002.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// How log lines are written to stderr: `text` (default) or `json` (one JSON object per
    /// line: ts, level, target, node, msg).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve HTTP here: /metrics, /livez, /readyz and the store for curl (docs/HTTP.md).
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// Directory for everything the node must keep (default: data/node<ID>).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Leader heartbeat interval in milliseconds (default 50).
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Election timeout range in milliseconds, MIN-MAX (default 150-300).
    #[arg(long, value_name = "MIN-MAX")]
    pub election_timeout_ms: Option<String>,
    /// Largest frame accepted from clients and peers, in bytes (default 16 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Take a snapshot once this many entries were applied since the last one (default 10000).
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// ... or once the log holds this many bytes of commands (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub snapshot_bytes: Option<u64>,
    /// ... and either way only once the log's commands add up to this percentage of the last
    /// snapshot's size, so that snapshot work per write stays the same as the state grows
    /// (default 25; 0 turns the condition off).
    #[arg(long, value_name = "PERCENT")]
    pub snapshot_log_percent: Option<u64>,
    /// Entries of log kept in memory behind each snapshot, so that a follower that lags by
    /// fewer catches up from the log instead of receiving the whole state (default 10000;
    /// at most 64 MiB of commands).
    #[arg(long, value_name = "N")]
    pub snapshot_catchup_entries: Option<u64>,
    /// Keep this many revisions of history (reads of the past, watches that resume); the
    /// leader compacts older ones away (default 10000; 0 keeps all until a `Compact`).
    #[arg(long, value_name = "N")]
    pub auto_compact_revisions: Option<u64>,
    /// A file of at least 32 secret bytes that every member has: peers prove they know it
    /// before their messages count.
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// This node's certificate (PEM), naming DNS:raftd-node-<ID> and its addresses; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs every member's certificate (and clients', with --client-cert-auth).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Clients must present a certificate signed by --tls-ca too.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Allow listening on a non-loopback address with neither TLS nor a cluster secret.
    #[arg(long)]
    pub insecure: bool,
    /// Join an existing cluster through these members (after `raftctl member add` names this
    /// node). Ignored by a data dir that already belongs to a cluster.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub join: Option<String>,
    /// DANGEROUS, for when a majority is lost for good: restart as the only voter of a new
    /// configuration, from this node's own data. See README, "Disaster recovery".
    #[arg(long)]
    pub force_new_cluster: bool,
    /// If the data dir is damaged (the node would refuse to start), move it aside to
    /// DIR.damaged-<unix time> and rejoin the cluster with an empty one: the leader catches it
    /// up as a learner and re-admits it as a voter. A healthy majority must be up; this never
    /// founds a cluster.
    #[arg(long)]
    pub repair: bool,
    /// Stop (SIGTERM) without first handing leadership over: the cluster then waits an
    /// election timeout for a new leader. For comparison (scripts/bench-rolling-restart.sh).
    #[arg(long)]
    pub no_handover: bool,
}

/// The same settings as a TOML file. `peers` is a table of id = "host:port".
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<NodeId>,
    listen: Option<String>,
    http_listen: Option<String>,
    peers: Option<BTreeMap<String, String>>,
    data_dir: Option<PathBuf>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<String>,
    max_frame_bytes: Option<usize>,
    snapshot_entries: Option<u64>,
    snapshot_bytes: Option<u64>,
    snapshot_log_percent: Option<u64>,
    snapshot_catchup_entries: Option<u64>,
    auto_compact_revisions: Option<u64>,
    cluster_secret_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    client_cert_auth: Option<bool>,
    insecure: Option<bool>,
    join: Option<String>,
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// `--http-listen`: where the HTTP port is (none: no HTTP).
    pub http_listen: Option<SocketAddr>,
    /// The other members (never this node).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    pub max_frame_bytes: usize,
    /// Snapshot when this many entries were applied since the last snapshot...
    pub snapshot_entries: u64,
    /// ... or when the log holds this many command bytes.
    pub snapshot_bytes: u64,
    /// See `Cli::snapshot_log_percent`.
    pub snapshot_log_percent: u64,
    /// See `Cli::snapshot_catchup_entries`.
    pub snapshot_catchup_entries: u64,
    /// Revisions of history the leader keeps (0: all).
    pub auto_compact_revisions: u64,
    pub security: SecurityConfig,
    /// `--join`: members to ask for the configuration when the data dir is empty.
    pub join: Vec<SocketAddr>,
    pub force_new_cluster: bool,
    /// `--repair`: a damaged data dir is moved aside and the node repaired from the cluster.
    pub repair: bool,
    /// `--no-handover`: a stopping leader does not transfer leadership first.
    pub no_handover: bool,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("--join: {0}")]
    Join(String),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {reason}")]
    ParseFile { path: PathBuf, reason: String },
    #[error("no node id: give --id N (a positive integer)")]
    MissingId,
    #[error("node id must be a positive integer; 0 means \"none\"")]
    ZeroId,
    #[error("--http-listen {0} is the --listen address; give HTTP a port of its own")]
    HttpOnListen(SocketAddr),
    #[error("no address to listen on: give --listen HOST:PORT, or list this node in --peers (ID=HOST:PORT)")]
    MissingListen,
    #[error("cannot use {what} address {value:?}: {reason}")]
    BadAddress {
        what: String,
        value: String,
        reason: String,
    },
    #[error("malformed --peers entry {entry:?}: expected ID=HOST:PORT, e.g. 2=127.0.0.1:8001")]
    MalformedPeer { entry: String },
    #[error("node id {0} appears twice in --peers; give each member once")]
    DuplicatePeer(NodeId),
    #[error("peer address {addr} of node {id} is this node's own --listen address; give each member its own address")]
    PeerIsSelf { id: NodeId, addr: SocketAddr },
    #[error(
        "malformed --election-timeout-ms {0:?}: expected MIN-MAX in milliseconds, e.g. 150-300"
    )]
    MalformedRange(String),
    #[error("timing: {0}")]
    Timing(String),
    #[error("--max-frame-bytes must be at least 1024")]
    FrameTooSmall,
    #[error("--snapshot-entries and --snapshot-bytes must be positive")]
    ZeroSnapshotThreshold,
    #[error(transparent)]
    Security(#[from] SecurityError),
}

impl NodeConfig {
    /// Merges the file named by `--config` (if any) under the flags, then validates.
    pub fn load(cli: &Cli) -> Result<NodeConfig, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let id = cli.id.or(file.id).ok_or(ConfigError::MissingId)?;
        if id == 0 {
            return Err(ConfigError::ZeroId);
        }
        let mut peers = match (&cli.peers, file.peers) {
            (Some(text), _) => parse_peers(text)?,
            (None, Some(table)) => peers_from_table(&table)?,
            (None, None) => Vec::new(),
        };
        // Listing the node itself is accepted: its own entry is where it listens unless
        // --listen says otherwise (so `--id 2 --peers 1=…,2=…,3=…` is a whole command line).
        let own = peers
            .iter()
            .find(|(peer_id, _)| *peer_id == id)
            .map(|(_, addr)| *addr);
        peers.retain(|(peer_id, _)| *peer_id != id);
        let listen = match cli.listen.clone().or(file.listen) {
            Some(text) => resolve("--listen", &text)?,
            None => own.ok_or(ConfigError::MissingListen)?,
        };
        let mut map = BTreeMap::new();
        for (peer_id, addr) in peers {
            if addr == listen {
                return Err(ConfigError::PeerIsSelf { id: peer_id, addr });
            }
            if map.insert(peer_id, addr).is_some() {
                return Err(ConfigError::DuplicatePeer(peer_id));
            }
        }
        let http_listen = match cli.http_listen.clone().or(file.http_listen) {
            Some(text) => Some(resolve("--http-listen", &text)?),
            None => None,
        };
        if http_listen == Some(listen) {
            return Err(ConfigError::HttpOnListen(listen));
        }
        let heartbeat_ms = cli.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50);
        let election_timeout_ms = match cli.election_timeout_ms.clone().or(file.election_timeout_ms)
        {
            Some(text) => parse_range(&text)?,
            None => (150, 300),
        };
        let max_frame_bytes = cli
            .max_frame_bytes
            .or(file.max_frame_bytes)
            .unwrap_or(16 << 20);
        if max_frame_bytes < 1024 {
            return Err(ConfigError::FrameTooSmall);
        }
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("data/node{id}")));
        let snapshot_entries = cli
            .snapshot_entries
            .or(file.snapshot_entries)
            .unwrap_or(10_000);
        let snapshot_bytes = cli
            .snapshot_bytes
            .or(file.snapshot_bytes)
            .unwrap_or(64 << 20);
        let snapshot_log_percent = cli
            .snapshot_log_percent
            .or(file.snapshot_log_percent)
            .unwrap_or(DEFAULT_SNAPSHOT_LOG_PERCENT);
        let snapshot_catchup_entries = cli
            .snapshot_catchup_entries
            .or(file.snapshot_catchup_entries)
            .unwrap_or(DEFAULT_SNAPSHOT_CATCHUP_ENTRIES);
        if snapshot_entries == 0 || snapshot_bytes == 0 {
            return Err(ConfigError::ZeroSnapshotThreshold);
        }
        let security = SecurityConfig::from_parts(
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
            cli.tls_ca.clone().or(file.tls_ca),
            cli.client_cert_auth || file.client_cert_auth.unwrap_or(false),
            cli.cluster_secret_file.clone().or(file.cluster_secret_file),
            cli.insecure || file.insecure.unwrap_or(false),
            listen,
        )?;
        let join = match cli.join.clone().or(file.join) {
            Some(text) => text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| resolve("--join", t))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        if cli.join.is_some() && join.is_empty() {
            return Err(ConfigError::Join(
                "give at least one HOST:PORT of a member".into(),
            ));
        }
        let cfg = NodeConfig {
            join,
            force_new_cluster: cli.force_new_cluster,
            repair: cli.repair,
            no_handover: cli.no_handover,
            security,
            snapshot_entries,
            auto_compact_revisions: cli
                .auto_compact_revisions
                .or(file.auto_compact_revisions)
                .unwrap_or(DEFAULT_AUTO_COMPACT_REVISIONS),
            snapshot_bytes,
            snapshot_log_percent,
            snapshot_catchup_entries,
            id,
            listen,
            http_listen,
            peers: map,
            data_dir,
            heartbeat_ms,
            election_timeout_ms,
            max_frame_bytes,
        };
        cfg.timing()?;
        Ok(cfg)
    }

    /// The tick length and the core's tick counts. A tick is a fifth of the heartbeat (10 ms
    /// by default), fine enough to randomize election timeouts.
    pub fn timing(&self) -> Result<Timing, ConfigError> {
        let (min, max) = self.election_timeout_ms;
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::Timing(
                "--heartbeat-ms must be positive".into(),
            ));
        }
        if min >= max {
            return Err(ConfigError::Timing(format!(
                "election timeout range {min}-{max} ms is empty; the maximum must exceed the minimum"
            )));
        }
        if self.heartbeat_ms >= min {
            return Err(ConfigError::Timing(format!(
                "heartbeat ({} ms) must be shorter than the minimum election timeout ({min} ms), ideally by 3x or more",
                self.heartbeat_ms
            )));
        }
        let tick_ms = (self.heartbeat_ms / 5).max(1);
        Ok(Timing {
            tick_ms,
            heartbeat_ticks: (self.heartbeat_ms / tick_ms).max(1) as u32,
            election_ticks_min: (min / tick_ms) as u32,
            election_ticks_max: (max / tick_ms).max(min / tick_ms + 1) as u32,
        })
    }

    /// Every member, this node included.
    pub fn members(&self) -> BTreeMap<NodeId, SocketAddr> {
        let mut all = self.peers.clone();
        all.insert(self.id, self.listen);
        all
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub tick_ms: u64,
    pub heartbeat_ticks: u32,
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        reason: e.message().to_string(),
    })
}

fn resolve(what: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: String| ConfigError::BadAddress {
        what: what.to_string(),
        value: text.to_string(),
        reason,
    };
    let mut addrs = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

/// Parses `ID=HOST:PORT,ID=HOST:PORT`.
pub fn parse_peers(text: &str) -> Result<Vec<(NodeId, SocketAddr)>, ConfigError> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let malformed = || ConfigError::MalformedPeer {
            entry: entry.to_string(),
        };
        let (id, addr) = entry.split_once('=').ok_or_else(malformed)?;
        let id: NodeId = id.trim().parse().map_err(|_| malformed())?;
        if id == 0 {
            return Err(ConfigError::ZeroId);
        }
        out.push((id, resolve(&format!("peer {id}"), addr.trim())?));
    }
    Ok(out)
}

fn peers_from_table(
    table: &BTreeMap<String, String>,
) -> Result<Vec<(NodeId, SocketAddr)>, ConfigError> {
    let text: Vec<String> = table.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parse_peers(&text.join(","))
}

fn parse_range(text: &str) -> Result<(u64, u64), ConfigError> {
    let malformed = || ConfigError::MalformedRange(text.to_string());
    let (a, b) = text.split_once('-').ok_or_else(malformed)?;
    let a = a.trim().parse().map_err(|_| malformed())?;
    let b = b.trim().parse().map_err(|_| malformed())?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["raftd"];
        all.extend_from_slice(args);
        Cli::parse_from(all)
    }

    #[test]
    fn flags_make_a_config_and_self_in_peers_is_ignored() {
        let c = cli(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:8000",
            "--peers",
            "1=127.0.0.1:8000,2=127.0.0.1:8001,3=127.0.0.1:8002",
            "--data-dir",
            "d",
        ]);
        let cfg = NodeConfig::load(&c).unwrap();
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.members().len(), 3);
        assert_eq!(cfg.election_timeout_ms, (150, 300));
        let t = cfg.timing().unwrap();
        assert_eq!(
            (
                t.tick_ms,
                t.heartbeat_ticks,
                t.election_ticks_min,
                t.election_ticks_max
            ),
            (10, 5, 15, 30)
        );
    }

    /// The owner's command line: the whole member list, the node's own entry included, and
    /// no --listen: the node listens where its own entry says.
    #[test]
    fn the_own_entry_of_peers_is_the_default_listen_address() {
        let cfg = NodeConfig::load(&cli(&[
            "--id",
            "2",
            "--peers",
            "1=127.0.0.1:8000,2=127.0.0.1:8001,3=127.0.0.1:8002",
        ]))
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(cfg.peers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        // --listen wins over the own entry (listening on all interfaces, say).
        let cfg = NodeConfig::load(&cli(&[
            "--id",
            "2",
            "--listen",
            "127.0.0.1:9001",
            "--peers",
            "1=127.0.0.1:8000,2=127.0.0.1:8001",
        ]))
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9001".parse().unwrap());
        // Without either, the error names both ways.
        let e = NodeConfig::load(&cli(&["--id", "2", "--peers", "1=127.0.0.1:8000"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen") && e.contains("--peers"), "{e}");
    }

    #[test]
    fn bad_configs_say_what_to_fix() {
        let err = |args: &[&str]| NodeConfig::load(&cli(args)).unwrap_err().to_string();
        assert!(err(&["--listen", "127.0.0.1:1"]).contains("--id"));
        assert!(err(&["--id", "1"]).contains("--listen"));
        assert!(err(&["--id", "0", "--listen", "127.0.0.1:1"]).contains("positive"));
        assert!(err(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--peers",
            "2:127.0.0.1:2"
        ])
        .contains("ID=HOST:PORT"));
        assert!(err(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--peers",
            "2=127.0.0.1:2,2=127.0.0.1:3"
        ])
        .contains("twice"));
        assert!(err(&["--id", "1", "--listen", "nonsense", "--peers", ""]).contains("--listen"));
        assert!(err(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--election-timeout-ms",
            "300"
        ])
        .contains("MIN-MAX"));
        assert!(err(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--heartbeat-ms",
            "200"
        ])
        .contains("shorter"));
    }

    #[test]
    fn security_flags_are_checked_together_and_against_the_listen_address() {
        let err = |args: &[&str]| NodeConfig::load(&cli(args)).unwrap_err().to_string();
        let ok = |args: &[&str]| NodeConfig::load(&cli(args)).unwrap().security;
        // Loopback without authentication is allowed; anything reachable from outside is not.
        assert!(!ok(&["--id", "1", "--listen", "127.0.0.1:1"]).authenticates_peers());
        let e = err(&["--id", "1", "--listen", "0.0.0.0:1"]);
        assert!(
            e.contains("0.0.0.0:1")
                && e.contains("--cluster-secret-file")
                && e.contains("--insecure"),
            "{e}"
        );
        assert!(ok(&["--id", "1", "--listen", "0.0.0.0:1", "--insecure"]).insecure);
        let s = ok(&[
            "--id",
            "1",
            "--listen",
            "0.0.0.0:1",
            "--cluster-secret-file",
            "s",
        ]);
        assert_eq!(s.cluster_secret_file, Some(PathBuf::from("s")));
        let tls = [
            "--id",
            "1",
            "--listen",
            "0.0.0.0:1",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ];
        assert!(err(&tls).contains("--tls-ca"), "{}", err(&tls));
        let mut full = tls.to_vec();
        full.extend(["--tls-ca", "ca", "--client-cert-auth"]);
        let s = ok(&full);
        assert!(s.client_cert_auth && s.tls.is_some());
        assert!(
            err(&["--id", "1", "--listen", "127.0.0.1:1", "--client-cert-auth"])
                .contains("needs TLS")
        );
    }

    #[test]
    fn file_settings_are_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 2\nlisten = \"127.0.0.1:8001\"\nheartbeat_ms = 40\n[peers]\n1 = \"127.0.0.1:8000\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--heartbeat-ms",
            "30",
        ]))
        .unwrap();
        assert_eq!(cfg.id, 2);
        assert_eq!(cfg.heartbeat_ms, 30);
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.data_dir, PathBuf::from("data/node2"));
        assert_eq!(
            cfg.snapshot_catchup_entries,
            DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
        );
        // The log kept behind a snapshot, from the file, then from a flag; it reaches the core.
        std::fs::write(
            &path,
            "id = 2\nlisten = \"127.0.0.1:8001\"\nsnapshot_catchup_entries = 500\n[peers]\n1 = \"127.0.0.1:8000\"\n",
        )
        .unwrap();
        let from_file = NodeConfig::load(&cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(from_file.snapshot_catchup_entries, 500);
        let flag = NodeConfig::load(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--snapshot-catchup-entries",
            "0",
        ]))
        .unwrap();
        assert_eq!(limits::raft_config(&flag).unwrap().log_behind_snapshot, 0);
        std::fs::write(&path, "id = 2\nbogus = 1\n").unwrap();
        let err = NodeConfig::load(&cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
