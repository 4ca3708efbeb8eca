//! `raftd-bench codec`: what encoding log entries costs. One AppendEntries of 64 puts of
//! 256-byte values, encoded and decoded in a loop, in the form raftd sends and logs them (the
//! command's bytes as base64 inside the real `Envelope`), and, in a plain message of the same
//! fields, as base64, as a JSON string of the command's text, and as the command's JSON
//! embedded as it is. Prints bytes and nanoseconds per entry as one JSON line.

use raftd::kv::{Command, Op};
use raftd::rpc::types::{Entry, Envelope, RaftMessage};
use raftd::storage::record::{self, RecordRef, WalRecord};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::Instant;

#[derive(Serialize, Deserialize)]
struct Append<E> {
    term: u64,
    leader_id: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    entries: Vec<E>,
    leader_commit: u64,
}

#[derive(Serialize, Deserialize)]
struct Base64Entry {
    term: u64,
    index: u64,
    #[serde(with = "raftd::rpc::types::b64")]
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct TextEntry {
    term: u64,
    index: u64,
    data: String,
}

#[derive(Serialize, Deserialize)]
struct RawEntry {
    term: u64,
    index: u64,
    data: Box<RawValue>,
}

fn commands(n: usize, value_bytes: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            Command {
                client_id: Some(format!("bench-{}", i % 64)),
                seq: 1000 + i as u64,
                at_ms: 1_765_000_000_000,
                op: Op::Put {
                    key: format!("bench-key-{:06}", i * 7919 % 10_000),
                    value: "v".repeat(value_bytes),
                    lease: 0,
                },
            }
            .encode()
            .expect("a put encodes")
        })
        .collect()
}

/// Runs `f` until about `secs` have passed; nanoseconds per call.
fn time(secs: f64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// (bytes, encode ns, decode ns) per entry of `msg`.
fn measure<M: Serialize + DeserializeOwned>(msg: &M, entries: usize, secs: f64) -> [f64; 3] {
    let bytes = serde_json::to_vec(msg).expect("encodes");
    let encode = time(secs, || {
        std::hint::black_box(serde_json::to_vec(msg).expect("encodes"));
    });
    let decode = time(secs, || {
        std::hint::black_box(serde_json::from_slice::<M>(&bytes).expect("decodes"));
    });
    let n = entries as f64;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    [
        (bytes.len() / entries) as f64,
        round(encode / n),
        round(decode / n),
    ]
}

/// (bytes, encode ns, decode ns) per entry of one log record of `entries`, as the log writer
/// frames it (binary) and as replay reads it back.
fn wal_record(entries: &[Entry], secs: f64) -> [f64; 3] {
    let mut buf = Vec::new();
    record::encode(&RecordRef::Entries { entries }, &mut buf).expect("encodes");
    let encode = time(secs, || {
        let mut out = Vec::new();
        record::encode(&RecordRef::Entries { entries }, &mut out).expect("encodes");
        std::hint::black_box(out);
    });
    let decode = time(secs, || {
        let mut r = record::Reader::new(std::io::Cursor::new(&buf), buf.len() as u64);
        std::hint::black_box(r.next_step().expect("reads"));
    });
    let n = entries.len() as f64;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    [
        (buf.len() / entries.len()) as f64,
        round(encode / n),
        round(decode / n),
    ]
}

/// The same, with the record's payload in JSON (entries in base64), as earlier versions wrote.
fn wal_json(entries: &[Entry], secs: f64) -> [f64; 3] {
    let rec = RecordRef::Entries { entries };
    let bytes = serde_json::to_vec(&rec).expect("encodes");
    let encode = time(secs, || {
        std::hint::black_box(serde_json::to_vec(&rec).expect("encodes"));
    });
    let decode = time(secs, || {
        std::hint::black_box(serde_json::from_slice::<WalRecord>(&bytes).expect("decodes"));
    });
    let n = entries.len() as f64;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    [
        (bytes.len() / entries.len()) as f64,
        round(encode / n),
        round(decode / n),
    ]
}

fn append<E>(entries: Vec<E>) -> Append<E> {
    Append {
        term: 7,
        leader_id: 1,
        prev_log_index: 100_000,
        prev_log_term: 7,
        entries,
        leader_commit: 100_000,
    }
}

pub fn run(entries: usize, value_bytes: usize, secs: f64) -> serde_json::Value {
    let cmds = commands(entries, value_bytes);
    let index = |i: usize| 100_001 + i as u64;
    let real = Envelope {
        incarnation: 1,
        from: 1,
        to: 2,
        msg: RaftMessage::AppendEntries {
            term: 7,
            leader_id: 1,
            prev_log_index: 100_000,
            prev_log_term: 7,
            entries: cmds
                .iter()
                .enumerate()
                .map(|(i, c)| Entry::command(7, index(i), c.clone()))
                .collect(),
            leader_commit: 100_000,
            read_round: 0,
        },
    };
    let base64 = append(
        cmds.iter()
            .enumerate()
            .map(|(i, c)| Base64Entry {
                term: 7,
                index: index(i),
                data: c.clone(),
            })
            .collect(),
    );
    let text = append(
        cmds.iter()
            .enumerate()
            .map(|(i, c)| TextEntry {
                term: 7,
                index: index(i),
                data: String::from_utf8(c.clone()).expect("commands are text"),
            })
            .collect(),
    );
    let raw = append(
        cmds.iter()
            .enumerate()
            .map(|(i, c)| RawEntry {
                term: 7,
                index: index(i),
                data: RawValue::from_string(String::from_utf8(c.clone()).expect("text"))
                    .expect("commands are JSON"),
            })
            .collect(),
    );
    // Embedding a command as it is would first have to check that it is JSON.
    let validate = time(secs, || {
        for c in &cmds {
            std::hint::black_box(serde_json::from_slice::<&RawValue>(c).expect("JSON"));
        }
    }) / entries as f64;
    let form = |[bytes, encode, decode]: [f64; 3]| serde_json::json!({"bytes": bytes, "encode_ns": encode, "decode_ns": decode});
    let log_entries: Vec<Entry> = match &real.msg {
        RaftMessage::AppendEntries { entries, .. } => entries.clone(),
        _ => Vec::new(),
    };
    serde_json::json!({
        "entries": entries,
        "value_bytes": value_bytes,
        "command_bytes": cmds.iter().map(Vec::len).sum::<usize>() / entries,
        "per_entry": {
            "envelope_base64": form(measure(&real, entries, secs)),
            "plain_base64": form(measure(&base64, entries, secs)),
            "plain_text": form(measure(&text, entries, secs)),
            "plain_raw": form(measure(&raw, entries, secs)),
            "raw_validate_ns": (validate * 10.0).round() / 10.0,
            "wal_json": form(wal_json(&log_entries, secs)),
            "wal_binary": form(wal_record(&log_entries, secs)),
        },
    })
}
