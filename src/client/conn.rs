//! One framed connection to a node, with request/response matching by id.

use crate::rpc::types::{ClientRequest, ClientResponse};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raftd_transport::Stream;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub struct Connection {
    addr: SocketAddr,
    framed: Framed<Stream, LengthDelimitedCodec>,
}

impl Connection {
    /// A plaintext connection.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        max_frame_bytes: usize,
    ) -> std::io::Result<Connection> {
        Connection::open(addr, timeout, max_frame_bytes, None).await
    }

    /// A connection with TLS when `tls` is given: the node's certificate must be signed by the
    /// configured CA and name the address dialled (an IP SAN), as with any TLS client.
    pub async fn open(
        addr: SocketAddr,
        timeout: Duration,
        max_frame_bytes: usize,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Connection> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok::<_, std::io::Error>(Stream::Plain(tcp)),
                Some(cfg) => {
                    let name = ServerName::IpAddress(addr.ip().into());
                    let s = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| std::io::Error::new(e.kind(), format!("TLS: {e}")))?;
                    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
                }
            }
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| timed_out())??;
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(max_frame_bytes)
            .new_codec();
        Ok(Connection {
            addr,
            framed: Framed::new(stream, codec),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn send(&mut self, req: &ClientRequest) -> std::io::Result<()> {
        let body = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        self.framed.send(Bytes::from(body)).await
    }

    /// Reads the next response (any id).
    pub async fn recv(&mut self) -> std::io::Result<ClientResponse> {
        match self.framed.next().await {
            Some(Ok(frame)) => serde_json::from_slice(&frame).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad response: {e}"),
                )
            }),
            Some(Err(e)) => Err(e),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
        }
    }

    /// Sends `req` and waits up to `timeout` for the response with its id (skipping answers to
    /// earlier, abandoned requests).
    pub async fn request(
        &mut self,
        req: &ClientRequest,
        timeout: Duration,
    ) -> std::io::Result<ClientResponse> {
        let id = req.id();
        let exchange = async {
            self.send(req).await?;
            loop {
                let resp = self.recv().await?;
                let rid = resp.id();
                // An error without an id answers the frame itself (too large, not JSON, or
                // plaintext to a TLS node); the node closes the connection after it.
                if rid == Some(id) || rid.is_none() {
                    return Ok(resp);
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
    }
}
