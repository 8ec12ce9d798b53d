//! An object of the store streamed out with ranged GETs and bounded prefetch, its size and SHA-256 checked
//! against the manifest while it passes.
//!
//! The last `hold_back` bytes are only written to the sink once the whole object's SHA-256 is
//! known to match. A consumer such as `pg_restore --single-transaction` therefore never sees the
//! end of a corrupted archive and cannot commit it: on a mismatch the sink is left open and
//! untouched for the caller to kill its process before closing it.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::model::manifest::Artifact;
use crate::progress::Progress;
use crate::store::ObjectStore;

/// How the object is read.
#[derive(Clone, Copy, Debug)]
pub struct DownloadTuning {
    /// Bytes per ranged GET.
    pub chunk_size: u64,
    /// Ranged GETs in flight ahead of the writer; memory is about `prefetch * chunk_size`.
    pub prefetch: usize,
    /// Bytes kept back until the checksum is confirmed.
    pub hold_back: u64,
}

impl Default for DownloadTuning {
    fn default() -> Self {
        DownloadTuning {
            chunk_size: 4 * 1024 * 1024,
            prefetch: 3,
            hold_back: 1024 * 1024,
        }
    }
}

/// What passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    pub bytes: u64,
    pub sha256: String,
    /// The sink stopped reading before the end (e.g. `pg_restore --list` had read the TOC).
    pub sink_closed_early: bool,
}

/// Streams `artifact` into `sink` (when `Some`), verifying size and SHA-256. On success the
/// sink has been written completely and shut down (set to `None`). On `ChecksumMismatch` the
/// held-back tail was never written and the sink is still open.
pub async fn stream_verified<W: AsyncWrite + Unpin>(
    store: &dyn ObjectStore,
    artifact: &Artifact,
    sink: &mut Option<W>,
    tuning: DownloadTuning,
    progress: &dyn Progress,
) -> Result<Streamed, Error> {
    let key = artifact.key.as_str();
    let size = store
        .size_of(key)
        .await?
        .ok_or_else(|| Error::ArtifactMissing {
            bucket: store.bucket().to_string(),
            key: key.to_string(),
        })?;
    if size != artifact.bytes {
        return Err(Error::SizeMismatch {
            bucket: store.bucket().to_string(),
            key: key.to_string(),
            expected: artifact.bytes,
            actual: size,
        });
    }
    let chunk = tuning.chunk_size.max(1);
    let ranges: Vec<(u64, u64)> = (0..size.div_ceil(chunk))
        .map(|i| (i * chunk, ((i + 1) * chunk).min(size) - 1))
        .collect();
    let mut chunks = futures::stream::iter(ranges)
        .map(|(start, end)| async move {
            let bytes = store.get_range(key, start, end).await?;
            if bytes.len() as u64 != end - start + 1 {
                return Err(Error::Storage {
                    operation: "GetObject",
                    bucket: store.bucket().to_string(),
                    key: key.to_string(),
                    reason: format!(
                        "range {start}-{end} returned {} bytes (object changed while reading?)",
                        bytes.len()
                    ),
                    source: None,
                });
            }
            Ok(bytes)
        })
        .buffered(tuning.prefetch.max(1));

    let mut hasher = Sha256::new();
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut pending_bytes: u64 = 0;
    let mut sink_closed_early = false;
    while let Some(bytes) = chunks.try_next().await? {
        hasher.update(&bytes);
        progress.advance(bytes.len() as u64);
        pending_bytes += bytes.len() as u64;
        pending.push_back(bytes);
        while let Some(front) = pending.front() {
            if pending_bytes - (front.len() as u64) < tuning.hold_back {
                break;
            }
            let front = pending.pop_front().unwrap_or_default();
            pending_bytes -= front.len() as u64;
            write_or_close(sink, &front, &mut sink_closed_early).await;
        }
    }
    let actual = hex::encode(hasher.finalize());
    if actual != artifact.sha256 {
        return Err(Error::ChecksumMismatch {
            bucket: store.bucket().to_string(),
            key: key.to_string(),
            expected: artifact.sha256.clone(),
            actual,
        });
    }
    for bytes in pending {
        write_or_close(sink, &bytes, &mut sink_closed_early).await;
    }
    if let Some(mut w) = sink.take() {
        // A reader that already exited makes shutdown fail; its exit status tells the story.
        let _ = w.shutdown().await;
    }
    Ok(Streamed {
        bytes: size,
        sha256: actual,
        sink_closed_early,
    })
}

/// Writes to the sink; a sink whose reader went away is dropped and remembered, since the
/// reader's own exit status is what reports why.
async fn write_or_close<W: AsyncWrite + Unpin>(
    sink: &mut Option<W>,
    bytes: &[u8],
    closed: &mut bool,
) {
    if let Some(w) = sink.as_mut() {
        if w.write_all(bytes).await.is_err() {
            *sink = None;
            *closed = true;
        }
    }
}
