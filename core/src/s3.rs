//! The narrow S3 port: exactly the calls the catalog, the upload and the download need, with
//! every SDK error turned into a named [`Error`]. Works against AWS and against local
//! S3-compatible endpoints (`AWS_ENDPOINT_URL`, path-style addressing).

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};

use crate::error::Error;

/// Builds an S3 client from the standard AWS configuration; path-style addressing whenever a
/// custom endpoint is configured, since local emulators do not serve virtual-hosted buckets.
pub async fn client_from_env() -> aws_sdk_s3::Client {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    client_for(&shared)
}

/// An S3 client from a loaded configuration, path-style when it names a custom endpoint.
pub fn client_for(shared: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = shared.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

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

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn fail<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, R>,
    ) -> Error
    where
        R: std::fmt::Debug,
    {
        let code = err.as_service_error().and_then(|e| e.code()).unwrap_or("");
        if code == "NoSuchBucket" {
            return Error::BucketNotFound {
                bucket: self.bucket.clone(),
            };
        }
        Error::Storage {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: DisplayErrorContext(&err).to_string(),
        }
    }

    /// Fails with `BucketNotFound` unless the bucket exists.
    pub async fn check_bucket(&self) -> Result<(), Error> {
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

    pub async fn put_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), Error> {
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

    /// A whole small object, or `None` when there is no such key.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_tagged(key).await?.map(|(body, _)| body))
    }

    /// A whole small object with its ETag, or `None` when there is no such key.
    pub async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
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
        let body = out.body.collect().await.map_err(|e| Error::Storage {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some((body.to_vec(), etag)))
    }

    /// Writes a small object only if it is still what was read: at `etag`, or absent when
    /// `etag` is `None` (S3 conditional writes). `Ok(false)` when another writer came first.
    pub async fn put_if_unchanged(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: Option<&str>,
    ) -> Result<bool, Error> {
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
            // 412: the condition failed; 409: a concurrent conditional write is in flight.
            Err(e)
                if matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(412 | 409)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail("PutObject", key, e)),
        }
    }

    /// The object's size, or `None` when there is no such key.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, Error> {
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

    /// Bytes `start..=end` of the object, read once into a buffer of exactly that size (no
    /// second copy, so memory is the range's size per request in flight).
    pub async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, Error> {
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
        while let Some(piece) = body.try_next().await.map_err(|e| Error::Storage {
            operation: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })? {
            buf.extend_from_slice(&piece);
        }
        Ok(buf.freeze())
    }

    /// Keys under `prefix`, or the common prefixes under it when `delimiter` is set.
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Vec<String>, Error> {
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

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("DeleteObject", key, e))?;
        Ok(())
    }

    pub async fn create_multipart(&self, key: &str) -> Result<String, Error> {
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
            })
    }

    /// Uploads one part; the returned [`CompletedPart`] carries its ETag and whatever checksum
    /// the SDK computed, as CompleteMultipartUpload needs them.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, Error> {
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
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
            .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
            .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
            .set_checksum_sha1(out.checksum_sha1().map(str::to_string))
            .set_checksum_sha256(out.checksum_sha256().map(str::to_string))
            .build())
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), Error> {
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

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error> {
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
