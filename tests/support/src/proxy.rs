//! A fault-injecting TCP proxy for one directed peer link `i -> j` on 127.0.0.1.
//!
//! Node `i`'s `--peers` entry for `j` points at the proxy's port; the proxy forwards every
//! connection to `j`'s real listen port. Because a raftd node sends its own messages only on the
//! connection it opened (docs/RAFT_RPC.md), a proxy carries exactly the messages from `i` to
//! `j`, so cutting it is a one-way partition and no root or firewall is needed.
//!
//! States:
//! * `Up`: bytes flow (after `delay`, if one is set).
//! * `Cut`: live connections are closed and new ones are accepted and closed at once, so the
//!   sender sees a dead peer and reconnects with backoff.
//! * `Stalled`: connections stay open but nothing is forwarded (a black hole that TCP does not
//!   notice); on `restore` the held bytes are delivered late, in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Cut,
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ctl {
    mode: Mode,
    delay: Duration,
    /// Bumped by every `cut`: connections opened under an older epoch close.
    epoch: u64,
    shutdown: bool,
}

/// Counters of one proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct Proxy {
    pub from: u64,
    pub to: u64,
    pub listen: SocketAddr,
    pub target: SocketAddr,
    ctl: watch::Sender<Ctl>,
    pub stats: Arc<ProxyStats>,
    /// While `Some`: every byte the sender sends, as forwarded (see `record`).
    recording: Recording,
    accept_task: JoinHandle<()>,
}

/// The bytes a proxy forwarded from its sender, while asked to keep them.
type Recording = Arc<Mutex<Option<Vec<u8>>>>;

impl Proxy {
    /// Binds a free port on 127.0.0.1 and starts forwarding to `target`. Must be called inside
    /// a tokio runtime.
    pub async fn start(from: u64, to: u64, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (ctl, rx) = watch::channel(Ctl {
            mode: Mode::Up,
            delay: Duration::ZERO,
            epoch: 0,
            shutdown: false,
        });
        let stats = Arc::new(ProxyStats::default());
        let recording = Recording::default();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target,
            rx,
            stats.clone(),
            recording.clone(),
        ));
        Ok(Proxy {
            from,
            to,
            listen,
            target,
            ctl,
            stats,
            recording,
            accept_task,
        })
    }

    /// Keeps a copy of everything the sender sends from now on (for replaying it: a
    /// recorded handshake must not open the door a second time).
    pub fn record(&self) {
        *self.recording.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// What was recorded since `record`.
    pub fn recorded(&self) -> Vec<u8> {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn mode(&self) -> Mode {
        self.ctl.borrow().mode
    }

    /// Closes every live connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.ctl.send_modify(|c| {
            c.mode = Mode::Cut;
            c.epoch += 1;
        });
    }

    /// Holds every byte (connections stay open) until `restore`.
    pub fn stall(&self) {
        self.ctl.send_modify(|c| c.mode = Mode::Stalled);
    }

    pub fn restore(&self) {
        self.ctl.send_modify(|c| c.mode = Mode::Up);
    }

    /// Delays every forwarded chunk by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.ctl.send_modify(|c| c.delay = delay);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.ctl.send_modify(|c| c.shutdown = true);
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mut rx: watch::Receiver<Ctl>,
    stats: Arc<ProxyStats>,
    recording: Recording,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = rx.changed() => {
                if r.is_err() || rx.borrow().shutdown {
                    return;
                }
                continue;
            }
        };
        let Ok((inbound, _)) = accepted else {
            // EMFILE and the like: back off a little instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ctl = *rx.borrow();
        if ctl.shutdown {
            return;
        }
        if ctl.mode == Mode::Cut {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            inbound,
            target,
            rx.clone(),
            ctl.epoch,
            stats.clone(),
            recording.clone(),
        ));
    }
}

/// One proxied connection: connects to the target and pumps both directions until either side
/// closes or the link is cut.
async fn connection(
    inbound: TcpStream,
    target: SocketAddr,
    rx: watch::Receiver<Ctl>,
    epoch: u64,
    stats: Arc<ProxyStats>,
    recording: Recording,
) {
    let outbound =
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            _ => return, // target down: the sender sees the close and retries later
        };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_rd, in_wr) = inbound.into_split();
    let (out_rd, out_wr) = outbound.into_split();
    let forward = pump(
        in_rd,
        out_wr,
        rx.clone(),
        epoch,
        stats.clone(),
        Some(recording),
    );
    let backward = pump(out_rd, in_wr, rx, epoch, stats, None);
    // When one direction ends, drop both (closing the connection on both sides).
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
}

/// True while the connection may live on.
fn alive(c: &Ctl, epoch: u64) -> bool {
    !c.shutdown && c.mode != Mode::Cut && c.epoch == epoch
}

async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Ctl>,
    epoch: u64,
    stats: Arc<ProxyStats>,
    recording: Option<Recording>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Wait while stalled; leave when cut.
        loop {
            let c = *rx.borrow_and_update();
            if !alive(&c, epoch) {
                return;
            }
            if c.mode == Mode::Up {
                break;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        let delay = rx.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Bytes read under a stall or before a cut: a cut drops them, a stall holds them.
        loop {
            let c = *rx.borrow_and_update();
            if !alive(&c, epoch) {
                return;
            }
            if c.mode == Mode::Up {
                break;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        // A cut during the write ends the connection; a stall lets this chunk finish (it is
        // partly in the socket already) and holds the next one.
        let write = tokio::select! {
            w = wr.write_all(&buf[..n]) => w,
            _ = until_dead(rx.clone(), epoch) => return,
        };
        if write.is_err() {
            return;
        }
        if let Some(rec) = &recording {
            if let Some(kept) = rec.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Resolves once the connection must close.
async fn until_dead(mut rx: watch::Receiver<Ctl>, epoch: u64) {
    loop {
        if !alive(&rx.borrow_and_update(), epoch) {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
