//! The S3 adapter of the object store: exactly the calls the catalog, the upload and the
//! download need, with every SDK error turned into a named [`Error`] that keeps it as its
//! source. Works against AWS and against local S3-compatible endpoints (`AWS_ENDPOINT_URL`,
//! path-style addressing: see [`crate::aws::s3_client`]).

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};

use crate::aws::permissions;
use crate::aws::Failure;
use crate::error::Error;
use crate::store::{ObjectStore, Part};

/// One bucket.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
        }
    }

    fn fail<E, R>(&self, operation: &'static str, key: &str, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let failure = Failure::of(err);
        if failure.code == "NoSuchBucket" {
            return Error::BucketNotFound {
                bucket: self.bucket.clone(),
            };
        }
        Error::Storage {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: format!("{}: {}", failure.code, failure.message),
            source: Some(failure.source),
        }
    }

    /// A failure reading a response body.
    fn body_failed(
        &self,
        operation: &'static str,
        key: &str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Storage {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn check_bucket(&self) -> Result<(), Error> {
        permissions::check("s3:ListBucket")?;
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let not_found = e
                    .raw_response()
                    .map(|r| r.status().as_u16() == 404)
                    .unwrap_or(false)
                    || e.as_service_error()
                        .map(|s| s.is_not_found())
                        .unwrap_or(false);
                if not_found {
                    Err(Error::BucketNotFound {
                        bucket: self.bucket.clone(),
                    })
                } else {
                    Err(self.fail("HeadBucket", "", e))
                }
            }
        }
    }

    async fn put_bytes(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), Error> {
        permissions::check("s3:PutObject")?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.fail("PutObject", key, e))?;
        Ok(())
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        permissions::check("s3:GetObject")?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .map(|s| s.is_no_such_key())
                    .unwrap_or(false) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.fail("GetObject", key, e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.body_failed("GetObject", key, e))?;
        Ok(Some((body.to_vec(), etag)))
    }

    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: Option<&str>,
    ) -> Result<bool, Error> {
        permissions::check("s3:PutObject")?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        let req = match etag {
            Some(tag) => req.if_match(tag),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            // 412: the condition failed; 409: a concurrent conditional write is in flight; 404
            // to If-Match: the object was deleted since it was read, so its condition failed too.
            Err(e)
                if matches!(
                    (e.raw_response().map(|r| r.status().as_u16()), etag),
                    (Some(412 | 409), _) | (Some(404), Some(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("PutObject", key, e)),
        }
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>, Error> {
        permissions::check("s3:GetObject")?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e)
                if e.as_service_error()
                    .map(|s| s.is_not_found())
                    .unwrap_or(false) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("HeadObject", key, e)),
        }
    }

    /// Read once into a buffer of exactly the range's size (no second copy, so memory is the
    /// range's size per request in flight).
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, Error> {
        permissions::check("s3:GetObject")?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| self.fail("GetObject", key, e))?;
        let expected = usize::try_from(end - start + 1).unwrap_or(usize::MAX);
        let mut buf = BytesMut::with_capacity(expected.min(64 << 20));
        let mut body = out.body;
        while let Some(piece) = body
            .try_next()
            .await
            .map_err(|e| self.body_failed("GetObject", key, e))?
        {
            buf.extend_from_slice(&piece);
        }
        Ok(buf.freeze())
    }

    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Vec<String>, Error> {
        permissions::check("s3:ListBucket")?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail("ListObjectsV2", prefix, e))?;
            if delimiter.is_some() {
                out.extend(
                    page.common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix().map(str::to_string)),
                );
            } else {
                out.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        permissions::check("s3:DeleteObject")?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("DeleteObject", key, e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, Error> {
        permissions::check("s3:PutObject")?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| self.fail("CreateMultipartUpload", key, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::Storage {
                operation: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.to_string(),
                reason: "no upload id in the response".to_string(),
                source: None,
            })
    }

    /// The returned part carries its ETag and whatever checksum the SDK computed, as
    /// CompleteMultipartUpload needs them.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<Part, Error> {
        permissions::check("s3:PutObject")?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.fail("UploadPart", key, e))?;
        Ok(Part {
            number: part_number,
            etag: out.e_tag().map(str::to_string),
            checksum_crc32: out.checksum_crc32().map(str::to_string),
            checksum_crc32_c: out.checksum_crc32_c().map(str::to_string),
            checksum_crc64_nvme: out.checksum_crc64_nvme().map(str::to_string),
            checksum_sha1: out.checksum_sha1().map(str::to_string),
            checksum_sha256: out.checksum_sha256().map(str::to_string),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> Result<(), Error> {
        permissions::check("s3:PutObject")?;
        let parts: Vec<CompletedPart> = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .set_e_tag(p.etag)
                    .set_checksum_crc32(p.checksum_crc32)
                    .set_checksum_crc32_c(p.checksum_crc32_c)
                    .set_checksum_crc64_nvme(p.checksum_crc64_nvme)
                    .set_checksum_sha1(p.checksum_sha1)
                    .set_checksum_sha256(p.checksum_sha256)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        permissions::check("s3:AbortMultipartUpload")?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.fail("AbortMultipartUpload", key, e))?;
        Ok(())
    }
}
