//! A small HTTP/1.1 client for the tests of the HTTP port, as curl would use it: one request
//! per connection (`Connection: close`), bodies read whole (by `Content-Length`, chunks, or to
//! the end), or line by line as they stream (a watch). Plain TCP or TLS (rustls).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// An answer: status, headers (names lowercased), body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpTarget {
    pub fn plain(addr: SocketAddr) -> HttpTarget {
        HttpTarget { addr, tls: None }
    }

    fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let conn = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(std::io::Error::other)?;
                Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        }
    }

    /// Sends one request and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<HttpResponse> {
        let mut reader = self.send(method, path, body)?;
        let (status, headers) = read_head(&mut reader)?;
        let body = read_body(&mut reader, &headers)?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends one request whose answer streams: returns its status and headers, and the body
    /// line by line.
    pub fn stream(&self, path: &str) -> std::io::Result<(u16, LineStream)> {
        let mut reader = self.send("GET", path, None)?;
        let (status, headers) = read_head(&mut reader)?;
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        Ok((
            status,
            LineStream {
                reader,
                chunked,
                left_in_chunk: 0,
                pending: Vec::new(),
            },
        ))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<BufReader<Box<dyn Io>>> {
        let mut io = self.connect()?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        io.write_all(head.as_bytes())?;
        io.write_all(body)?;
        io.flush()?;
        Ok(BufReader::new(io))
    }
}

/// One request to a plain HTTP port.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    HttpTarget::plain(addr).request(method, path, body)
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn read_body(r: &mut impl BufRead, headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let size = chunk_size(r)?;
            if size == 0 {
                return Ok(body);
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body)?;
    Ok(body)
}

fn chunk_size(r: &mut impl BufRead) -> std::io::Result<usize> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))
}

/// A streaming body, a line at a time.
pub struct LineStream {
    reader: BufReader<Box<dyn Io>>,
    chunked: bool,
    left_in_chunk: usize,
    pending: Vec<u8>,
}

impl LineStream {
    /// The next line (without its newline); None at the end of the body.
    pub fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads more of the body into `pending`; false at its end.
    fn fill(&mut self) -> std::io::Result<bool> {
        if !self.chunked {
            let mut buf = [0; 4096];
            let n = self.reader.read(&mut buf)?;
            self.pending.extend_from_slice(&buf[..n]);
            return Ok(n > 0);
        }
        if self.left_in_chunk == 0 {
            let size = chunk_size(&mut self.reader)?;
            if size == 0 {
                return Ok(false);
            }
            self.left_in_chunk = size;
        }
        let mut buf = vec![0; self.left_in_chunk.min(4096)];
        let n = self.reader.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        self.pending.extend_from_slice(&buf[..n]);
        self.left_in_chunk -= n;
        if self.left_in_chunk == 0 {
            let mut crlf = [0; 2];
            self.reader.read_exact(&mut crlf)?;
        }
        Ok(true)
    }
}
