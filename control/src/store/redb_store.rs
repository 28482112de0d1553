//! The embedded store: one redb file, ACID, each commit fsynced.
//!
//! The schema version lives in the `meta` table under `schema_version`; on
//! open, every migration past it runs in one write transaction, so a file
//! is either fully at the old version or fully at the new one.

use std::ops::Bound;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Op, Store, StoreError, Table};

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const SCHEMA_KEY: &str = "schema_version";

/// One schema step, run inside the migration's write transaction.
type Migration = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// Migration `i` takes a file from schema version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[create_tables_v1, add_profiles_v2, add_push_rules_v3];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn create_tables_v1(txn: &WriteTransaction) -> Result<(), redb::Error> {
    for t in [Table::Tenants, Table::ApiKeys, Table::Streams, Table::StreamKeys, Table::Triggers, Table::Meta] {
        txn.open_table(def(t))?;
    }
    txn.open_table(AUDIT)?;
    Ok(())
}

/// Version 2: ladder profiles made through the API.
fn add_profiles_v2(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(def(Table::Profiles))?;
    Ok(())
}

/// Version 3: auto-push rules.
fn add_push_rules_v3(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(def(Table::PushRules))?;
    Ok(())
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// The redb-backed [`Store`].
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store file and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let store = RedbStore { db };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let found = {
            let meta = txn.open_table(def(Table::Meta)).map_err(backend)?;
            let v = meta.get(SCHEMA_KEY).map_err(backend)?;
            match v {
                None => 0,
                Some(g) => {
                    std::str::from_utf8(g.value()).ok().and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| {
                        StoreError::Corrupt { table: "meta", key: SCHEMA_KEY.into(), reason: "not a number".into() }
                    })?
                }
            }
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found, supported: SCHEMA_VERSION });
        }
        if found == SCHEMA_VERSION {
            txn.abort().map_err(backend)?;
            return Ok(());
        }
        for m in &MIGRATIONS[found as usize..] {
            m(&txn).map_err(backend)?;
        }
        {
            let mut meta = txn.open_table(def(Table::Meta)).map_err(backend)?;
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes()).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        tracing::info!(from = found, to = SCHEMA_VERSION, "store migrated");
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(def(table)).map_err(backend)?;
        let v = t.get(key).map_err(backend)?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn scan(&self, table: Table, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(def(table)).map_err(backend)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for item in t.range::<&str>((start, Bound::Unbounded)).map_err(backend)?.take(limit) {
            let (k, v) = item.map_err(backend)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        for op in ops {
            match op {
                Op::Put(table, key, value) => {
                    let mut t = txn.open_table(def(table)).map_err(backend)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                }
                Op::Delete(table, key) => {
                    let mut t = txn.open_table(def(table)).map_err(backend)?;
                    t.remove(key.as_str()).map_err(backend)?;
                }
                Op::Audit(entry) => {
                    let mut t = txn.open_table(AUDIT).map_err(backend)?;
                    let next = t.last().map_err(backend)?.map_or(1, |(k, _)| k.value() + 1);
                    t.insert(next, entry.as_slice()).map_err(backend)?;
                }
            }
        }
        txn.commit().map_err(backend)
    }

    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(AUDIT).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.range((after.saturating_add(1))..).map_err(backend)?.take(limit) {
            let (k, v) = item.map_err(backend)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_commit_atomically_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.commit(vec![
                Op::Put(Table::Tenants, "a".into(), b"1".to_vec()),
                Op::Put(Table::Tenants, "b".into(), b"2".to_vec()),
                Op::Audit(b"made a and b".to_vec()),
            ])
            .unwrap();
            s.commit(vec![Op::Delete(Table::Tenants, "a".into()), Op::Audit(b"dropped a".to_vec())]).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.get(Table::Tenants, "a").unwrap(), None);
        assert_eq!(s.get(Table::Tenants, "b").unwrap(), Some(b"2".to_vec()));
        let log = s.audit_log(0, 10).unwrap();
        assert_eq!(log, vec![(1, b"made a and b".to_vec()), (2, b"dropped a".to_vec())]);
        assert_eq!(s.audit_log(1, 10).unwrap().len(), 1);
    }

    #[test]
    fn scan_pages_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let ops = (0..5).map(|i| Op::Put(Table::Streams, format!("s{i}"), vec![i])).collect();
        s.commit(ops).unwrap();
        let first = s.scan(Table::Streams, None, 2).unwrap();
        assert_eq!(first.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["s0", "s1"]);
        let next = s.scan(Table::Streams, Some("s1"), 10).unwrap();
        assert_eq!(next.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["s2", "s3", "s4"]);
    }

    #[test]
    fn a_newer_schema_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open(&path).unwrap();
        s.commit(vec![Op::Put(Table::Meta, SCHEMA_KEY.into(), b"99".to_vec())]).unwrap();
        drop(s);
        assert!(matches!(RedbStore::open(&path), Err(StoreError::TooNew { found: 99, .. })));
    }
}
