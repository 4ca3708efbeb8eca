//! `raftd-bench image`: what a snapshot of the store costs to encode and to load, in the
//! binary image raftd writes and in the JSON earlier versions wrote. Builds a store of KEYS
//! keys with VALUE_BYTES-byte values (applied as puts, as a node applies them), then times
//! each direction once. Prints sizes and seconds as one JSON line (no cluster needed).

use raftd::kv::{Command, KvStore, Op};
use raftd::rpc::types::Entry;
use std::io::{self, Write};
use std::time::Instant;

/// Counts what is written and drops it: the encoder's own cost, without a disk.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn run(keys: u64, value_bytes: usize) -> Result<serde_json::Value, String> {
    let mut store = KvStore::default();
    let value = "v".repeat(value_bytes);
    let t = Instant::now();
    for i in 0..keys {
        let cmd = Command {
            client_id: None,
            seq: 0,
            op: Op::Put {
                key: format!("bench/{i:09}"),
                value: value.clone(),
                lease: 0,
            },
            at_ms: 0,
        };
        let data = cmd.encode().map_err(|e| e.to_string())?;
        store.apply(&Entry::command(1, i + 1, data));
    }
    let fill_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut sink = Sink(0);
    store.write_snapshot(&mut sink).map_err(|e| e.to_string())?;
    let binary_encode_s = t.elapsed().as_secs_f64();
    let binary = store
        .to_snapshot_bytes(sink.0 as usize)
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let back = KvStore::from_snapshot_bytes(&binary).map_err(|e| e.to_string())?;
    let binary_decode_s = t.elapsed().as_secs_f64();
    if back.len() != store.len() {
        return Err("the binary image lost keys".into());
    }
    drop(back);
    drop(binary);

    let t = Instant::now();
    let json = store.to_json_image().map_err(|e| e.to_string())?;
    let json_encode_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = KvStore::from_snapshot_bytes(&json).map_err(|e| e.to_string())?;
    let json_decode_s = t.elapsed().as_secs_f64();
    if back.len() != store.len() {
        return Err("the JSON image lost keys".into());
    }
    Ok(serde_json::json!({
        "keys": keys,
        "value_bytes": value_bytes,
        "fill_s": fill_s,
        "binary_bytes": sink.0,
        "binary_encode_s": binary_encode_s,
        "binary_decode_s": binary_decode_s,
        "json_bytes": json.len(),
        "json_encode_s": json_encode_s,
        "json_decode_s": json_decode_s,
    }))
}
