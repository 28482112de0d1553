//! Uploads of finished recordings to S3 (or any S3-compatible server)
//! through `object_store`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

/// Where and how to reach S3. Values left out come from the usual
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT`, ...).
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); unset: AWS.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
}

/// One client per bucket, made when first needed.
#[derive(Default)]
pub(crate) struct Stores {
    cfg: S3Config,
    by_bucket: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// Files up to this size go up in one request; larger ones in parts.
const SINGLE_PUT: u64 = 32 << 20;
/// Part size of a multipart upload.
const PART: usize = 16 << 20;

impl Stores {
    pub(crate) fn new(cfg: S3Config) -> Stores {
        Stores { cfg, by_bucket: Mutex::default() }
    }

    pub(crate) fn for_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        if let Some(s) = self.by_bucket.lock().get(bucket) {
            return Ok(s.clone());
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &self.cfg.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(r) = &self.cfg.region {
            b = b.with_region(r);
        }
        if let Some(k) = &self.cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &self.cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| format!("s3://{bucket}: {e}"))?);
        self.by_bucket.lock().insert(bucket.to_owned(), store.clone());
        Ok(store)
    }
}

/// Uploads the file at `path` to `key`; returns its size.
pub(crate) async fn upload(store: &dyn ObjectStore, path: &Path, key: &str) -> Result<u64, String> {
    let failed = |e: &dyn std::fmt::Display| format!("uploading {} to {key}: {e}", path.display());
    let location = ObjectPath::parse(key).map_err(|e| failed(&e))?;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| failed(&e))?;
    let size = file.metadata().await.map_err(|e| failed(&e))?.len();
    if size <= SINGLE_PUT {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).await.map_err(|e| failed(&e))?;
        store.put(&location, PutPayload::from(bytes)).await.map_err(|e| failed(&e))?;
        return Ok(size);
    }
    let upload = store.put_multipart(&location).await.map_err(|e| failed(&e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| failed(&e))?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await.map_err(|e| failed(&e))?;
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(|e| failed(&e))?;
    Ok(size)
}
