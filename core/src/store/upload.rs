//! A byte stream into a multipart upload of the object store.
//!
//! Memory stays flat: one part is read into a buffer of exactly the part's size, at most
//! `max_in_flight` parts are uploading at once, and reading waits for a free slot. Part sizes
//! grow (doubling every `parts_per_tier` parts, up to S3's 5 GiB part limit) so one object can
//! reach S3's 5 TiB object limit within 10,000 parts. The SHA-256 of the whole stream is
//! computed while it passes. The caller owns the upload id: it creates the upload, and on any
//! error (or a cancel that drops this future) it aborts it.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::progress::Progress;
use crate::store::{ObjectStore, Part};

/// S3's limits.
pub const MAX_PARTS: u32 = 10_000;
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// How the stream is cut into parts.
#[derive(Clone, Copy, Debug)]
pub struct UploadTuning {
    /// Size of the first parts (at least 5 MiB).
    pub first_part_size: usize,
    /// The part size doubles after every this many parts.
    pub parts_per_tier: u32,
    /// Parts uploading at once; memory is about `(max_in_flight + 1) * part size`.
    pub max_in_flight: usize,
}

impl Default for UploadTuning {
    fn default() -> Self {
        UploadTuning {
            first_part_size: 8 * 1024 * 1024,
            parts_per_tier: 1000,
            max_in_flight: 2,
        }
    }
}

impl UploadTuning {
    /// The size of part `n` (1-based).
    pub fn part_size(&self, n: u32) -> usize {
        let tier = (n.saturating_sub(1) / self.parts_per_tier.max(1)).min(30);
        self.first_part_size
            .max(MIN_PART_SIZE)
            .saturating_mul(1usize << tier)
            .min(MAX_PART_SIZE)
    }

    /// The largest object these settings can upload within S3's part limit.
    pub fn capacity(&self) -> u64 {
        (1..=MAX_PARTS).map(|n| self.part_size(n) as u64).sum()
    }
}

/// What was uploaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Uploaded {
    pub bytes: u64,
    pub sha256: String,
    pub parts: Vec<Part>,
}

/// Reads `reader` to its end into the open multipart upload `upload_id` of `key`.
pub async fn upload_stream<R: AsyncRead + Unpin>(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    mut reader: R,
    tuning: UploadTuning,
    progress: &dyn Progress,
) -> Result<Uploaded, Error> {
    let slots = Arc::new(Semaphore::new(tuning.max_in_flight.max(1)));
    let mut uploads: JoinSet<Result<Part, Error>> = JoinSet::new();
    let mut done: Vec<Part> = Vec::new();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut part_number: u32 = 0;
    let read_error = |e: std::io::Error| Error::DumpFailed(format!("reading the dump stream: {e}"));

    loop {
        let size = tuning.part_size(part_number + 1);
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let room = size - buf.len();
            let n = reader
                .read_buf(&mut (&mut buf).limit(room))
                .await
                .map_err(read_error)?;
            if n == 0 {
                break;
            }
        }
        let eof = buf.len() < size;
        // Always upload at least one part, so an upload is never completed empty.
        if buf.is_empty() && part_number > 0 {
            break;
        }
        part_number += 1;
        if part_number > MAX_PARTS {
            return Err(Error::DumpFailed(format!(
                "the dump exceeds {} bytes, the most one S3 object can hold with these part sizes",
                tuning.capacity()
            )));
        }
        hasher.update(&buf);
        total += buf.len() as u64;
        progress.advance(buf.len() as u64);

        // Collect finished parts, failing fast on the first error.
        while let Some(joined) = uploads.try_join_next() {
            done.push(joined_part(joined)?);
        }
        let permit =
            loop {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) => match uploads.join_next().await {
                        Some(joined) => done.push(joined_part(joined)?),
                        None => {
                            break slots.clone().acquire_owned().await.map_err(|_| {
                                Error::DumpFailed("upload slots closed".to_string())
                            })?
                        }
                    },
                }
            };
        let (store, key, upload_id, body) = (
            store.clone(),
            key.to_string(),
            upload_id.to_string(),
            buf.freeze(),
        );
        uploads.spawn(async move {
            let _permit = permit;
            store
                .upload_part(&key, &upload_id, part_number as i32, body)
                .await
        });
        if eof {
            break;
        }
    }
    while let Some(joined) = uploads.join_next().await {
        done.push(joined_part(joined)?);
    }
    done.sort_by_key(|p| p.number);
    Ok(Uploaded {
        bytes: total,
        sha256: hex::encode(hasher.finalize()),
        parts: done,
    })
}

fn joined_part(joined: Result<Result<Part, Error>, tokio::task::JoinError>) -> Result<Part, Error> {
    joined.map_err(|e| Error::DumpFailed(format!("part upload task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_grow_to_reach_the_s3_object_limit() {
        let t = UploadTuning::default();
        assert_eq!(t.part_size(1), 8 << 20);
        assert_eq!(t.part_size(1000), 8 << 20);
        assert_eq!(t.part_size(1001), 16 << 20);
        assert_eq!(t.part_size(MAX_PARTS), 4096 << 20);
        let five_tib = 5u64 << 40;
        assert!(t.capacity() >= five_tib, "capacity {}", t.capacity());
        // A fixed 5 MiB part would stop near 48 GiB.
        let fixed = UploadTuning {
            first_part_size: MIN_PART_SIZE,
            parts_per_tier: u32::MAX,
            max_in_flight: 1,
        };
        assert!(fixed.capacity() < 49 << 30);
        // Sizes below S3's minimum are raised to it, and no part exceeds the maximum.
        let tiny = UploadTuning {
            first_part_size: 1,
            parts_per_tier: 1,
            max_in_flight: 1,
        };
        assert_eq!(tiny.part_size(1), MIN_PART_SIZE);
        assert_eq!(tiny.part_size(MAX_PARTS), MAX_PART_SIZE);
    }
}
