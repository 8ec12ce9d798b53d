//! Object storage: the narrow port the catalog and the dump streams need ([`ObjectStore`]),
//! its S3 adapter and an in-memory one for fast tests, the multipart upload of a byte stream
//! with growing parts and SHA-256, and the verified, prefetched download of an artifact.

pub mod download;
pub mod memory;
pub mod s3;
pub mod upload;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;

pub use memory::MemoryStore;
pub use s3::S3Store;

/// One uploaded part of a multipart upload, as its completion needs it back: the part
/// number, its ETag and whatever checksum the store computed for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: Option<String>,
    pub checksum_crc32: Option<String>,
    pub checksum_crc32_c: Option<String>,
    pub checksum_crc64_nvme: Option<String>,
    pub checksum_sha1: Option<String>,
    pub checksum_sha256: Option<String>,
}

/// One bucket of objects: exactly the calls the catalog, the upload and the download make.
/// Every failure is a named [`Error`]; a missing key is `None`, never an error.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The bucket's name, for messages and `s3://` addresses.
    fn bucket(&self) -> &str;

    /// Fails with `BucketNotFound` unless the bucket exists.
    async fn check_bucket(&self) -> Result<(), Error>;

    /// Writes a small object whole.
    async fn put_bytes(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), Error>;

    /// A whole small object with its ETag, or `None` when there is no such key.
    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error>;

    /// A whole small object, or `None` when there is no such key.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_tagged(key).await?.map(|(body, _)| body))
    }

    /// Writes a small object only if it is still what was read: at `etag`, or absent when
    /// `etag` is `None` (conditional writes). `Ok(false)` when another writer came first.
    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: Option<&str>,
    ) -> Result<bool, Error>;

    /// The object's size, or `None` when there is no such key.
    async fn size_of(&self, key: &str) -> Result<Option<u64>, Error>;

    /// Bytes `start..=end` of the object.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, Error>;

    /// Keys under `prefix`, or the common prefixes under it when `delimiter` is set.
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Vec<String>, Error>;

    /// Deletes the object; deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Opens a multipart upload of `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> Result<String, Error>;

    /// Uploads part `part_number` (1-based) of an open upload.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<Part, Error>;

    /// Completes an upload from its parts, in part-number order; the object appears whole.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> Result<(), Error>;

    /// Aborts an upload; its parts are gone and no object appears.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error>;
}
