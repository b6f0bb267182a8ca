//! Blobs in an S3-compatible object store (AWS S3, SeaweedFS, MinIO…) through `object_store`:
//! `PREFIX/blobs/ab/abcdef…` (sha256), content-addressed like [`crate::FsBlobs`].
//!
//! A PUT is atomic in S3 (an object is visible whole or not at all), so no temporary object is
//! needed; writing the same bytes twice writes the same object. Credentials come from
//! [`S3Config`] (the service reads them from its environment) and are never logged: `S3Config`'s
//! `Debug` leaves the secret out.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStoreExt, PutPayload, RetryConfig};

use crate::error::{Result, StoreError};
use crate::{BlobStore, blob_address};

/// Where the S3 blob store is and how to sign in to it.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// `http://127.0.0.1:8333` for a local SeaweedFS; None for AWS S3 itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects are written under this prefix (`PREFIX/blobs/…`); empty for the bucket's root.
    pub prefix: String,
    /// How long one request is retried (with backoff) before its error is returned.
    pub retry_timeout: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

/// Content-addressed bytes in an S3 bucket.
#[derive(Debug)]
pub struct S3Blobs {
    store: AmazonS3,
    prefix: String,
}

impl S3Blobs {
    /// A client for the bucket; nothing is requested until the first blob is read or written.
    pub fn open(config: &S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(StoreError::Config("S3 bucket name is empty".into()));
        }
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 5,
            retry_timeout: if config.retry_timeout.is_zero() { Duration::from_secs(30) } else { config.retry_timeout },
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(if config.region.is_empty() { "us-east-1" } else { &config.region })
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            // A self-hosted server: path-style requests (`endpoint/bucket/key`), plain HTTP only
            // when the endpoint says so.
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://")).with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| StoreError::Config(format!("S3 client: {e}")))?;
        let prefix = config.prefix.trim_matches('/').to_string();
        tracing::info!(bucket = %config.bucket, endpoint = ?config.endpoint, prefix = %prefix, "S3 blob store");
        Ok(S3Blobs { store, prefix })
    }

    /// The object key of a well-formed address; nothing else names an object.
    fn path(&self, hash: &str) -> Option<Path> {
        let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        ok.then(|| {
            let key = format!("blobs/{}/{hash}", &hash[..2]);
            Path::from(if self.prefix.is_empty() { key } else { format!("{}/{key}", self.prefix) })
        })
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, bytes: &[u8]) -> Result<String> {
        let hash = blob_address(bytes);
        let path = self.path(&hash).ok_or_else(|| StoreError::Corrupt("hash".into()))?;
        self.store.put(&path, PutPayload::from(bytes.to_vec())).await?;
        Ok(hash)
    }

    async fn get(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.path(hash) else { return Ok(None) };
        match self.store.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, hash: &str) -> Result<()> {
        let Some(path) = self.path(hash) else { return Ok(()) };
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
