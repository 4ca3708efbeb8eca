//! Real `raftd` processes on 127.0.0.1 for end-to-end tests, and a tiny client for `Status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `raftd` binary under test: `$RAFTD_BIN`, or the one Cargo built next to the running
/// test executable (`target/<profile>/raftd`; Cargo builds a package's binaries before its
/// integration tests).
pub fn bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RAFTD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/raftd
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    profile_dir.join(format!("raftd{}", std::env::consts::EXE_SUFFIX))
}

/// A tool built next to `raftd` (`raftctl`): `$RAFTCTL_BIN` for raftctl, or the sibling of
/// [`bin`].
pub fn tool_bin(name: &str) -> PathBuf {
    if name == "raftctl" {
        if let Some(path) = std::env::var_os("RAFTCTL_BIN") {
            return PathBuf::from(path);
        }
    }
    bin().with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// What a command printed, and its exit code.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` with `args` to its end.
pub fn run(program: &Path, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `raftctl --cluster CLUSTER ARGS...`.
pub fn raftctl(cluster: &str, args: &[&str]) -> Run {
    let all: Vec<&str> = ["--cluster", cluster]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run(&tool_bin("raftctl"), &all)
}

/// `n` free loopback ports for nodes to listen on: bound (to check) and released.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), at random: a port the
/// kernel handed out for `bind(0)` is one it also hands out as the local port of outgoing
/// connections, and with many tests connecting at once one of them took a port before the
/// node it was meant for could listen on it ("Address already in use").
pub fn free_ports(n: usize) -> Vec<u16> {
    reserve_ports(n)
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// `n` loopback ports as `free_ports` picks them, held (bound) until the listeners are
/// dropped.
pub fn reserve_ports(n: usize) -> Vec<TcpListener> {
    use rand::Rng;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let mut rng = rand::thread_rng();
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if held.len() == n {
            break;
        }
        let port = rng.gen_range(low..high);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports in {low}..{high}");
    held
}

pub struct Node {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    peers: String,
    /// `--join` instead of `--peers`: a node added to a running cluster.
    pub join: Option<String>,
    /// Extra command-line arguments given to `raftd` on every start (e.g. `--max-frame-bytes`).
    pub extra_args: Vec<String>,
    /// Disk faults injected into this node's data dir (see [`DiskFaults`]), from its next start.
    pub faults: Option<DiskFaults>,
    child: Option<Child>,
}

/// Disk faults for one node: the faultfs shim (tests/support/faultfs/faultfs.c) preloaded
/// into its process, steered through files in a control dir, so a test switches faults on
/// and off while the node runs. Only the node's data dir is affected.
pub struct DiskFaults {
    ctl: tempfile::TempDir,
}

impl DiskFaults {
    pub fn new() -> DiskFaults {
        let ctl = tempfile::tempdir().expect("faultfs control dir");
        std::fs::write(ctl.path().join("count"), b"").expect("faultfs count file");
        DiskFaults { ctl }
    }

    fn toggle(&self, name: &str, on: bool, content: &str) {
        let path = self.ctl.path().join(name);
        if on {
            std::fs::write(path, content).expect("faultfs control file");
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Every write to the data dir fails with ENOSPC (nothing written) while `full`.
    pub fn disk_full(&self, full: bool) {
        self.toggle("enospc", full, "");
    }

    /// Every fsync in the data dir fails with EIO while `on`.
    pub fn fsync_fails(&self, on: bool) {
        self.toggle("fsync_eio", on, "");
    }

    /// Every fsync in the data dir takes `ms` longer (0: normal).
    pub fn slow_fsync(&self, ms: u64) {
        self.toggle("fsync_delay_ms", ms > 0, &ms.to_string());
    }

    /// fsyncs in the data dir since the node started.
    pub fn fsyncs(&self) -> u64 {
        std::fs::read_to_string(self.ctl.path().join("fsyncs"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn env(&self, data_dir: &Path) -> Vec<(String, String)> {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let root = data_dir.canonicalize().expect("canonical data dir");
        vec![
            ("LD_PRELOAD".into(), env!("RAFTD_FAULTFS_SO").into()),
            (
                "RAFTD_FAULTFS_CTL".into(),
                self.ctl.path().display().to_string(),
            ),
            ("RAFTD_FAULTFS_ROOT".into(), root.display().to_string()),
        ]
    }
}

impl Default for DiskFaults {
    fn default() -> Self {
        DiskFaults::new()
    }
}

impl Node {
    /// A node not started yet; `peers` is the `--peers` value (`ID=HOST:PORT,...`), which may
    /// point at proxies instead of the peers' own ports.
    pub fn new(
        id: u64,
        port: u16,
        data_dir: PathBuf,
        log_path: PathBuf,
        peers: String,
        extra_args: Vec<String>,
    ) -> Node {
        Node {
            id,
            port,
            data_dir,
            log_path,
            peers,
            join: None,
            extra_args,
            faults: None,
            child: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The node's HTTP port (`--http-listen` among its arguments), if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let i = self.extra_args.iter().position(|a| a == "--http-listen")?;
        self.extra_args.get(i + 1)?.parse().ok()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let (flag, value) = match &self.join {
            Some(join) => ("--join", join.as_str()),
            None => ("--peers", self.peers.as_str()),
        };
        let env = self
            .faults
            .as_ref()
            .map(|f| f.env(&self.data_dir))
            .unwrap_or_default();
        let child = Command::new(bin())
            .envs(env)
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([flag, value])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftd");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on a child pid we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        status(self.addr())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the running process in KiB (from /proc), if known.
    pub fn rss_kib(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a test cluster's peers authenticate each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Nothing (loopback only): anyone who says Hello is a peer.
    Insecure,
    /// A cluster secret (what the launcher gives a cluster by default).
    Secret,
    /// TLS with certificates made by `raftctl cert`'s code, optionally requiring client
    /// certificates.
    Tls { client_cert_auth: bool },
}

/// Writes a fresh cluster secret (64 hex characters, mode 600) to `dir/cluster-secret`.
pub fn write_secret(dir: &Path) -> PathBuf {
    let path = dir.join("cluster-secret");
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex).expect("write the cluster secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    path
}

/// A test cluster's certificates (`dir/tls/`): a CA, one certificate per node, one client's.
pub struct Pki {
    pub ca: raftd_transport::security::certs::Ca,
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use raftd_transport::security::certs::{Ca, Validity};
        let dir = dir.join("tls");
        std::fs::create_dir_all(&dir).expect("create the tls dir");
        let ca = Ca::generate("test cluster CA", Validity::days(2)).expect("make a CA");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write ca.pem");
        let pki = Pki { ca, dir };
        let client = pki
            .ca
            .client("raftctl", Validity::days(2))
            .expect("make a client certificate");
        pki.write("client", &client);
        pki
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes `NAME.pem` and `NAME-key.pem`; returns their paths.
    pub fn write(
        &self,
        name: &str,
        issued: &raftd_transport::security::certs::Issued,
    ) -> (PathBuf, PathBuf) {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &issued.cert_pem).expect("write a certificate");
        std::fs::write(&key, &issued.key_pem).expect("write a key");
        (cert, key)
    }

    /// Node `id`'s certificate for 127.0.0.1, written as `node-ID.pem` (replacing one made
    /// before: that is how a test rotates it).
    pub fn node_files(&self, id: u64) -> (PathBuf, PathBuf) {
        use raftd_transport::security::certs::Validity;
        let issued = self
            .ca
            .node(id, &["127.0.0.1".into()], Validity::days(2))
            .expect("make a node certificate");
        self.write(&format!("node-{id}"), &issued)
    }

    /// The command-line flags of node `id`.
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.node_files(id);
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            self.ca_file().display().to_string(),
        ]
    }

    /// A client configuration trusting the CA and presenting the client certificate.
    pub fn client_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let (cert, key) = (self.dir.join("client.pem"), self.dir.join("client-key.pem"));
        raftd::client::tls_config(&self.ca_file(), Some((&cert, &key))).expect("client TLS")
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
    /// The certificates, for `Auth::Tls` clusters.
    pub pki: Option<Pki>,
}

impl Cluster {
    /// `n` nodes authenticated by a cluster secret, as the launcher starts them.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like `start`, with `extra` appended to every node's command line.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_auth(n, extra, Auth::Secret)
    }

    /// Like `start`, with the disk-fault shim in every node (faults off until a test turns
    /// them on through `Node::faults`).
    pub fn start_with_disk_faults(n: usize, extra: &[&str]) -> Cluster {
        Cluster::build(n, extra, Auth::Secret, true, false, &mut |_, _, _| {})
    }

    /// Like `start_with`, with the peers authenticated as `auth` says.
    pub fn start_auth(n: usize, extra: &[&str], auth: Auth) -> Cluster {
        Cluster::build(n, extra, auth, false, false, &mut |_, _, _| {})
    }

    /// Like `start`, with `prepare(id, data_dir, members)` run for each node before it starts
    /// (`members`: every node, `ID=127.0.0.1:PORT,...`), e.g. to restore a backup into it.
    pub fn start_prepared(n: usize, prepare: &mut dyn FnMut(u64, &Path, &str)) -> Cluster {
        Cluster::build(n, &[], Auth::Secret, false, false, prepare)
    }

    /// Like `start_auth`, each node also serving HTTP on a port of its own
    /// ([`Node::http_addr`]).
    pub fn start_http(n: usize, extra: &[&str], auth: Auth) -> Cluster {
        Cluster::build(n, extra, auth, false, true, &mut |_, _, _| {})
    }

    fn build(
        n: usize,
        extra: &[&str],
        auth: Auth,
        disk_faults: bool,
        http: bool,
        prepare: &mut dyn FnMut(u64, &Path, &str),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let mut pki = None;
        match auth {
            Auth::Insecure => {}
            Auth::Secret => {
                let secret = write_secret(dir.path());
                extra.extend(["--cluster-secret-file".into(), secret.display().to_string()]);
            }
            Auth::Tls { client_cert_auth } => {
                pki = Some(Pki::new(dir.path()));
                if client_cert_auth {
                    extra.push("--client-cert-auth".into());
                }
            }
        }
        let ports = free_ports(if http { 2 * n } else { n });
        let (ports, http_ports) = ports.split_at(n);
        let members: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(j, p)| format!("{}=127.0.0.1:{p}", j + 1))
            .collect();
        let members = members.join(",");
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let peers: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, p)| format!("{}=127.0.0.1:{p}", j + 1))
                .collect();
            let mut node = Node {
                id,
                port: ports[i],
                data_dir: dir.path().join(format!("node{id}")),
                log_path: dir.path().join(format!("node{id}.log")),
                peers: peers.join(","),
                join: None,
                extra_args: extra
                    .iter()
                    .cloned()
                    .chain(pki.iter().flat_map(|p| p.node_args(id)))
                    .chain(
                        http_ports
                            .get(i)
                            .map(|p| ["--http-listen".to_string(), format!("127.0.0.1:{p}")])
                            .into_iter()
                            .flatten(),
                    )
                    .collect(),
                faults: disk_faults.then(DiskFaults::new),
                child: None,
            };
            prepare(id, &node.data_dir, &members);
            node.start();
            nodes.push(node);
        }
        Cluster { nodes, dir, pki }
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Starts a new node (the next id) with an empty data dir, joining through the nodes
    /// running now (`raftd --join`), with the same authentication as the others. It waits to
    /// be added (`MemberAdd`). Returns its id.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let port = free_ports(1)[0];
        let join: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.addr().to_string()))
            .collect();
        // The cluster's own flags (the secret), without another node's TLS files
        // or its one-shot recovery flags: a new node started with
        // `--force-new-cluster` refuses to start (its data dir holds nothing).
        let template = &self.nodes[0].extra_args;
        let mut extra = Vec::new();
        let mut i = 0;
        while i < template.len() {
            if template[i].starts_with("--tls-") {
                i += 2;
                continue;
            }
            if template[i] == "--force-new-cluster" {
                i += 1;
                continue;
            }
            if template[i] == "--http-listen" {
                // A port of its own.
                extra.push("--http-listen".into());
                extra.push(format!("127.0.0.1:{}", free_ports(1)[0]));
                i += 2;
                continue;
            }
            extra.push(template[i].clone());
            i += 1;
        }
        if let Some(pki) = &self.pki {
            extra.extend(pki.node_args(id));
        }
        let mut node = Node {
            id,
            port,
            data_dir: self.dir.path().join(format!("node{id}")),
            log_path: self.dir.path().join(format!("node{id}.log")),
            peers: String::new(),
            join: Some(join.join(",")),
            extra_args: extra,
            faults: None,
            child: None,
        };
        node.start();
        self.nodes.push(node);
        id
    }

    /// Deletes node `id`'s data dir (it must be stopped): a lost disk.
    pub fn wipe(&mut self, id: u64) {
        let node = self.node(id);
        assert!(!node.is_running(), "wipe node {id} only once it is stopped");
        let _ = std::fs::remove_dir_all(&node.data_dir);
    }

    /// Waits until exactly one of `among` reports itself leader and every one of them names it
    /// as leader in the same term. Returns (leader, term).
    pub fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> Option<(u64, u64)> {
        wait_for(timeout, || {
            let statuses: Vec<serde_json::Value> = among
                .iter()
                .map(|id| self.nodes[*id as usize - 1].status())
                .collect::<Option<_>>()?;
            let leaders: Vec<&serde_json::Value> =
                statuses.iter().filter(|s| s["role"] == "Leader").collect();
            if leaders.len() != 1 {
                return None;
            }
            let leader = leaders[0]["node_id"].as_u64()?;
            let term = leaders[0]["term"].as_u64()?;
            let agreed = statuses.iter().all(|s| {
                s["leader_id"].as_u64() == Some(leader) && s["term"].as_u64() == Some(term)
            });
            agreed.then_some((leader, term))
        })
    }

    /// Every node's address, in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// Every node's address as raftctl's `--cluster` takes them: `HOST:PORT,HOST:PORT,…`.
    pub fn cluster_arg(&self) -> String {
        self.addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The leader all of `among` agree on, or a panic that shows the logs.
    pub fn leader_among(&self, among: &[u64], timeout: Duration) -> u64 {
        match self.wait_for_leader(among, timeout) {
            Some((leader, _)) => leader,
            None => panic!(
                "no single leader among {among:?} within {timeout:?}\n{}",
                self.logs()
            ),
        }
    }

    /// The leader of the whole cluster (every node running).
    pub fn leader(&self, timeout: Duration) -> u64 {
        let all: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        self.leader_among(&all, timeout)
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- node {} -----\n{}", n.id, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one raw frame and reads one response frame.
pub fn request(addr: SocketAddr, body: &[u8]) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(1000)))
        .ok()?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame).ok()?;
    read_frame(&mut s)
}

pub fn read_frame(s: &mut TcpStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

pub fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    request(addr, br#"{"type":"Status","id":7}"#)
}

pub fn data_dir_exists(p: &Path) -> bool {
    p.join("raft.wal").exists()
}

/// Sends SIGTERM to a child process the test started.
pub fn sigterm(child: &std::process::Child) {
    // SAFETY: plain kill(2) on a child pid we own.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Encodes one frame: the 4-byte big-endian length, then `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A raw client connection for sending arbitrary bytes and reading frames, with timeouts on
/// everything so a test can never hang.
pub struct RawConn {
    pub stream: TcpStream,
    /// Show `Ok` answers as protocol v1 has them: the fields v2 added (revisions, version,
    /// lease) are taken out, so the v1 tests compare whole answers. `v2()` turns it off.
    v1_view: bool,
}

/// The fields protocol v2 added to v1's `Ok` answers.
const V2_FIELDS: [&str; 5] = [
    "revision",
    "mod_revision",
    "create_revision",
    "version",
    "lease",
];

/// What a read from a `RawConn` got.
#[derive(Debug)]
pub enum Got {
    Frame(serde_json::Value),
    /// A frame that is not JSON (the node never sends one).
    Garbage(Vec<u8>),
    /// The node closed the connection (EOF or reset).
    Closed,
    /// Nothing within the timeout.
    Silent,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        RawConn::over(stream)
    }

    /// A connection over a stream the test opened itself.
    pub fn over(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            v1_view: true,
        }
    }

    /// Answers whole, with protocol v2's fields.
    pub fn v2(mut self) -> RawConn {
        self.v1_view = false;
        self
    }

    /// Writes raw bytes; an error (the node closed first) is returned, not a panic.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        self.send_bytes(&frame(body)).expect("send frame");
    }

    pub fn send_json(&mut self, v: &serde_json::Value) {
        self.send_frame(v.to_string().as_bytes());
    }

    /// Reads the next frame, waiting at most `timeout`.
    pub fn read(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        let mut len = [0u8; 4];
        match read_full(&mut self.stream, &mut len, deadline) {
            Ok(true) => {}
            Ok(false) => return Got::Closed,
            Err(ReadFail::Timeout) => return Got::Silent,
            Err(ReadFail::Closed) => return Got::Closed,
        }
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        match read_full(&mut self.stream, &mut buf, deadline) {
            Ok(true) => {}
            Ok(false) | Err(ReadFail::Closed) => return Got::Closed,
            Err(ReadFail::Timeout) => return Got::Silent,
        }
        match serde_json::from_slice::<serde_json::Value>(&buf) {
            Ok(mut v) => {
                if self.v1_view && v["type"] == "Ok" {
                    if let Some(obj) = v.as_object_mut() {
                        for f in V2_FIELDS {
                            obj.remove(f);
                        }
                    }
                }
                Got::Frame(v)
            }
            Err(_) => Got::Garbage(buf),
        }
    }

    /// The next frame; panics (naming `what`) if none arrives within 10 s.
    pub fn recv(&mut self, what: &str) -> serde_json::Value {
        match self.read(Duration::from_secs(10)) {
            Got::Frame(v) => v,
            other => panic!("{what}: expected a frame, got {other:?}"),
        }
    }

    /// Sends `req` and returns the next frame.
    pub fn call(&mut self, req: &serde_json::Value) -> serde_json::Value {
        self.send_json(req);
        self.recv(&format!("answer to {req}"))
    }

    /// True if the node closes the connection within `timeout` (frames before the close are
    /// returned too).
    pub fn closed_within(&mut self, timeout: Duration) -> (bool, Vec<serde_json::Value>) {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left.max(Duration::from_millis(1))) {
                Got::Closed => return (true, frames),
                Got::Frame(v) => frames.push(v),
                Got::Garbage(b) => panic!("node sent a non-JSON frame: {b:?}"),
                Got::Silent => return (false, frames),
            }
            if Instant::now() >= deadline {
                return (false, frames);
            }
        }
    }
}

enum ReadFail {
    Timeout,
    Closed,
}

/// Fills `buf` before `deadline`. Ok(false): EOF before the first byte.
fn read_full(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<bool, ReadFail> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFail::Timeout);
        }
        s.set_read_timeout(Some(left))
            .map_err(|_| ReadFail::Closed)?;
        match s.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ReadFail::Closed),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadFail::Timeout)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ReadFail::Closed),
        }
    }
    Ok(true)
}
