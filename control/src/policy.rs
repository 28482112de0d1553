//! The playback and publish policy as one in-memory snapshot: every
//! configured stream with its tenant, and every stream key by its hash.
//!
//! Admission reads the snapshot, never the store. The snapshot remembers
//! the store generation it was built at ([`Db::generation`], bumped by every
//! commit); the first request after a write rebuilds it, so a revoked key or
//! a token requirement switched on applies from the next request on.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::model::{StreamConfig, StreamKey, Tenant};
use crate::store::{Db, StoreError, Table};

/// A stream's configuration and its tenant's record, looked up together.
#[derive(Debug, Clone)]
pub struct Owned {
    /// The stream.
    pub stream: StreamConfig,
    /// Its tenant (absent if deleted under it).
    pub tenant: Option<Tenant>,
    /// What the media side gets of it, built once per snapshot.
    pub settings: Arc<tidecast_protocols::access::StreamSettings>,
}

impl Owned {
    /// Joins a stream to its tenant.
    pub fn new(stream: StreamConfig, tenant: Option<Tenant>) -> Owned {
        let settings = Arc::new(tidecast_protocols::access::StreamSettings {
            tenant: Some(stream.tenant.clone()),
            tags: stream.tags.clone(),
            transcode_profile: stream
                .transcode_profile
                .clone()
                .or_else(|| tenant.as_ref().and_then(|t| t.transcode_profile.clone())),
            playback_token_required: stream.playback_token_required,
            dvr_secs: stream.buffer_secs,
        });
        Owned { stream, tenant, settings }
    }

    /// The trigger scope of this stream.
    pub fn scope(&self) -> crate::triggers::Scope<'_> {
        crate::triggers::Scope::of(&self.stream)
    }

    /// The tenant's viewer quota.
    pub fn max_viewers(&self) -> Option<u32> {
        self.tenant.as_ref().and_then(|t| t.quotas.max_viewers)
    }
}

/// One consistent view of the policy tables.
#[derive(Debug, Default)]
pub struct Policy {
    generation: u64,
    streams: HashMap<String, Arc<Owned>>,
    keys: HashMap<String, StreamKey>,
}

impl Policy {
    /// Reads the tables the snapshot covers.
    fn load(db: &Db, generation: u64) -> Result<Policy, StoreError> {
        let tenants: HashMap<String, Tenant> = db.all::<Tenant>(Table::Tenants)?.into_iter().collect();
        let streams = db
            .all::<StreamConfig>(Table::Streams)?
            .into_iter()
            .map(|(name, s)| {
                let tenant = tenants.get(&s.tenant).cloned();
                (name, Arc::new(Owned::new(s, tenant)))
            })
            .collect();
        let keys = db.all::<StreamKey>(Table::StreamKeys)?.into_iter().collect();
        Ok(Policy { generation, streams, keys })
    }

    /// A configured stream and its tenant.
    pub fn stream(&self, name: &str) -> Option<&Arc<Owned>> {
        self.streams.get(name)
    }

    /// Whether any stream is configured.
    pub fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// A stream key by the SHA-256 (hex) of its secret.
    pub fn key(&self, hash: &str) -> Option<&StreamKey> {
        self.keys.get(hash)
    }

    /// Configured streams of a tenant.
    pub fn streams_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Arc<Owned>> + 'a {
        self.streams.values().filter(move |o| o.stream.tenant == tenant)
    }
}

/// The current snapshot, rebuilt when the store moved on.
pub struct PolicyCache {
    current: RwLock<Arc<Policy>>,
    /// One rebuild at a time; the others wait for its result.
    rebuilding: Mutex<()>,
}

impl Default for PolicyCache {
    fn default() -> Self {
        PolicyCache::new()
    }
}

impl PolicyCache {
    /// A cache whose first read loads the store.
    pub fn new() -> PolicyCache {
        // No store generation is ever u64::MAX: the placeholder is never current.
        let placeholder = Policy { generation: u64::MAX, ..Default::default() };
        PolicyCache { current: RwLock::new(Arc::new(placeholder)), rebuilding: Mutex::new(()) }
    }

    /// The snapshot for the store's present generation.
    pub fn get(&self, db: &Db) -> Result<Arc<Policy>, StoreError> {
        let current = |want: u64| {
            let p = self.current.read();
            (p.generation == want).then(|| p.clone())
        };
        if let Some(p) = current(db.generation()) {
            return Ok(p);
        }
        let _one = self.rebuilding.lock();
        // The generation is read before the tables: a commit landing during
        // the load leaves this snapshot stale, and the next read rebuilds.
        let want = db.generation();
        if let Some(p) = current(want) {
            return Ok(p);
        }
        let fresh = Arc::new(Policy::load(db, want)?);
        *self.current.write() = fresh.clone();
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::put;

    #[test]
    fn a_write_is_seen_by_the_next_read_and_reads_between_writes_share_one_snapshot() {
        let dir = std::env::temp_dir().join(format!("tidecast-policy-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let db = Db::new(Arc::new(crate::store::RedbStore::open(&dir).unwrap()));
        let cache = PolicyCache::new();
        assert!(!cache.get(&db).unwrap().has_streams());
        let cfg: StreamConfig =
            serde_json::from_value(serde_json::json!({"name": "cam", "tenant": "acme", "created_ms": 0})).unwrap();
        db.commit(vec![put(Table::Streams, "cam", &cfg)]).unwrap();
        let a = cache.get(&db).unwrap();
        assert_eq!(a.stream("cam").map(|o| o.stream.tenant.as_str()), Some("acme"));
        assert!(a.stream("cam").unwrap().tenant.is_none(), "no tenant record yet");
        let b = cache.get(&db).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "no write, no rebuild");
        db.commit(vec![crate::store::Op::Delete(Table::Streams, "cam".into())]).unwrap();
        assert!(cache.get(&db).unwrap().stream("cam").is_none());
        let _ = std::fs::remove_file(&dir);
    }
}
