//! Deleting what has expired — Files API files after their 48 hours, outputs past the retention
//! window, idempotency records past their lifetime, the shared queue's settled jobs — and the
//! partial uploads of the Files API.

use std::path::PathBuf;

use plantain_store::now;

use crate::Service;
use crate::error::ServiceError;

/// What one housekeeping pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: usize,
    pub output_blobs: usize,
    pub idempotency_records: usize,
    /// Shared-queue jobs deleted (settled longer ago than `[storage] job_retention_secs`).
    pub jobs: usize,
    /// Shared-queue jobs failed because no worker took them in `[storage] job_unclaimed_secs`.
    pub unclaimed_jobs: usize,
}

impl Service {
    /// One pass: expired files always, idempotency records past their lifetime, and outputs
    /// older than the retention window when one is set.
    pub async fn housekeeping(&self) -> Result<Swept, ServiceError> {
        let files = self.purge_expired_files().await?;
        let idempotency_records = self.stores.meta.purge_idempotency(now()).await?;
        let days = self.config.retention_days;
        let output_blobs = if days > 0 { self.apply_retention(days).await? } else { 0 };
        let (unclaimed_jobs, jobs) = self.sweep_shared_queue().await?;
        Ok(Swept { files, output_blobs, idempotency_records, jobs, unclaimed_jobs })
    }

    /// With the shared queue: fails the jobs queued longer than `job_unclaimed_secs` (those an
    /// API node waits on it fails itself; these lost theirs) and deletes jobs settled longer ago
    /// than `job_retention_secs`, with their events. Returns (failed, deleted).
    async fn sweep_shared_queue(&self) -> Result<(usize, usize), ServiceError> {
        let Some(store) = &self.stores.queue else { return Ok((0, 0)) };
        let st = &self.config.storage;
        let t = now();
        let why = crate::shared::unclaimed_error("its model", st.job_unclaimed_secs);
        let (failed, deleted) = store.sweep_jobs(t - st.job_unclaimed_secs as i64, t - st.job_retention_secs as i64, &why).await?;
        Ok((failed as usize, deleted as usize))
    }

    /// Deletes files (uploads, finished or not, and batch results) whose lifetime is over:
    /// their records, partial uploads and the blobs nothing else uses. Returns how many files.
    pub async fn purge_expired_files(&self) -> Result<usize, ServiceError> {
        let expired = self.stores.meta.expired_files(now()).await?;
        for f in &expired {
            if let Some(h) = self.stores.meta.delete_file(&f.name).await? {
                self.stores.blobs.delete(&h).await?;
            }
            if let Some(u) = &f.upload_id {
                self.remove_upload(u).await?;
            }
        }
        Ok(expired.len())
    }

    /// Deletes outputs older than `days` and their now-unused blobs; returns how many blobs.
    pub async fn apply_retention(&self, days: u32) -> Result<usize, ServiceError> {
        let hashes = self.stores.meta.delete_artefacts_before(now() - i64::from(days) * 86_400).await?;
        self.stores.delete_blobs(&hashes).await?;
        Ok(hashes.len())
    }

    fn upload_path(&self, upload_id: &str) -> Result<PathBuf, ServiceError> {
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::invalid("upload_id is missing or malformed"));
        }
        Ok(self.config.data_dir.join("uploads").join(upload_id))
    }

    /// Appends bytes (starting at `offset`) to a resumable upload: in its partial file, or in
    /// PostgreSQL when nodes share it (the next chunk may reach another node). Returns everything
    /// received so far when `finish` is set.
    pub async fn append_upload(&self, upload_id: &str, offset: i64, bytes: Vec<u8>, finish: bool) -> Result<Option<Vec<u8>>, ServiceError> {
        let path = self.upload_path(upload_id)?;
        if let Some(shared) = &self.stores.queue {
            shared.put_upload_part(upload_id, offset, &bytes).await?;
            return Ok(if finish { Some(shared.upload_bytes(upload_id).await?) } else { None });
        }
        let io = |e: std::io::Error| ServiceError::internal(format!("upload: {e}"));
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            if finish { std::fs::read(&path).map(Some).map_err(io) } else { Ok(None) }
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?
    }

    /// Deletes a resumable upload's partial file (absent is fine).
    pub async fn remove_upload(&self, upload_id: &str) -> Result<(), ServiceError> {
        let path = self.upload_path(upload_id)?;
        if let Some(shared) = &self.stores.queue {
            shared.delete_upload_parts(upload_id).await?;
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServiceError::internal(format!("{}: {e}", path.display()))),
        }
    }
}
