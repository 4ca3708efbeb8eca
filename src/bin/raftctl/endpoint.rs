//! `raftctl endpoint status`: one row per node of `--cluster`, as etcdctl's, each from that
//! node's own `Status` (no leader needed), with how long the call took.

use clap::{Subcommand, ValueEnum};
use raftd::client::{Client, ClientError};
use raftd::rpc::types::StatusResponse;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Every node's role, term, leader, indexes, data size, alarms and answer time.
    Status {
        /// Output: a table (default) or JSON (one object with a row per node).
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "table")]
        write_out: WriteOut,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOut {
    Table,
    Json,
}

/// What one node said, or why it said nothing.
struct Row {
    addr: SocketAddr,
    status: Result<StatusResponse, ClientError>,
    took_ms: f64,
}

/// Returns the output, as `main` prints it (`--json` also selects JSON), and the exit code:
/// 0 when every node answered, 1 when some did not, 3 (an error) when none did.
pub async fn run(
    client: &mut Client,
    nodes: &[SocketAddr],
    cmd: EndpointCmd,
    json_flag: bool,
) -> Result<(serde_json::Value, String, u8), ClientError> {
    let EndpointCmd::Status { write_out } = cmd;
    let mut rows = Vec::new();
    for addr in nodes {
        let started = Instant::now();
        let status = client.status_of(*addr).await;
        rows.push(Row {
            addr: *addr,
            status,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        });
    }
    let answered = rows.iter().filter(|r| r.status.is_ok()).count();
    if answered == 0 {
        let why = rows
            .iter()
            .filter_map(|r| r.status.as_ref().err().map(|e| format!("{}: {e}", r.addr)))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ClientError::Unavailable(
            std::time::Duration::ZERO,
            format!("no node answered ({why})"),
        ));
    }
    let code = u8::from(answered < rows.len());
    let value = json!({ "endpoints": rows.iter().map(row_json).collect::<Vec<_>>() });
    let text = if write_out == WriteOut::Json || json_flag {
        value.to_string()
    } else {
        table(&rows)
    };
    // Printed as text either way: main prints `value` itself only with --json.
    Ok((value, text, code))
}

fn row_json(r: &Row) -> serde_json::Value {
    match &r.status {
        Ok(s) => json!({
            "endpoint": r.addr.to_string(),
            "id": s.node_id,
            "role": s.role,
            "term": s.term,
            "leader": s.leader_id,
            "commit_index": s.commit_index,
            "applied_index": s.last_applied,
            "snapshot_index": s.snapshot_index,
            "data_bytes": s.data_bytes,
            "alarms": s.alarms,
            "took_ms": (r.took_ms * 100.0).round() / 100.0,
        }),
        Err(e) => json!({
            "endpoint": r.addr.to_string(),
            "error": e.to_string(),
            "took_ms": (r.took_ms * 100.0).round() / 100.0,
        }),
    }
}

fn table(rows: &[Row]) -> String {
    let header = [
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "SNAPSHOT", "DATA",
        "ALARMS", "TOOK",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        cells.push(match &r.status {
            Ok(s) => vec![
                r.addr.to_string(),
                s.node_id.to_string(),
                s.role.clone(),
                s.term.to_string(),
                s.leader_id.map_or("-".into(), |l| l.to_string()),
                s.commit_index.to_string(),
                s.last_applied.to_string(),
                s.snapshot_index.to_string(),
                human_bytes(s.data_bytes),
                if s.alarms.is_empty() {
                    "-".into()
                } else {
                    s.alarms.join(",")
                },
                format!("{:.1}ms", r.took_ms),
            ],
            Err(e) => {
                let mut v = vec![r.addr.to_string(), "-".into(), format!("unreachable: {e}")];
                v.resize(header.len() - 1, String::new());
                v.push(format!("{:.1}ms", r.took_ms));
                v
            }
        });
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| cells.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    cells
        .iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
