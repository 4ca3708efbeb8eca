//! One framed connection to a node, with request/response matching by id.

use crate::rpc::types::{ClientRequest, ClientResponse};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub struct Connection {
    addr: SocketAddr,
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl Connection {
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        max_frame_bytes: usize,
    ) -> std::io::Result<Connection> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
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
                let rid = match &resp {
                    ClientResponse::Ok(ok) => Some(ok.id),
                    ClientResponse::Status(s) => Some(s.id),
                    ClientResponse::Error(e) => e.id,
                };
                if rid == Some(id) {
                    return Ok(resp);
                }
                if rid.is_none() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("node refused the frame: {resp:?}"),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
    }
}
