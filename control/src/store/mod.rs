//! Durable control-plane state behind a small trait.
//!
//! The control plane sees the store as named tables of string keys and
//! opaque values, written in atomic batches ([`Store::commit`]). That is all
//! a later cluster backend (an external database) has to provide. The one
//! implementation today is [`RedbStore`]: one file under the data directory,
//! each commit fsynced before it returns, so an acknowledged API write
//! survives `kill -9`.
//!
//! [`Db`] adds typed (JSON) records on top; [`crate::model`] defines them.

mod redb_store;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use redb_store::RedbStore;

/// The tables the control plane keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Tenants by id.
    Tenants,
    /// API keys by the SHA-256 of the secret (hex).
    ApiKeys,
    /// Streams by name (names are global: they appear in playback URLs).
    Streams,
    /// Stream keys by the SHA-256 of the key (hex).
    StreamKeys,
    /// Trigger handlers by id.
    Triggers,
    /// Node-wide values: schema version, token signing secret.
    Meta,
    /// Transcode ladder profiles made through the API, by name.
    Profiles,
    /// Auto-push rules by id.
    PushRules,
}

impl Table {
    /// Every table, for backends that create them up front.
    pub const ALL: [Table; 8] = [
        Table::Tenants,
        Table::ApiKeys,
        Table::Streams,
        Table::StreamKeys,
        Table::Triggers,
        Table::Meta,
        Table::Profiles,
        Table::PushRules,
    ];

    /// The table's name in the backend.
    pub fn name(self) -> &'static str {
        match self {
            Table::Tenants => "tenants",
            Table::ApiKeys => "api_keys",
            Table::Streams => "streams",
            Table::StreamKeys => "stream_keys",
            Table::Triggers => "triggers",
            Table::Meta => "meta",
            Table::Profiles => "transcode_profiles",
            Table::PushRules => "push_rules",
        }
    }
}

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a record.
    Put(Table, String, Vec<u8>),
    /// Remove a record (absent is not an error).
    Delete(Table, String),
    /// Append an entry to the audit log, in the same commit as the change it describes.
    Audit(Vec<u8>),
}

/// A store failure: the API answers 503 and nothing is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
    /// A record did not decode: the file is from an unknown version or damaged.
    #[error("store record {table}/{key} is unreadable: {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Why it did not decode.
        reason: String,
    },
    /// The file was written by a newer Tidecast.
    #[error("store schema version {found} is newer than this build understands ({supported})")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
}

/// Tables of string keys and byte values, written in atomic, durable batches.
pub trait Store: Send + Sync + 'static {
    /// One record.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` records in key order, starting after `after`.
    fn scan(&self, table: Table, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies every op or none; returns once the batch is durable.
    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// Typed JSON records over a [`Store`].
#[derive(Clone)]
pub struct Db {
    store: std::sync::Arc<dyn Store>,
    /// Bumped after every committed batch: snapshots built from the store
    /// (the playback policy) know they are stale when it moved.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Db {
    /// Wraps a backend.
    pub fn new(store: std::sync::Arc<dyn Store>) -> Db {
        Db { store, generation: std::sync::Arc::default() }
    }

    /// How many batches were committed through this handle (and its clones).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The backend.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// One typed record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        match self.store.get(table, key)? {
            None => Ok(None),
            Some(bytes) => decode(table, key, &bytes).map(Some),
        }
    }

    /// Every record of a table, in key order (for small tables: tenants, keys, triggers).
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self.store.scan(table, after.as_deref(), 512)?;
            let done = batch.len() < 512;
            for (k, v) in batch {
                let rec = decode(table, &k, &v)?;
                after = Some(k.clone());
                out.push((k, rec));
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Commits a batch.
    pub fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let r = self.store.commit(ops);
        // Bumped even on failure: a backend may have applied part of what it
        // then reported, and a rebuild costs little.
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        r
    }
}

/// A `Put` of a typed record.
pub fn put<T: Serialize>(table: Table, key: &str, value: &T) -> Op {
    // Serializing our own plain structs cannot fail; an empty value would
    // surface as a Corrupt error on read rather than a panic here.
    Op::Put(table, key.to_owned(), serde_json::to_vec(value).unwrap_or_default())
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.name(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// An audit-log entry for a change, committed with it.
pub fn audit_op(who: &str, action: &str, kind: &str, id: &str) -> Op {
    let entry =
        serde_json::json!({ "at_ms": crate::secrets::now_ms(), "who": who, "action": action, "kind": kind, "id": id });
    Op::Audit(entry.to_string().into_bytes())
}
