//! Transactions: compares, then the success or the failure branch, all at one revision.
//!
//! The types are the wire format of `Txn` (docs/CLIENT_PROTOCOL.md) and the log's alike: a
//! request's `compare`, `success` and `failure` are logged as the client sent them (after
//! `validate`), and applying them is deterministic on every node.

use super::mvcc::{KeyRange, KeyValue, Mvcc, RangeResult};
use serde::{Deserialize, Serialize};

/// Most compares, and most ops in each branch, of one transaction.
pub const MAX_TXN_OPS: usize = 128;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    #[serde(default)]
    pub compare: Vec<Compare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub target: Target,
    pub op: CmpOp,
    pub value: CompareValue,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Value,
    Version,
    ModRevision,
    CreateRevision,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">")]
    Gt,
}

/// A string for `value`, a number for the other targets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum CompareValue {
    Int(u64),
    Str(String),
}

/// One operation of a branch: the request of the same name, without `id`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum TxnOp {
    Put {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: u64,
    },
    Get {
        key: String,
    },
    Range {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
        #[serde(default, skip_serializing_if = "is_zero")]
        limit: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keys_only: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        count_only: bool,
    },
    Delete {
        key: String,
    },
    DeleteRange {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The answer of one op, in the order the ops ran.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum TxnResponse {
    Put {},
    Get {
        /// Null when the key is absent; then the revisions and version are 0.
        value: Option<String>,
        mod_revision: u64,
        create_revision: u64,
        version: u64,
        lease: u64,
    },
    Range(RangeResult),
    Delete {
        deleted: u64,
    },
    DeleteRange {
        deleted: u64,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub responses: Vec<TxnResponse>,
    /// The store revision after the transaction.
    pub revision: u64,
}

impl TxnOp {
    /// The keys the op writes, if it writes.
    pub fn written(&self) -> Result<Option<KeyRange>, &'static str> {
        Ok(match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                Some(KeyRange::from_fields(key.clone(), None, false)?)
            }
            TxnOp::DeleteRange { key, end, prefix } => {
                Some(KeyRange::from_fields(key.clone(), end.clone(), *prefix)?)
            }
            TxnOp::Get { key } => {
                KeyRange::from_fields(key.clone(), None, false)?;
                None
            }
            TxnOp::Range {
                key, end, prefix, ..
            } => {
                KeyRange::from_fields(key.clone(), end.clone(), *prefix)?;
                None
            }
        })
    }

    fn size_hint(&self) -> usize {
        match self {
            TxnOp::Put { key, value, .. } => key.len() + value.len() + 32,
            TxnOp::Get { key } | TxnOp::Delete { key } => key.len() + 24,
            TxnOp::Range { key, end, .. } | TxnOp::DeleteRange { key, end, .. } => {
                key.len() + end.as_ref().map_or(0, String::len) + 48
            }
        }
    }
}

impl Txn {
    /// A compare-and-swap of one key as a transaction: if the key's value is `expected` (None:
    /// the key is absent), set it to `value` (None: delete it); otherwise read it. Its answer
    /// says the same as a `Cas`: `succeeded`, and the value after (see `cas_value_after`).
    pub fn cas(key: &str, expected: Option<&str>, value: Option<&str>) -> Txn {
        let compare = match expected {
            Some(e) => Compare {
                key: key.to_string(),
                target: Target::Value,
                op: CmpOp::Eq,
                value: CompareValue::Str(e.to_string()),
            },
            None => Compare {
                key: key.to_string(),
                target: Target::Version,
                op: CmpOp::Eq,
                value: CompareValue::Int(0),
            },
        };
        let success = match value {
            Some(v) => TxnOp::Put {
                key: key.to_string(),
                value: v.to_string(),
                lease: 0,
            },
            None => TxnOp::Delete {
                key: key.to_string(),
            },
        };
        Txn {
            compare: vec![compare],
            success: vec![success],
            failure: vec![TxnOp::Get {
                key: key.to_string(),
            }],
        }
    }

    /// The value after a transaction made by `Txn::cas(_, _, value)` answered `succeeded` and
    /// `responses`; None if the answer is not one such a transaction gives.
    pub fn cas_value_after(
        value: Option<&str>,
        succeeded: bool,
        responses: &[TxnResponse],
    ) -> Option<Option<String>> {
        if succeeded {
            return Some(value.map(str::to_string));
        }
        match responses {
            [TxnResponse::Get { value, .. }] => Some(value.clone()),
            _ => None,
        }
    }

    /// Checks what can be checked before the transaction is logged: sizes, that every key and
    /// range is well formed, that compares have values of their target's type, and that no
    /// branch writes a key twice (its events would otherwise share a key and a revision).
    pub fn validate(&self) -> Result<(), String> {
        if self.compare.len() > MAX_TXN_OPS
            || self.success.len() > MAX_TXN_OPS
            || self.failure.len() > MAX_TXN_OPS
        {
            return Err(format!(
                "a transaction has at most {MAX_TXN_OPS} compares and {MAX_TXN_OPS} ops in each branch"
            ));
        }
        for c in &self.compare {
            if c.key.is_empty() {
                return Err("a compare's key must not be empty".into());
            }
            match (c.target, &c.value) {
                (Target::Value, CompareValue::Str(_)) => {}
                (Target::Value, CompareValue::Int(_)) => {
                    return Err(format!("compare on {:?}: value must be a string", c.key))
                }
                (_, CompareValue::Int(_)) => {}
                (_, CompareValue::Str(_)) => {
                    return Err(format!(
                        "compare on {:?}: a version or revision compares with a number",
                        c.key
                    ))
                }
            }
        }
        for branch in [&self.success, &self.failure] {
            let mut writes: Vec<KeyRange> = Vec::new();
            for op in branch {
                if let Some(range) = op.written()? {
                    if writes.iter().any(|w| w.overlaps(&range)) {
                        return Err(
                            "a branch of a transaction writes a key more than once".to_string()
                        );
                    }
                    writes.push(range);
                }
            }
        }
        Ok(())
    }

    pub(super) fn size_hint(&self) -> usize {
        let compares: usize = self
            .compare
            .iter()
            .map(|c| {
                c.key.len()
                    + 48
                    + match &c.value {
                        CompareValue::Str(s) => s.len(),
                        CompareValue::Int(_) => 20,
                    }
            })
            .sum();
        let ops: usize = self
            .success
            .iter()
            .chain(&self.failure)
            .map(TxnOp::size_hint)
            .sum();
        compares + ops
    }

    /// Whether every compare holds on `store` now.
    pub fn holds(&self, store: &Mvcc) -> bool {
        self.compare.iter().all(|c| c.holds(store.get(&c.key)))
    }
}

impl Compare {
    /// Whether the compare holds for the key's current version (None: absent). An absent key
    /// has version and revisions 0, and no value: a compare on its value never holds (compare
    /// `version == 0` to ask for absence), as in etcd.
    fn holds(&self, kv: Option<KeyValue>) -> bool {
        let ord = match (&self.value, self.target) {
            (CompareValue::Str(want), Target::Value) => match kv.and_then(|kv| kv.value) {
                Some(have) => have.as_bytes().cmp(want.as_bytes()),
                None => return false,
            },
            (CompareValue::Int(want), target) => {
                let have = kv.map_or(0, |kv| match target {
                    Target::Version => kv.version,
                    Target::ModRevision => kv.mod_revision,
                    Target::CreateRevision => kv.create_revision,
                    Target::Value => 0,
                });
                have.cmp(want)
            }
            // `validate` refused mismatched types before the transaction was logged.
            (CompareValue::Str(_), _) => return false,
        };
        match self.op {
            CmpOp::Eq => ord.is_eq(),
            CmpOp::Ne => ord.is_ne(),
            CmpOp::Lt => ord.is_lt(),
            CmpOp::Gt => ord.is_gt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Txn {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_wire_format_parses_and_validates() {
        let t = parse(
            r#"{"compare":[{"key":"a","target":"version","op":"==","value":0},
                          {"key":"b","target":"value","op":"!=","value":"x"}],
                "success":[{"type":"Put","key":"a","value":"1"},{"type":"Range","key":"a","prefix":true}],
                "failure":[{"type":"Get","key":"a"}]}"#,
        );
        assert_eq!(t.validate(), Ok(()));
        let bad = parse(r#"{"compare":[{"key":"a","target":"version","op":"<","value":"1"}]}"#);
        assert!(bad.validate().is_err());
        let bad = parse(r#"{"compare":[{"key":"a","target":"value","op":"<","value":1}]}"#);
        assert!(bad.validate().is_err());
        let twice = parse(
            r#"{"success":[{"type":"Put","key":"a/1","value":"1"},{"type":"DeleteRange","key":"a/","prefix":true}]}"#,
        );
        assert!(twice.validate().is_err());
        let too_many = Txn {
            success: vec![TxnOp::Get { key: "k".into() }; MAX_TXN_OPS + 1],
            ..Txn::default()
        };
        assert!(too_many.validate().is_err());
        assert!(serde_json::from_str::<Txn>(
            r#"{"compare":[{"key":"a","target":"size","op":"==","value":1}]}"#
        )
        .is_err());
    }

    #[test]
    fn compares_follow_etcd_on_absent_keys() {
        let mut m = Mvcc::new();
        m.put("k", "v".into(), 0);
        m.finish_write();
        let c = |key: &str, target, op, value| Compare {
            key: key.into(),
            target,
            op,
            value,
        };
        let s = |v: &str| CompareValue::Str(v.into());
        assert!(c("k", Target::Value, CmpOp::Eq, s("v")).holds(m.get("k")));
        assert!(c("k", Target::Value, CmpOp::Lt, s("w")).holds(m.get("k")));
        assert!(!c("x", Target::Value, CmpOp::Ne, s("v")).holds(m.get("x")));
        assert!(c("x", Target::Version, CmpOp::Eq, CompareValue::Int(0)).holds(m.get("x")));
        assert!(c("k", Target::ModRevision, CmpOp::Eq, CompareValue::Int(1)).holds(m.get("k")));
        assert!(c("k", Target::CreateRevision, CmpOp::Gt, CompareValue::Int(0)).holds(m.get("k")));
    }
}
