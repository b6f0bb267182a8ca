//! Blobs in a folder: `root/ab/abcdef…` (sha256), written to a temporary file and renamed.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::{Result, StoreError};
use crate::{BlobStore, blob_address};

/// Content-addressed bytes in a folder.
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
        Ok(FsBlobs { root: root.to_path_buf() })
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        // Only well-formed addresses map to a path: nothing else can reach the file system.
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| self.root.join(&hash[..2]).join(hash))
    }
}

fn write_atomically(dir: &Path, path: &Path, hash: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_path_buf(), e))?;
    let tmp = dir.join(format!(".{hash}.{}.tmp", rand::random::<u64>()));
    std::fs::write(&tmp, bytes).map_err(|e| StoreError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::Io(path.to_path_buf(), e))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn put(&self, bytes: &[u8]) -> Result<String> {
        let hash = blob_address(bytes);
        let path = self.path(&hash).ok_or_else(|| StoreError::Corrupt("hash".into()))?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let (bytes, h) = (bytes.to_vec(), hash.clone());
        blocking(move || if path.exists() { Ok(()) } else { write_atomically(&dir, &path, &h, &bytes) }).await?;
        Ok(hash)
    }

    async fn get(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.path(hash) else { return Ok(None) };
        blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(path, e)),
        })
        .await
    }

    async fn delete(&self, hash: &str) -> Result<()> {
        let Some(path) = self.path(hash) else { return Ok(()) };
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(path, e)),
        })
        .await
    }
}
