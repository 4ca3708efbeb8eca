//! A linearizability checker for key-value histories.
//!
//! Keys are independent, so a history is split per key and each part is checked on its own
//! with the Wing–Gong search and Lowe's memoization (the approach Porcupine uses): walk the
//! call/return events in time order, tentatively linearize an operation at its call if the
//! model accepts its output, backtrack when some operation returns before it was linearized,
//! and never revisit a (set of linearized operations, model state) pair.
//!
//! An operation without a response (timed out, connection lost) may have taken effect at any
//! moment after its call, or never: it is given a return time after everything else and an
//! output that matches whatever the model does. Reads without a response tell nothing and are
//! dropped.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Put(String),
    Delete,
    Cas {
        expected: Option<String>,
        value: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// What a Get returned.
    Value(Option<String>),
    /// A Put or Delete succeeded.
    Done,
    Cas {
        succeeded: bool,
        value: Option<String>,
    },
    /// No response: the outcome is unknown.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// When the request was sent.
    pub call: u64,
    /// When the response arrived; ignored when the output is `Unknown`.
    pub ret: u64,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// The operations on that key, in call order, for the report.
    pub operations: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "history of key {:?} is not linearizable:", self.key)?;
        for op in &self.operations {
            let ret = if op.output == Output::Unknown {
                "?".to_string()
            } else {
                op.ret.to_string()
            };
            writeln!(
                f,
                "  client {:>3} [{:>10} .. {:>10}] {:?} -> {:?}",
                op.client, op.call, ret, op.input, op.output
            )?;
        }
        Ok(())
    }
}

/// Checks a whole history, key by key. Returns the first key whose history has no valid
/// linearization.
pub fn check_history(history: &[Operation]) -> Result<(), Box<Violation>> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            let mut operations: Vec<Operation> = ops.into_iter().cloned().collect();
            operations.sort_by_key(|o| o.call);
            return Err(Box::new(Violation {
                key: key.to_string(),
                operations,
            }));
        }
    }
    Ok(())
}

/// The register model of one key: `None` is absent.
type State = Option<String>;

/// The state after `input` with `output`, if the model allows that output from `state`.
fn step(state: &State, input: &Input, output: &Output) -> Option<State> {
    match (input, output) {
        (Input::Get, Output::Value(v)) => (v == state).then(|| state.clone()),
        (Input::Put(v), Output::Done | Output::Unknown) => Some(Some(v.clone())),
        (Input::Delete, Output::Done | Output::Unknown) => Some(None),
        (Input::Cas { expected, value }, out) => {
            let matches = expected == state;
            let next = if matches {
                value.clone()
            } else {
                state.clone()
            };
            match out {
                Output::Unknown => Some(next),
                Output::Cas {
                    succeeded,
                    value: after,
                } => (*succeeded == matches && *after == next).then_some(next),
                _ => None,
            }
        }
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

fn check_key(ops: &[&Operation]) -> bool {
    // Reads with no answer constrain nothing.
    let ops: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| !(o.input == Input::Get && o.output == Output::Unknown))
        .collect();
    let n = ops.len();
    if n == 0 {
        return true;
    }
    // Events in time order; a call sorts before a return at the same instant (the permissive
    // choice: the two operations count as concurrent).
    let mut order: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        let ret = if op.output == Output::Unknown {
            u64::MAX
        } else {
            op.ret.max(op.call)
        };
        order.push((op.call, 0, i, true));
        order.push((ret, 1, i, false));
    }
    order.sort();
    let events: Vec<Event> = order
        .iter()
        .map(|&(_, _, op, is_call)| Event { op, is_call })
        .collect();
    let mut call_pos = vec![0usize; n];
    let mut ret_pos = vec![0usize; n];
    for (pos, e) in events.iter().enumerate() {
        if e.is_call {
            call_pos[e.op] = pos;
        } else {
            ret_pos[e.op] = pos;
        }
    }
    // A doubly linked list over event positions, with a head sentinel at index `len`.
    let len = events.len();
    let head = len;
    let mut next: Vec<usize> = (0..=len)
        .map(|i| if i == head { 0 } else { i + 1 })
        .collect();
    let mut prev: Vec<usize> = (0..=len)
        .map(|i| {
            if i == 0 {
                head
            } else if i == head {
                len
            } else {
                i - 1
            }
        })
        .collect();
    // `len` doubles as the end marker for `next`.
    let end = len;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != end {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != end {
            prev[nx] = x;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut cursor = next[head];
    loop {
        if next[head] == end {
            return true; // every operation linearized
        }
        if cursor == end {
            // Only possible if every remaining event is a call that cannot be linearized now,
            // which means a return must come: handled below. Defensive: treat as failure.
            return false;
        }
        let ev = events[cursor];
        if ev.is_call {
            let op = ops[ev.op];
            if let Some(new_state) = step(&state, &op.input, &op.output) {
                let mut bits = linearized.clone();
                bits[ev.op / 64] |= 1 << (ev.op % 64);
                if cache.insert((bits.clone(), new_state.clone())) {
                    stack.push((ev.op, state));
                    state = new_state;
                    linearized = bits;
                    unlink(&mut next, &mut prev, call_pos[ev.op]);
                    unlink(&mut next, &mut prev, ret_pos[ev.op]);
                    cursor = next[head];
                    continue;
                }
            }
            cursor = next[cursor];
        } else {
            // An operation returned before it could be linearized: undo the last choice.
            let Some((op, old_state)) = stack.pop() else {
                return false;
            };
            state = old_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_pos[op]);
            relink(&mut next, &mut prev, call_pos[op]);
            cursor = next[call_pos[op]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, call: u64, ret: u64, input: Input, output: Output) -> Operation {
        Operation {
            client,
            key: "k".into(),
            input,
            output,
            call,
            ret,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put(v.into())
    }

    fn got(v: Option<&str>) -> Output {
        Output::Value(v.map(str::to_string))
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(1, 0, 10, put("a"), Output::Done),
            op(1, 20, 30, Input::Get, got(Some("a"))),
            op(1, 40, 50, Input::Delete, Output::Done),
            op(1, 60, 70, Input::Get, got(None)),
        ];
        assert!(check_history(&h).is_ok());
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let h = vec![
            op(1, 0, 10, put("a"), Output::Done),
            op(1, 20, 30, put("b"), Output::Done),
            op(2, 40, 50, Input::Get, got(Some("a"))),
        ];
        let err = check_history(&h).unwrap_err();
        assert_eq!(err.key, "k");
        assert!(err.to_string().contains("not linearizable"));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = vec![
            op(1, 0, 100, put("a"), Output::Done),
            op(2, 10, 90, put("b"), Output::Done),
            op(3, 110, 120, Input::Get, got(Some("a"))),
            op(4, 130, 140, Input::Get, got(Some("a"))),
        ];
        assert!(check_history(&h).is_ok());
        // But two later reads cannot disagree.
        let mut bad = h.clone();
        bad.push(op(5, 150, 160, Input::Get, got(Some("b"))));
        assert!(check_history(&bad).is_err());
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let h = vec![
            op(1, 0, 0, put("a"), Output::Unknown),
            op(2, 10, 20, Input::Get, got(None)),
            op(2, 30, 40, Input::Get, got(Some("a"))),
        ];
        assert!(check_history(&h).is_ok(), "took effect late");
        let never = vec![
            op(1, 0, 0, put("a"), Output::Unknown),
            op(2, 10, 20, Input::Get, got(None)),
        ];
        assert!(check_history(&never).is_ok(), "never took effect");
        let before_call = vec![
            op(2, 0, 5, Input::Get, got(Some("a"))),
            op(1, 10, 0, put("a"), Output::Unknown),
        ];
        assert!(
            check_history(&before_call).is_err(),
            "cannot take effect before its call"
        );
    }

    #[test]
    fn cas_semantics_are_checked() {
        let ok = vec![
            op(1, 0, 10, put("a"), Output::Done),
            op(
                1,
                20,
                30,
                Input::Cas {
                    expected: Some("a".into()),
                    value: Some("b".into()),
                },
                Output::Cas {
                    succeeded: true,
                    value: Some("b".into()),
                },
            ),
            op(
                2,
                40,
                50,
                Input::Cas {
                    expected: Some("a".into()),
                    value: Some("c".into()),
                },
                Output::Cas {
                    succeeded: false,
                    value: Some("b".into()),
                },
            ),
        ];
        assert!(check_history(&ok).is_ok());
        // A Cas applied twice (a retried request executed again) shows as a second success.
        let twice = vec![
            op(1, 0, 10, put("a"), Output::Done),
            op(
                1,
                20,
                30,
                Input::Cas {
                    expected: Some("a".into()),
                    value: Some("b".into()),
                },
                Output::Cas {
                    succeeded: true,
                    value: Some("b".into()),
                },
            ),
            op(
                2,
                40,
                50,
                Input::Cas {
                    expected: Some("a".into()),
                    value: Some("b".into()),
                },
                Output::Cas {
                    succeeded: true,
                    value: Some("b".into()),
                },
            ),
        ];
        assert!(check_history(&twice).is_err());
    }

    #[test]
    fn keys_are_checked_independently_and_large_histories_finish() {
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..400u64 {
            let key = format!("k{}", i % 4);
            let v = format!("v{i}");
            h.push(Operation {
                client: i % 7,
                key: key.clone(),
                input: Input::Put(v.clone()),
                output: Output::Done,
                call: t,
                ret: t + 15,
            });
            h.push(Operation {
                client: i % 7 + 10,
                key,
                input: Input::Get,
                output: Output::Value(Some(v)),
                call: t + 16,
                ret: t + 30,
            });
            t += 20;
        }
        assert!(check_history(&h).is_ok());
    }
}
