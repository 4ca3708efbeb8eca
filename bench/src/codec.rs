//! `raftd-bench codec`: what encoding log entries costs, in the form raftd sends and logs them
//! (the command's text as a JSON string) next to the base64 form it used before. One
//! AppendEntries of 64 puts of 256-byte values, encoded and decoded in a loop; prints bytes and
//! nanoseconds per entry as one JSON line.

use raftd::kv::{Command, Op};
use raftd::rpc::types::{Entry, Envelope, RaftMessage};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// An entry as it was sent before: data always base64.
#[derive(Serialize, Deserialize)]
struct Base64Entry {
    term: u64,
    index: u64,
    kind: raftd_core_kind::Kind,
    #[serde(with = "raftd::rpc::types::b64")]
    data: Vec<u8>,
}

mod raftd_core_kind {
    #[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
    pub enum Kind {
        Command,
    }
}

#[derive(Serialize, Deserialize)]
struct Base64Append {
    term: u64,
    leader_id: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    entries: Vec<Base64Entry>,
    leader_commit: u64,
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

pub fn run(entries: usize, value_bytes: usize, secs: f64) -> serde_json::Value {
    let cmds = commands(entries, value_bytes);
    let env = Envelope {
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
                .map(|(i, c)| Entry::command(7, 100_001 + i as u64, c.clone()))
                .collect(),
            leader_commit: 100_000,
            read_round: 0,
        },
    };
    let old = Base64Append {
        term: 7,
        leader_id: 1,
        prev_log_index: 100_000,
        prev_log_term: 7,
        entries: cmds
            .iter()
            .enumerate()
            .map(|(i, c)| Base64Entry {
                term: 7,
                index: 100_001 + i as u64,
                kind: raftd_core_kind::Kind::Command,
                data: c.clone(),
            })
            .collect(),
        leader_commit: 100_000,
    };
    let text = serde_json::to_vec(&env).expect("encodes");
    let base64 = serde_json::to_vec(&old).expect("encodes");
    let n = entries as f64;
    let per = |ns: f64| (ns / n * 10.0).round() / 10.0;
    let text_encode = time(secs, || {
        std::hint::black_box(serde_json::to_vec(&env).expect("encodes"));
    });
    let base64_encode = time(secs, || {
        std::hint::black_box(serde_json::to_vec(&old).expect("encodes"));
    });
    let text_decode = time(secs, || {
        std::hint::black_box(serde_json::from_slice::<Envelope>(&text).expect("decodes"));
    });
    let base64_decode = time(secs, || {
        std::hint::black_box(serde_json::from_slice::<Base64Append>(&base64).expect("decodes"));
    });
    serde_json::json!({
        "entries": entries,
        "value_bytes": value_bytes,
        "command_bytes": cmds.iter().map(Vec::len).sum::<usize>() / entries,
        "text_bytes_per_entry": text.len() / entries,
        "base64_bytes_per_entry": base64.len() / entries,
        "text_encode_ns_per_entry": per(text_encode),
        "base64_encode_ns_per_entry": per(base64_encode),
        "text_decode_ns_per_entry": per(text_decode),
        "base64_decode_ns_per_entry": per(base64_decode),
    })
}
