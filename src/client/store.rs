//! The client's requests of protocol v2 on the store: revisions, ranges, transactions,
//! compaction and leases. Writes carry the client's `client_id`/`seq` like v1's, so a retry
//! after a timeout is applied at most once.

use super::{Client, ClientError};
use crate::kv::mvcc::KeyValue;
use crate::kv::txn::{Compare, TxnOp, TxnResponse};
use crate::rpc::types::{ClientRequest, Consistency};

/// A range read: which keys, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: String,
    pub end: Option<String>,
    pub prefix: bool,
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Read the past (None: now).
    pub revision: Option<u64>,
    pub stale: bool,
}

impl RangeRequest {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &str) -> RangeRequest {
        RangeRequest {
            key: prefix.to_string(),
            prefix: true,
            ..RangeRequest::default()
        }
    }
}

/// What a range read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeAnswer {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: u64,
    /// The store revision the read saw.
    pub revision: u64,
}

/// What a transaction returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnAnswer {
    pub succeeded: bool,
    pub responses: Vec<TxnResponse>,
    pub revision: u64,
}

/// A lease as `LeaseTimeToLive` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease_id: u64,
    /// Seconds left.
    pub ttl: u64,
    pub granted_ttl: u64,
    pub keys: Vec<String>,
}

impl Client {
    /// Puts `value` under `key`, attached to `lease` (0: none); returns the store revision of
    /// the write.
    pub async fn put_with_lease(
        &mut self,
        key: &str,
        value: &str,
        lease: u64,
    ) -> Result<u64, ClientError> {
        let seq = self.next_seq();
        let (client_id, key, value) = (
            Some(self.client_id.clone()),
            key.to_string(),
            value.to_string(),
        );
        let ok = self
            .call(move |id| ClientRequest::Put {
                id,
                key: key.clone(),
                value: value.clone(),
                lease,
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok(ok.revision.unwrap_or(0))
    }

    /// The key with its revisions and version (None when absent), and the store revision.
    pub async fn get_kv(
        &mut self,
        key: &str,
        consistency: Consistency,
    ) -> Result<(Option<KeyValue>, u64), ClientError> {
        let key = key.to_string();
        let k = key.clone();
        let ok = self
            .call(move |id| ClientRequest::Get {
                id,
                key: k.clone(),
                consistency,
            })
            .await?;
        let kv = ok.value.flatten().map(|value| KeyValue {
            key,
            value: Some(value),
            mod_revision: ok.mod_revision.unwrap_or(0),
            create_revision: ok.create_revision.unwrap_or(0),
            version: ok.version.unwrap_or(0),
            lease: ok.lease.unwrap_or(0),
        });
        Ok((kv, ok.revision.unwrap_or(0)))
    }

    pub async fn range(&mut self, r: &RangeRequest) -> Result<RangeAnswer, ClientError> {
        let r = r.clone();
        let ok = self
            .call(move |id| ClientRequest::Range {
                id,
                key: r.key.clone(),
                end: r.end.clone(),
                prefix: r.prefix,
                limit: r.limit,
                keys_only: r.keys_only,
                count_only: r.count_only,
                revision: r.revision,
                consistency: if r.stale {
                    Consistency::Stale
                } else {
                    Consistency::Linearizable
                },
            })
            .await?;
        Ok(RangeAnswer {
            kvs: ok.kvs.unwrap_or_default(),
            more: ok.more.unwrap_or(false),
            count: ok.count.unwrap_or(0),
            revision: ok.revision.unwrap_or(0),
        })
    }

    /// Deletes every key of a range (`end` exclusive, or every key with the prefix `key`);
    /// returns how many went and the store revision.
    pub async fn delete_range(
        &mut self,
        key: &str,
        end: Option<&str>,
        prefix: bool,
    ) -> Result<(u64, u64), ClientError> {
        let seq = self.next_seq();
        let client_id = Some(self.client_id.clone());
        let (key, end) = (key.to_string(), end.map(str::to_string));
        let ok = self
            .call(move |id| ClientRequest::DeleteRange {
                id,
                key: key.clone(),
                end: end.clone(),
                prefix,
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok((ok.deleted.unwrap_or(0), ok.revision.unwrap_or(0)))
    }

    pub async fn txn(
        &mut self,
        compare: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> Result<TxnAnswer, ClientError> {
        let seq = self.next_seq();
        let client_id = Some(self.client_id.clone());
        let ok = self
            .call(move |id| ClientRequest::Txn {
                id,
                compare: compare.clone(),
                success: success.clone(),
                failure: failure.clone(),
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok(TxnAnswer {
            succeeded: ok.succeeded.unwrap_or(false),
            responses: ok.responses.unwrap_or_default(),
            revision: ok.revision.unwrap_or(0),
        })
    }

    /// Forgets history before `revision`.
    pub async fn compact(&mut self, revision: u64) -> Result<(), ClientError> {
        self.call(move |id| ClientRequest::Compact { id, revision })
            .await
            .map(|_| ())
    }

    /// Grants a lease of `ttl` seconds; returns its id and the ttl granted.
    pub async fn lease_grant(&mut self, ttl: u64) -> Result<(u64, u64), ClientError> {
        let seq = self.next_seq();
        let client_id = Some(self.client_id.clone());
        let ok = self
            .call(move |id| ClientRequest::LeaseGrant {
                id,
                ttl,
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok((ok.lease_id.unwrap_or(0), ok.ttl.unwrap_or(ttl)))
    }

    /// Renews a lease for its whole ttl; returns the ttl. Count it from when you called this,
    /// not from when it returned.
    pub async fn lease_keep_alive(&mut self, lease_id: u64) -> Result<u64, ClientError> {
        let ok = self
            .call(move |id| ClientRequest::LeaseKeepAlive { id, lease_id })
            .await?;
        Ok(ok.ttl.unwrap_or(0))
    }

    /// Revokes a lease and deletes its keys; returns how many went.
    pub async fn lease_revoke(&mut self, lease_id: u64) -> Result<u64, ClientError> {
        let seq = self.next_seq();
        let client_id = Some(self.client_id.clone());
        let ok = self
            .call(move |id| ClientRequest::LeaseRevoke {
                id,
                lease_id,
                client_id: client_id.clone(),
                seq: Some(seq),
            })
            .await?;
        Ok(ok.deleted.unwrap_or(0))
    }

    pub async fn lease_time_to_live(&mut self, lease_id: u64) -> Result<LeaseInfo, ClientError> {
        let ok = self
            .call(move |id| ClientRequest::LeaseTimeToLive { id, lease_id })
            .await?;
        Ok(LeaseInfo {
            lease_id,
            ttl: ok.ttl.unwrap_or(0),
            granted_ttl: ok.granted_ttl.unwrap_or(0),
            keys: ok.keys.unwrap_or_default(),
        })
    }
}
