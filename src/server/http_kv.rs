//! The store over HTTP: `/v1/kv/KEY`, `/v1/txn`, `/v1/watch/KEY` (docs/HTTP.md), each a
//! request of the client protocol made through the node's own client port, and its answer or
//! error as an HTTP status and a body.

use super::http::{text, HttpContext};
use crate::client::store::RangeRequest;
use crate::client::{Client, ClientError, WatchEvent, Watcher};
use crate::kv::txn::{Compare, TxnOp};
use crate::rpc::types::Consistency;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Every response body: a whole body or a stream (a watch).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Lines of watch output buffered for a reader before the watch waits for it.
const WATCH_LINES: usize = 64;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    text(status, "application/json", format!("{v}\n"))
}

pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The HTTP answer to a client error (the mapping in docs/HTTP.md).
fn client_error(e: &ClientError) -> Response<Body> {
    let (status, code) = match e {
        ClientError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        ClientError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
        ClientError::Unsafe(_) => (StatusCode::CONFLICT, "Unsafe"),
        ClientError::SessionExpired(_) => (StatusCode::CONFLICT, "SessionExpired"),
        ClientError::Compacted { .. } => (StatusCode::GONE, "Compacted"),
        ClientError::LeaseNotFound(_) => (StatusCode::NOT_FOUND, "LeaseNotFound"),
        ClientError::WatchCancelled(_) => (StatusCode::SERVICE_UNAVAILABLE, "WatchCancelled"),
        ClientError::Unavailable(..) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        ClientError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "Protocol"),
        // The HTTP port takes no backups; listed for completeness.
        ClientError::BackupFile(_) => (StatusCode::INTERNAL_SERVER_ERROR, "BackupFile"),
    };
    let mut body = json!({ "error": e.to_string(), "code": code });
    if let ClientError::Compacted { compact_revision } = e {
        body["compact_revision"] = json!(compact_revision);
    }
    json_response(status, &body)
}

/// `?a=1&b=x` as a map (percent-decoded).
fn query(req: &Request<Incoming>) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

/// Decodes `%XX` escapes (and `+` is kept as it is: keys may hold it).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, String> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(format!("?{name}={other}: give true or false")),
    }
}

fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, String> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("?{name}={v}: give a non-negative integer"))
        })
        .transpose()
}

fn consistency(q: &HashMap<String, String>) -> Result<Consistency, String> {
    match q.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(format!(
            "?consistency={other}: give linearizable (the default) or stale"
        )),
    }
}

/// The key named by the path after `prefix` (percent-decoded).
fn key_of(req: &Request<Incoming>, prefix: &str) -> Result<String, String> {
    percent_decode(req.uri().path().strip_prefix(prefix).unwrap_or(""))
}

/// The request body, at most the node's frame limit.
async fn body(ctx: &HttpContext, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), ctx.max_body).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is over the node's limit of {} bytes",
                    ctx.max_body
                ),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}"),
        )),
    }
}

/// Runs `f` with a pooled client; a client that failed is not reused (its connection may be
/// in any state).
async fn with_client<T, F>(ctx: &HttpContext, f: F) -> Result<T, ClientError>
where
    F: AsyncFnOnce(&mut Client) -> Result<T, ClientError>,
{
    let mut client = ctx.client();
    let r = f(&mut client).await;
    if r.is_ok() {
        ctx.release(client);
    }
    r
}

/// `PUT`, `GET` and `DELETE` on `/v1/kv/KEY`.
pub(super) async fn kv(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let (key, q) = match (key_of(&req, "/v1/kv/"), query(&req)) {
        (Ok(k), Ok(q)) => (k, q),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let method = req.method().clone();
    let result = match method {
        Method::PUT => put(ctx, key, &q, req).await,
        Method::GET => get(ctx, key, &q).await,
        Method::DELETE => delete(ctx, key, &q).await,
        other => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{other} is not served on /v1/kv/KEY: use PUT, GET or DELETE"),
        )),
    };
    result.unwrap_or_else(|r| r)
}

type Answer = Result<Response<Body>, Response<Body>>;

fn bad(e: String) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, &e)
}

async fn put(
    ctx: &HttpContext,
    key: String,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Answer {
    if key.is_empty() {
        return Err(bad("PUT needs a key: /v1/kv/KEY".into()));
    }
    let lease = number(q, "lease").map_err(bad)?.unwrap_or(0);
    let value = body(ctx, req).await?;
    let value = String::from_utf8(value.to_vec())
        .map_err(|_| bad("the value (the body) must be UTF-8 text".into()))?;
    let revision = with_client(ctx, async |c| c.put_with_lease(&key, &value, lease).await)
        .await
        .map_err(|e| client_error(&e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "revision": revision }),
    ))
}

async fn get(ctx: &HttpContext, key: String, q: &HashMap<String, String>) -> Answer {
    let consistency = consistency(q).map_err(bad)?;
    let prefix = flag(q, "prefix").map_err(bad)?;
    let revision = number(q, "revision").map_err(bad)?;
    if prefix || revision.is_some() {
        let r = RangeRequest {
            key: key.clone(),
            prefix,
            limit: number(q, "limit").map_err(bad)?.unwrap_or(0),
            keys_only: flag(q, "keys_only").map_err(bad)?,
            revision,
            stale: consistency == Consistency::Stale,
            ..RangeRequest::default()
        };
        let a = with_client(ctx, async |c| c.range(&r).await)
            .await
            .map_err(|e| client_error(&e))?;
        if !prefix {
            // One key at a past revision: its value, as a plain GET gives it.
            return Ok(match a.kvs.first() {
                Some(kv) => raw_value(kv, a.revision),
                None => not_found(&key, a.revision),
            });
        }
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "kvs": a.kvs, "count": a.count, "more": a.more, "revision": a.revision }),
        ));
    }
    if key.is_empty() {
        return Err(bad(
            "GET needs a key (/v1/kv/KEY), or ?prefix=true for every key".into(),
        ));
    }
    let (kv, revision) = with_client(ctx, async |c| c.get_kv(&key, consistency).await)
        .await
        .map_err(|e| client_error(&e))?;
    Ok(match kv {
        Some(kv) => raw_value(&kv, revision),
        None => not_found(&key, revision),
    })
}

fn raw_value(kv: &crate::kv::mvcc::KeyValue, revision: u64) -> Response<Body> {
    let mut r = text(
        StatusCode::OK,
        "application/octet-stream",
        kv.value.clone().unwrap_or_default(),
    );
    let h = r.headers_mut();
    for (name, v) in [
        ("x-raftd-revision", revision),
        ("x-raftd-mod-revision", kv.mod_revision),
        ("x-raftd-create-revision", kv.create_revision),
        ("x-raftd-version", kv.version),
        ("x-raftd-lease", kv.lease),
    ] {
        h.insert(name, hyper::header::HeaderValue::from(v));
    }
    r
}

fn not_found(key: &str, revision: u64) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "error": format!("key {key:?} not found"), "revision": revision }),
    )
}

async fn delete(ctx: &HttpContext, key: String, q: &HashMap<String, String>) -> Answer {
    let prefix = flag(q, "prefix").map_err(bad)?;
    if key.is_empty() && !prefix {
        return Err(bad(
            "DELETE needs a key (/v1/kv/KEY), or ?prefix=true".into()
        ));
    }
    let (deleted, revision) = with_client(ctx, async |c| c.delete_range(&key, None, prefix).await)
        .await
        .map_err(|e| client_error(&e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "deleted": deleted, "revision": revision }),
    ))
}

/// The body of `POST /v1/txn`: the `Txn` request's fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<Compare>,
    #[serde(default)]
    success: Vec<TxnOp>,
    #[serde(default)]
    failure: Vec<TxnOp>,
}

pub(super) async fn txn(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let answer: Answer = async {
        let raw = body(ctx, req).await?;
        let t: TxnBody = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("the body is not a transaction: {e}")))?;
        let a = with_client(ctx, async |c| {
            c.txn(t.compare.clone(), t.success.clone(), t.failure.clone())
                .await
        })
        .await
        .map_err(|e| client_error(&e))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "succeeded": a.succeeded, "responses": a.responses, "revision": a.revision }),
        ))
    }
    .await;
    answer.unwrap_or_else(|r| r)
}

/// `GET /v1/watch/KEY`: newline-delimited JSON, one event a line (a `progress` line about
/// once a second when idle), for as long as the reader reads. Served by this node.
pub(super) async fn watch(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let (key, q) = match (key_of(&req, "/v1/watch/"), query(&req)) {
        (Ok(k), Ok(q)) => (k, q),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let (prefix, start) = match (flag(&q, "prefix"), number(&q, "start_revision")) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut watcher = match Watcher::new(
        vec![ctx.local],
        ctx.client_options.clone(),
        &key,
        None,
        prefix,
        start,
    ) {
        Ok(w) => w,
        Err(e) => return client_error(&e),
    };
    // The first line before the headers: a watch the node refuses (a compacted start
    // revision) gets its status code rather than a 200 and an error line.
    let first = match watcher.next().await {
        Ok(ev) => ev,
        Err(e) => return client_error(&e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WATCH_LINES);
    tokio::spawn(async move {
        let mut next: Result<WatchEvent, ClientError> = Ok(first);
        loop {
            let line = match next {
                Ok(ev) => line_of(&ev),
                Err(e) => {
                    let _ = tx
                        .send(Bytes::from(format!(
                            "{}\n",
                            json!({ "error": e.to_string() })
                        )))
                        .await;
                    return;
                }
            };
            // The reader went away: the watch ends with it.
            if tx.send(line).await.is_err() {
                return;
            }
            next = watcher.next().await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(Frame::data(line)), rx))
    });
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

fn line_of(ev: &WatchEvent) -> Bytes {
    let v = match ev {
        WatchEvent::Change(e) => serde_json::to_value(e).unwrap_or(Value::Null),
        WatchEvent::Progress(revision) => json!({ "progress": true, "revision": revision }),
    };
    Bytes::from(format!("{v}\n"))
}
