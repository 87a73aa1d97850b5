//! A streaming writer of one new object: a single put for small objects, a multipart upload for
//! large ones, with bounded memory either way.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::{block_on, store_error};
use crate::error::{Error, Result};

/// Size of each part of a multipart upload (S3 wants at least 5 MiB but the last).
pub const PART_LEN: usize = 8 * 1024 * 1024;
/// Parts uploading at once; with the part being filled, the writer holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_LEN` bytes.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Writes one new object. Bytes are buffered up to [`PART_LEN`]; an object that stays smaller is
/// written by one put in [`finish`](Self::finish); a larger one becomes a multipart upload whose
/// parts go out as they fill, at most [`PARTS_IN_FLIGHT`] at a time. The object appears only when
/// `finish` completes; an `ObjectWriter` dropped before that aborts its upload, and a process
/// killed before that leaves no object (S3 keeps the parts of an incomplete upload invisible; a
/// local directory keeps a staging file that `vacuum` removes).
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    what: String,
    local: Option<PathBuf>,
    buf: Vec<u8>,
    upload: Option<WriteMultipart>,
    written: u64,
    failed: bool,
}

impl ObjectWriter {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: ObjPath, what: String, local: Option<PathBuf>) -> Self {
        ObjectWriter {
            store,
            path,
            what,
            local,
            buf: Vec::new(),
            upload: None,
            written: 0,
            failed: false,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn send_buffer(&mut self) -> Result<()> {
        let handle = super::runtime::handle()?;
        let mut upload = match self.upload.take() {
            Some(u) => u,
            None => {
                let (store, path, what) = (self.store.clone(), self.path.clone(), self.what.clone());
                let up = block_on(async move {
                    store
                        .put_multipart(&path)
                        .await
                        .map_err(|e| store_error(format!("starting the upload of {what}"), e))
                })?;
                WriteMultipart::new_with_chunk_size(up, PART_LEN)
            }
        };
        let what = self.what.clone();
        let waited = block_on(async move {
            upload
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| store_error(format!("uploading {what}"), e))
                .map(|()| upload)
        });
        let mut upload = match waited {
            Ok(u) => u,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        {
            // `put` spawns the part's upload on the IO runtime.
            let _enter = handle.enter();
            upload.put(Bytes::from(std::mem::take(&mut self.buf)));
        }
        self.upload = Some(upload);
        Ok(())
    }

    /// Publishes the object: the last part and the upload's completion, or the single put.
    pub fn finish(mut self) -> Result<u64> {
        if self.failed {
            return Err(Error::Storage {
                context: format!("writing {}", self.what),
                message: "an earlier write failed".into(),
                retriable: true,
            });
        }
        let what = self.what.clone();
        match self.upload.take() {
            Some(mut upload) => {
                let handle = super::runtime::handle()?;
                {
                    let _enter = handle.enter();
                    upload.put(Bytes::from(std::mem::take(&mut self.buf)));
                }
                block_on(async move {
                    upload
                        .finish()
                        .await
                        .map_err(|e| store_error(format!("completing the upload of {what}"), e))
                })?;
            }
            None => {
                let (store, path) = (self.store.clone(), self.path.clone());
                let bytes = Bytes::from(std::mem::take(&mut self.buf));
                block_on(async move {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    match store.put_opts(&path, PutPayload::from(bytes.clone()), opts).await {
                        Ok(_) => Ok(()),
                        Err(object_store::Error::NotImplemented { .. }) => store
                            .put(&path, PutPayload::from(bytes))
                            .await
                            .map(|_| ())
                            .map_err(|e| store_error(format!("writing {what}"), e)),
                        Err(e) => Err(store_error(format!("writing {what}"), e)),
                    }
                })?;
            }
        }
        if let Some(p) = &self.local {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", p.display()), e))?;
            if let Some(dir) = p.parent() {
                crate::fsutil::sync_dir(dir)?;
            }
        }
        Ok(self.written)
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.failed {
            return Err(std::io::Error::other(format!(
                "an earlier write to {} failed",
                self.what
            )));
        }
        let n = data.len().min(PART_LEN - self.buf.len());
        if self.buf.capacity() == 0 {
            self.buf.reserve(PART_LEN.min(1 << 20));
        }
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == PART_LEN {
            self.send_buffer().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Unfinished: abort, best effort (the parts stay invisible either way).
            let _ = block_on(async move {
                let _ = upload.abort().await;
                Ok(())
            });
        }
    }
}
