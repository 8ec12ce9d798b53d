//! The object store's byte streams on the in-memory store, which keeps S3's rules: a stream
//! uploaded in parts is what S3 accepts (every part but the last at least 5 MiB, completed in
//! order) and reads back verified, size and SHA-256; a damaged, truncated or missing object is
//! refused by name, a corrupted one before the sink sees its end; and what S3 would refuse
//! (parts out of order or too small, an over-long key) the store refuses too. On moto, a
//! conditional write to a key deleted since it was read lost its condition (S3 answers 404).

use std::sync::Arc;

use backstop_core::model::manifest::Artifact;
use backstop_core::progress::Quiet;
use backstop_core::store::download::{stream_verified, DownloadTuning};
use backstop_core::store::upload::{upload_stream, UploadTuning, MIN_PART_SIZE};
use backstop_core::store::{MemoryStore, ObjectStore};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::block_on;
use crate::support::TempFile;

/// `n` bytes that do not repeat in any way a store could take a shortcut on.
fn data(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const TUNING: UploadTuning = UploadTuning {
    first_part_size: MIN_PART_SIZE,
    parts_per_tier: 1000,
    max_in_flight: 3,
};

const DOWNLOAD: DownloadTuning = DownloadTuning {
    chunk_size: 1 << 20,
    prefetch: 2,
    hold_back: 64 << 10,
};

/// Uploads `body` to `key` as the backup does: open, stream, complete.
fn upload(store: &Arc<dyn ObjectStore>, key: &str, body: &[u8]) -> Artifact {
    block_on(async {
        let id = store.create_multipart(key).await?;
        let up = upload_stream(store, key, &id, body, TUNING, &Quiet).await?;
        let parts = up.parts.len() as u32;
        store.complete_multipart(key, &id, up.parts).await?;
        Ok::<_, backstop_core::Error>(Artifact {
            key: key.to_string(),
            bytes: up.bytes,
            sha256: up.sha256,
            parts,
        })
    })
    .unwrap()
}

/// Streams the artifact into a file; the outcome and what the file received.
fn download(
    store: &dyn ObjectStore,
    artifact: &Artifact,
) -> (Result<(), backstop_core::Error>, Vec<u8>) {
    let file = TempFile::new("download");
    let result = block_on(async {
        let mut sink = Some(tokio::fs::File::create(&file.0).await.unwrap());
        let streamed = stream_verified(store, artifact, &mut sink, DOWNLOAD, &Quiet).await?;
        assert!(
            sink.is_none(),
            "a verified sink is written whole and closed"
        );
        assert_eq!(streamed.bytes, artifact.bytes);
        assert_eq!(streamed.sha256, artifact.sha256);
        Ok(())
    });
    (result, std::fs::read(&file.0).unwrap())
}

#[test]
fn a_stream_uploaded_in_parts_is_what_s3_accepts_and_reads_back_verified() {
    let memory = Arc::new(MemoryStore::new("backups"));
    let store: Arc<dyn ObjectStore> = memory.clone();
    let body = data(2 * MIN_PART_SIZE + 3 * 1024 * 1024 + 7);
    let artifact = upload(&store, "backstop/shop/b1/db/shop.dump", &body);
    assert_eq!(artifact.bytes, body.len() as u64);
    assert_eq!(artifact.sha256, hex::encode(Sha256::digest(&body)));
    assert_eq!(artifact.parts, 3, "5 MiB, 5 MiB and the rest");
    assert_eq!(memory.open_uploads(), 0);
    assert_eq!(memory.keys(), std::slice::from_ref(&artifact.key));

    let (result, received) = download(store.as_ref(), &artifact);
    result.unwrap();
    assert_eq!(received, body);

    // An empty stream is one empty part, and an empty object.
    let empty = upload(&store, "backstop/shop/b1/db/empty.dump", &[]);
    assert_eq!((empty.bytes, empty.parts), (0, 1));
    assert_eq!(block_on(store.size_of(&empty.key)).unwrap(), Some(0));
}

#[test]
fn a_damaged_truncated_or_missing_object_is_refused_by_name() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new("backups"));
    let body = data(3 * 1024 * 1024);
    let artifact = upload(&store, "backstop/shop/b1/db/shop.dump", &body);

    // One byte flipped, the size unchanged: only the SHA-256 tells, and the sink never gets
    // the held-back end (a pg_restore reading it could not commit).
    let mut damaged = body.clone();
    damaged[body.len() / 2] ^= 0x5a;
    block_on(store.put_bytes(&artifact.key, damaged, "")).unwrap();
    let (result, received) = download(store.as_ref(), &artifact);
    let err = result.unwrap_err();
    assert_eq!(err.error_type(), "ChecksumMismatch", "{err}");
    assert!(
        err.to_string()
            .contains("s3://backups/backstop/shop/b1/db/shop.dump"),
        "{err}"
    );
    assert!(
        received.len() as u64 <= artifact.bytes - DOWNLOAD.hold_back,
        "{} of {} bytes reached the sink",
        received.len(),
        artifact.bytes
    );

    let mut truncated = body.clone();
    truncated.pop();
    block_on(store.put_bytes(&artifact.key, truncated, "")).unwrap();
    let err = download(store.as_ref(), &artifact).0.unwrap_err();
    assert_eq!(err.error_type(), "SizeMismatch", "{err}");

    block_on(store.delete(&artifact.key)).unwrap();
    let err = download(store.as_ref(), &artifact).0.unwrap_err();
    assert_eq!(err.error_type(), "ArtifactMissing", "{err}");
}

#[test]
fn what_s3_refuses_the_memory_store_refuses() {
    let store = MemoryStore::new("backups");
    let key = "backstop/shop/b1/db/shop.dump";
    let big = Bytes::from(data(MIN_PART_SIZE));
    let small = Bytes::from_static(b"tail");
    block_on(async {
        let id = store.create_multipart(key).await.unwrap();
        let p1 = store.upload_part(key, &id, 1, small.clone()).await.unwrap();
        let p2 = store.upload_part(key, &id, 2, small.clone()).await.unwrap();
        // Every part but the last must be at least 5 MiB.
        let err = store
            .complete_multipart(key, &id, vec![p1.clone(), p2.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("EntityTooSmall"), "{err}");
        // Parts are completed in ascending order.
        let p1 = store.upload_part(key, &id, 1, big.clone()).await.unwrap();
        let err = store
            .complete_multipart(key, &id, vec![p2.clone(), p1.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("InvalidPartOrder"), "{err}");
        // Part numbers are 1 to 10,000.
        let err = store
            .upload_part(key, &id, 0, small.clone())
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "StorageError", "{err}");
        assert_eq!(
            store.size_of(key).await.unwrap(),
            None,
            "no object until completed"
        );
        store
            .complete_multipart(key, &id, vec![p1, p2])
            .await
            .unwrap();
        assert_eq!(
            store.size_of(key).await.unwrap(),
            Some((MIN_PART_SIZE + 4) as u64)
        );
        // An aborted upload leaves nothing, and is gone.
        let id = store.create_multipart("backstop/x").await.unwrap();
        store.abort_multipart("backstop/x", &id).await.unwrap();
        assert_eq!(store.open_uploads(), 0);
        assert!(store.abort_multipart("backstop/x", &id).await.is_err());
        // A key is at most 1,024 bytes.
        let long = format!("backstop/{}", "k".repeat(1100));
        let err = store.put_bytes(&long, Vec::new(), "").await.unwrap_err();
        assert!(err.to_string().contains("KeyTooLongError"), "{err}");
        // A conditional write loses to the writer that came first.
        assert!(store
            .put_if_unchanged("m", b"1".to_vec(), "", None)
            .await
            .unwrap());
        assert!(!store
            .put_if_unchanged("m", b"2".to_vec(), "", None)
            .await
            .unwrap());
        assert_eq!(store.get_bytes("m").await.unwrap().unwrap(), b"1");
    });
}

#[test]
fn a_conditional_write_to_a_key_deleted_meanwhile_lost_its_condition_not_the_store() {
    use backstop_core::store::s3::S3Store;
    let bed = crate::support::Bed::new().moto().build();
    let store = S3Store::new(bed.s3(), &bed.bucket);
    let key = "backstop/shop/20261125T150000Z-0badc0de/manifest.json";
    let rt = &bed.rt;
    assert!(rt
        .block_on(store.put_if_unchanged(key, b"{}".to_vec(), "application/json", None))
        .unwrap());
    let (_, etag) = rt.block_on(store.get_tagged(key)).unwrap().unwrap();
    rt.block_on(bed.s3().delete_object().bucket(&bed.bucket).key(key).send())
        .unwrap();
    // S3 answers If-Match on a missing key with 404: the condition failed, as with 412, and
    // the caller reads again (and finds nothing) rather than failing with StorageError.
    let written = rt.block_on(store.put_if_unchanged(
        key,
        b"{\"a\":1}".to_vec(),
        "application/json",
        Some(&etag),
    ));
    assert!(matches!(written, Ok(false)), "{written:?}");
}
