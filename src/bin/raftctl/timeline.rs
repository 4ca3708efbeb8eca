//! `raftctl timeline LOG... -o FILE.html`: the nodes' logs (text or `--log-format json`) as
//! one self-contained HTML page with an SVG picture: a lane per node over time, its terms as
//! coloured bands, when it led, elections started and won, stops and starts, peers seen down,
//! snapshots taken and installed, and under the lanes the commit index over time, a line per
//! node (from the progress line each node logs every few seconds while it commits). Every mark
//! has a tooltip with the log line it comes from.
//!
//! A small script in the page checks, once the browser has laid it out, that each lane, term
//! band and commit line has a size, and records what it found in `<body data-rendered>`: the
//! end-to-end test reads that back from headless Chromium.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One event read from a log line.
#[derive(Debug, Clone)]
struct Event {
    /// Seconds since the epoch (fractional with JSON logs; whole seconds with text logs).
    t: f64,
    node: u64,
    kind: Kind,
    term: Option<u64>,
    line: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Start,
    Stop,
    Campaign,
    Won,
    SteppedDown,
    PeerDown(u64),
    PeerUp(u64),
    SnapshotTaken,
    SnapshotInstalled,
    /// The node's commit index (its periodic progress line).
    Commit(u64),
    /// Any other line that names a term.
    Term,
}

/// Reads the logs and writes the page; returns how many events it drew.
pub fn run(logs: &[std::path::PathBuf], out: &std::path::Path) -> Result<usize, String> {
    let mut events = Vec::new();
    for path in logs {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        events.extend(text.lines().filter_map(parse_line));
    }
    if events.is_empty() {
        return Err("no raftd events found in the logs given (are they raftd logs?)".into());
    }
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    let html = render(&events);
    std::fs::write(out, html).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(events.len())
}

/// The time, and the message, of a text or JSON log line.
fn split_line(line: &str) -> Option<(f64, String)> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let ts = parse_ts(v["ts"].as_str()?)?;
        return Some((ts, v["msg"].as_str()?.to_string()));
    }
    // env_logger's text format: `[2026-12-07T16:52:15Z INFO  target] message`.
    let rest = line.strip_prefix('[')?;
    let (head, msg) = rest.split_once("] ")?;
    let ts = parse_ts(head.split_whitespace().next()?)?;
    Some((ts, msg.to_string()))
}

/// `2026-12-07T16:52:15.123456Z` (fraction optional) as seconds since the epoch.
fn parse_ts(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days since the epoch (civil calendar).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

fn number_after(msg: &str, word: &str) -> Option<u64> {
    let i = msg.find(word)? + word.len();
    let digits: String = msg[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn parse_line(line: &str) -> Option<Event> {
    let (t, msg) = split_line(line)?;
    let node = number_after(&msg, "node ")?;
    if !msg.starts_with("node ") {
        return None;
    }
    let term = number_after(&msg, "in term ").or_else(|| number_after(&msg, "for term "));
    let kind = if msg.contains("starting as") {
        Kind::Start
    } else if msg.contains("shutting down") || msg.contains(": stopped") {
        Kind::Stop
    } else if msg.contains("now leader") {
        Kind::Won
    } else if msg.contains(": candidate in term") {
        Kind::Campaign
    } else if msg.contains("leader -> ") {
        Kind::SteppedDown
    } else if let Some(p) = number_after(&msg, ": peer ").filter(|_| msg.contains(" down ")) {
        Kind::PeerDown(p)
    } else if let Some(p) = number_after(&msg, ": peer ").filter(|_| msg.contains(" up ")) {
        Kind::PeerUp(p)
    } else if msg.contains("took a snapshot at index") {
        Kind::SnapshotTaken
    } else if msg.contains("installed a snapshot at index") {
        Kind::SnapshotInstalled
    } else if let Some(c) = number_after(&msg, ": commit index ") {
        Kind::Commit(c)
    } else if term.is_some() {
        Kind::Term
    } else {
        return None;
    };
    Some(Event {
        t,
        node,
        kind,
        term,
        line: msg,
    })
}

fn colour(term: u64) -> String {
    format!("hsl({}, 65%, 78%)", (term * 47) % 360)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(events: &[Event]) -> String {
    let t0 = events.first().map_or(0.0, |e| e.t);
    let t1 = events.last().map_or(1.0, |e| e.t).max(t0 + 1.0);
    let nodes: Vec<u64> = events
        .iter()
        .map(|e| e.node)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (left, width, lane_h) = (90.0, 1100.0, 70.0);
    let x = |t: f64| left + (t - t0) / (t1 - t0) * width;
    let lanes_bottom = 30.0 + lane_h * nodes.len() as f64;
    let chart_h = 160.0;
    let commits: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.kind, Kind::Commit(_)))
        .collect();
    let height = lanes_bottom
        + if commits.is_empty() {
            30.0
        } else {
            chart_h + 50.0
        };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 20.0
    );
    // A time axis, with a tick about every tenth of the span.
    let step = nice_step((t1 - t0) / 10.0);
    let mut t = 0.0;
    while t <= t1 - t0 {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{0}" y1="20" y2="{1}" stroke="#ddd"/><text x="{0}" y="14" text-anchor="middle">{2}s</text>"##,
            x(t0 + t),
            height - 10.0,
            fmt_secs(t)
        );
        t += step;
    }
    let mut terms_drawn = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let y = 30.0 + lane_h * i as f64;
        let mine: Vec<&Event> = events.iter().filter(|e| e.node == *node).collect();
        let _ = write!(
            svg,
            r##"<g class="lane" data-node="{node}"><text x="8" y="{}" font-weight="bold">node {node}</text><rect x="{left}" y="{y}" width="{width}" height="{}" fill="#f7f7f7" stroke="#ccc"/>"##,
            y + lane_h / 2.0,
            lane_h - 10.0
        );
        // Term bands: from each change of the term this node names to the next.
        let mut bands: Vec<(f64, u64)> = Vec::new();
        for e in &mine {
            if let Some(term) = e.term {
                if bands.last().is_none_or(|(_, t)| term > *t) {
                    bands.push((e.t, term));
                }
            }
        }
        for (k, (start, term)) in bands.iter().enumerate() {
            let end = bands.get(k + 1).map_or(t1, |b| b.0);
            *terms_drawn.entry(*term).or_insert(0) += 1;
            let _ = write!(
                svg,
                r#"<rect class="term" data-term="{term}" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>node {node}: term {term}</title></rect>"#,
                x(*start),
                y + 2.0,
                (x(end) - x(*start)).max(1.0),
                lane_h - 14.0,
                colour(*term)
            );
        }
        // A start not preceded by a stop: the node died without a word (SIGKILL, a crash, a
        // power loss). Shade the silence from its last line to the restart.
        for pair in mine.windows(2) {
            let (before, start) = (pair[0], pair[1]);
            if start.kind == Kind::Start && before.kind != Kind::Stop {
                let _ = write!(
                    svg,
                    r##"<rect class="gap" x="{}" y="{}" width="{}" height="{}" fill="#777" fill-opacity="0.45"><title>node {node}: silent from its last log line to its restart (killed or crashed)</title></rect>"##,
                    x(before.t),
                    y + 2.0,
                    (x(start.t) - x(before.t)).max(1.0),
                    lane_h - 14.0
                );
            }
        }
        // Leadership: from winning to stepping down, stopping, or the end.
        let mut led_since: Option<(f64, Option<u64>)> = None;
        let mut leads: Vec<(f64, f64, Option<u64>)> = Vec::new();
        for e in &mine {
            match e.kind {
                Kind::Won => led_since = Some((e.t, e.term)),
                Kind::SteppedDown | Kind::Stop | Kind::Start => {
                    if let Some((s, term)) = led_since.take() {
                        leads.push((s, e.t, term));
                    }
                }
                _ => {}
            }
        }
        if let Some((s, term)) = led_since {
            leads.push((s, t1, term));
        }
        for (s, e, term) in leads {
            let _ = write!(
                svg,
                r##"<rect class="leader" x="{}" y="{}" width="{}" height="10" fill="#222"><title>node {node} leads{}</title></rect>"##,
                x(s),
                y + lane_h - 22.0,
                (x(e) - x(s)).max(2.0),
                term.map_or(String::new(), |t| format!(" in term {t}"))
            );
        }
        for e in &mine {
            let (symbol, fill, class) = match e.kind {
                Kind::Start => ("▶", "#2a7", "start"),
                Kind::Stop => ("■", "#a22", "stop"),
                Kind::Campaign => ("?", "#c80", "campaign"),
                Kind::Won => ("★", "#000", "won"),
                Kind::SteppedDown => ("▽", "#555", "stepped-down"),
                Kind::PeerDown(_) => ("✕", "#d33", "peer-down"),
                Kind::PeerUp(_) => ("✓", "#393", "peer-up"),
                Kind::SnapshotTaken => ("◆", "#36c", "snapshot-taken"),
                Kind::SnapshotInstalled => ("◇", "#36c", "snapshot-installed"),
                Kind::Term | Kind::Commit(_) => continue,
            };
            let _ = write!(
                svg,
                r#"<text class="event {class}" x="{}" y="{}" text-anchor="middle" fill="{fill}">{symbol}<title>{}</title></text>"#,
                x(e.t),
                y + 18.0,
                esc(&e.line)
            );
        }
        svg.push_str("</g>");
    }
    if !commits.is_empty() {
        let area = ChartArea {
            top: lanes_bottom + 20.0,
            h: chart_h,
            left,
            right: left + width,
        };
        draw_commits(&mut svg, &commits, &nodes, area, &x);
    }
    svg.push_str("</svg>");
    let legend = "▶ start · ■ stop · ? campaigns · ★ wins · ▽ steps down · ✕ peer down · ✓ peer up · ◆ snapshot taken · ◇ snapshot installed · black bar: leading · band colour: term · grey: silent until a restart (killed) · bottom: commit index, a line per node";
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>raftd timeline</title>
<style>body{{font-family:sans-serif;margin:16px}} .event{{cursor:default}}</style></head>
<body><h1>raftd timeline</h1>
<p>{} nodes, {} terms, {} events over {}s, from {}. Hover a mark for its log line.</p>
<p>{legend}</p>
{svg}
<script>{CHECK_SCRIPT}</script>
</body></html>
"#,
        nodes.len(),
        terms_drawn.len(),
        events.len(),
        fmt_secs(t1 - t0),
        fmt_epoch(t0)
    )
}

/// Runs in the browser once the page is laid out: counts what has a size, for a test (or a
/// curious reader) to read from `document.body.dataset.rendered`.
const CHECK_SCRIPT: &str = r#"
(function () {
  // A line may be flat (no height); everything else must have both.
  function sized(sel) {
    return Array.prototype.filter.call(document.querySelectorAll(sel), function (el) {
      var b = el.getBBox();
      return b.width > 0 && (b.height > 0 || el.tagName === 'polyline');
    });
  }
  var terms = {};
  sized('rect.term').forEach(function (el) { terms[el.getAttribute('data-term')] = true; });
  document.body.dataset.rendered = JSON.stringify({
    lanes: sized('g.lane').length,
    bands: sized('rect.term').length,
    terms: Object.keys(terms).length,
    leaderships: sized('rect.leader').length,
    gaps: sized('rect.gap').length,
    events: sized('text.event').length,
    commit_lines: sized('polyline.commit').length
  });
})();
"#;

/// Where the commit chart goes: `h` high from `top`, across the lanes' `left..right`.
struct ChartArea {
    top: f64,
    h: f64,
    left: f64,
    right: f64,
}

/// The commit index over time: a line per node.
fn draw_commits(
    svg: &mut String,
    commits: &[&Event],
    nodes: &[u64],
    area: ChartArea,
    x: &dyn Fn(f64) -> f64,
) {
    let ChartArea {
        top,
        h,
        left,
        right,
    } = area;
    let max = commits
        .iter()
        .filter_map(|e| match e.kind {
            Kind::Commit(c) => Some(c),
            _ => None,
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let y = |c: u64| top + h - (c as f64 / max as f64) * h;
    let _ = write!(
        svg,
        r##"<g class="commits"><text x="8" y="{}" font-weight="bold">commit</text><text x="8" y="{}" fill="#666">{max}</text><text x="8" y="{}" fill="#666">0</text><line x1="{left}" x2="{right}" y1="{}" y2="{}" stroke="#ccc"/>"##,
        top + h / 2.0,
        top + 10.0,
        top + h,
        top + h,
        top + h
    );
    for (i, node) in nodes.iter().enumerate() {
        let hue = (i as u64 * 137 + 200) % 360;
        let points: Vec<(f64, u64, &str)> = commits
            .iter()
            .filter(|e| e.node == *node)
            .filter_map(|e| match e.kind {
                Kind::Commit(c) => Some((e.t, c, e.line.as_str())),
                _ => None,
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(t, c, _)| format!("{:.1},{:.1}", x(*t), y(*c)))
            .collect();
        // A single point still gets a visible line: a short flat stroke.
        let path = if path.len() == 1 {
            let (t, c, _) = points[0];
            format!(
                "{:.1},{:.1} {:.1},{:.1}",
                x(t) - 3.0,
                y(c),
                x(t) + 3.0,
                y(c)
            )
        } else {
            path.join(" ")
        };
        let _ = write!(
            svg,
            r#"<polyline class="commit" data-node="{node}" points="{path}" fill="none" stroke="hsl({hue}, 70%, 40%)" stroke-width="2"><title>node {node}: commit index</title></polyline>"#
        );
        for (t, c, line) in &points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="hsl({hue}, 70%, 40%)"><title>{}</title></circle>"#,
                x(*t),
                y(*c),
                esc(&format!("commit index {c}: {line}"))
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" fill="hsl({hue}, 70%, 40%)" text-anchor="end" dy="-4">node {node}</text>"#,
            right + 5.0,
            y(points.last().map_or(0, |p| p.1))
        );
    }
    svg.push_str("</g>");
}

fn nice_step(raw: f64) -> f64 {
    let candidates = [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0,
    ];
    candidates
        .iter()
        .copied()
        .find(|c| *c >= raw)
        .unwrap_or(3600.0)
}

fn fmt_secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2}")
    } else {
        format!("{s:.0}")
    }
}

fn fmt_epoch(t: f64) -> String {
    format!("{t:.3} s after the epoch (UTC)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_give_the_same_event() {
        let text = "[2026-12-07T16:52:15Z INFO  raftd_core::election] node 2: won the election for term 3 with 2 of 3 votes; now leader";
        let json = r#"{"level":"INFO","msg":"node 2: won the election for term 3 with 2 of 3 votes; now leader","node":2,"target":"raftd_core::election","ts":"2026-12-07T16:52:15.250000Z"}"#;
        let a = parse_line(text).expect("text");
        let b = parse_line(json).expect("json");
        assert_eq!((a.node, a.kind.clone(), a.term), (2, Kind::Won, Some(3)));
        assert_eq!((b.node, b.kind, b.term), (2, Kind::Won, Some(3)));
        assert!((b.t - a.t - 0.25).abs() < 1e-6);
        // 2026-12-07T16:52:15Z.
        assert_eq!(a.t, 1_796_662_335.0);
    }

    #[test]
    fn the_progress_line_gives_the_commit_index_and_the_term() {
        let line = "[2026-12-07T18:18:53Z INFO  raftd::server::node_metrics] node 1: commit index 449, applied 449, last log 450 in term 2 (448 entries committed in 5.0 s)";
        let e = parse_line(line).expect("an event");
        assert_eq!((e.node, e.kind, e.term), (1, Kind::Commit(449), Some(2)));
    }

    #[test]
    fn lines_that_are_not_raftd_events_are_skipped() {
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("[2026-12-07T16:52:15Z INFO  x] nothing about a node").is_none());
    }
}
