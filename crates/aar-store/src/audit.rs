//! The tamper-evident audit log: an append-only hash chain.
//!
//! Record `n` stores `hash_n = sha256(hash_{n-1}, seq, at, actor, action, detail)`
//! and the head row keeps the last `(seq, hash)`. Changing, removing or
//! reordering any record breaks every later hash; truncating the tail breaks
//! the match with the head. (Someone who can rewrite the whole database can
//! rebuild the chain; publishing the head elsewhere pins it.)

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use crate::{StoreError, get};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit log record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it was appended (Unix ms).
    pub at: i64,
    /// Who acted: `admin` or `agent:<id>`.
    pub actor: String,
    /// What was done, e.g. `evaluate`, `disqualify`.
    pub action: String,
    /// JSON details: for an evaluation, the predictions hash and exactly what was returned.
    pub detail: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl AuditRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            seq: get(row, 0)?,
            at: get(row, 1)?,
            actor: get(row, 2)?,
            action: get(row, 3)?,
            detail: get(row, 4)?,
            prev_hash: get(row, 5)?,
            hash: get(row, 6)?,
        })
    }
}

/// The chain hash of one record (hex), each field length-prefixed so that no
/// two different records serialize to the same bytes.
pub fn audit_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> String {
    let mut hasher = Sha256::new();
    for field in [
        prev_hash.as_bytes(),
        &seq.to_le_bytes(),
        &at.to_le_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        detail.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hex::encode(hasher.finalize())
}

/// The outcome of [`crate::Store::verify_audit_chain`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChainCheck {
    /// Every record links to the previous one and the last matches the head.
    Intact {
        /// Number of records.
        records: i64,
        /// Hash of the last record (or the genesis hash).
        head: String,
    },
    /// The chain is broken at `seq`.
    Broken {
        /// First record that does not check out (or the head's seq).
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) struct ChainWalker {
    expected_seq: i64,
    prev_hash: String,
}

impl ChainWalker {
    pub(crate) fn new() -> ChainWalker {
        ChainWalker {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }

    pub(crate) fn push(&mut self, r: &AuditRecord) -> Option<ChainCheck> {
        let broken = |reason: &str| {
            Some(ChainCheck::Broken {
                seq: r.seq,
                reason: reason.to_owned(),
            })
        };
        if r.seq != self.expected_seq {
            return broken("missing or reordered record");
        }
        if r.prev_hash != self.prev_hash {
            return broken("prev_hash does not match the previous record");
        }
        if audit_hash(&r.prev_hash, r.seq, r.at, &r.actor, &r.action, &r.detail) != r.hash {
            return broken("record content does not match its hash");
        }
        self.expected_seq += 1;
        self.prev_hash = r.hash.clone();
        None
    }

    pub(crate) fn finish(self, head_seq: i64, head_hash: &str) -> ChainCheck {
        let records = self.expected_seq - 1;
        if head_seq != records || head_hash != self.prev_hash {
            return ChainCheck::Broken {
                seq: head_seq,
                reason: "the head does not match the last record".to_owned(),
            };
        }
        ChainCheck::Intact {
            records,
            head: self.prev_hash,
        }
    }
}
