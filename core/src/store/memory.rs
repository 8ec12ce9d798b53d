//! The in-memory adapter of the object store, for fast tests of the logic above it with no
//! server. It keeps S3's rules where the logic could break them: keys of at most 1,024 bytes,
//! conditional writes by ETag (or absence), part numbers 1–10,000, every part but the last at
//! least 5 MiB, parts completed in ascending order, and no object until an upload completes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::store::{ObjectStore, Part};

/// S3's smallest part, the last one excepted.
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3's longest key, in bytes.
const MAX_KEY: usize = 1024;

/// One bucket in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bucket: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// key → (body, ETag)
    objects: BTreeMap<String, (Vec<u8>, String)>,
    /// upload id → (key, part number → body)
    uploads: BTreeMap<String, (String, BTreeMap<i32, Bytes>)>,
    next_etag: u64,
}

impl State {
    fn etag(&mut self) -> String {
        self.next_etag += 1;
        format!("\"{:016x}\"", self.next_etag)
    }
}

impl MemoryStore {
    pub fn new(bucket: impl Into<String>) -> Self {
        MemoryStore {
            bucket: bucket.into(),
            state: Mutex::default(),
        }
    }

    /// Every key held, in order (for tests).
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Uploads begun and neither completed nor aborted (for tests).
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent data behind: every
        // change below is made in one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, operation: &'static str, key: &str, code: &str, why: &str) -> Error {
        Error::Storage {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: format!("{code}: {why}"),
            source: None,
        }
    }

    fn check_key(&self, operation: &'static str, key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(self.refuse(
                operation,
                key,
                "KeyTooLongError",
                "a key is 1 to 1,024 bytes",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn check_bucket(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn put_bytes(&self, key: &str, body: Vec<u8>, _content_type: &str) -> Result<(), Error> {
        self.check_key("PutObject", key)?;
        let mut s = self.lock();
        let etag = s.etag();
        s.objects.insert(key.to_string(), (body, etag));
        Ok(())
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        Ok(self.lock().objects.get(key).cloned())
    }

    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
        etag: Option<&str>,
    ) -> Result<bool, Error> {
        self.check_key("PutObject", key)?;
        let mut s = self.lock();
        let current = s.objects.get(key).map(|(_, t)| t.as_str());
        if current != etag {
            return Ok(false);
        }
        let etag = s.etag();
        s.objects.insert(key.to_string(), (body, etag));
        Ok(true)
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>, Error> {
        Ok(self.lock().objects.get(key).map(|(b, _)| b.len() as u64))
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, Error> {
        let s = self.lock();
        let (body, _) = s
            .objects
            .get(key)
            .ok_or_else(|| self.refuse("GetObject", key, "NoSuchKey", "no such key"))?;
        let len = body.len() as u64;
        if start > end || start >= len {
            return Err(self.refuse(
                "GetObject",
                key,
                "InvalidRange",
                "the range is not satisfiable",
            ));
        }
        let (a, b) = (start as usize, end.min(len - 1) as usize);
        Ok(Bytes::copy_from_slice(&body[a..=b]))
    }

    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Vec<String>, Error> {
        let s = self.lock();
        let keys = s.objects.keys().filter(|k| k.starts_with(prefix));
        let Some(d) = delimiter else {
            return Ok(keys.cloned().collect());
        };
        let mut prefixes: Vec<String> = Vec::new();
        for k in keys {
            if let Some(i) = k[prefix.len()..].find(d) {
                let p = k[..prefix.len() + i + d.len()].to_string();
                if prefixes.last() != Some(&p) {
                    prefixes.push(p);
                }
            }
        }
        Ok(prefixes)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, Error> {
        self.check_key("CreateMultipartUpload", key)?;
        let mut s = self.lock();
        let id = format!("upload-{}", s.etag().trim_matches('"'));
        s.uploads
            .insert(id.clone(), (key.to_string(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<Part, Error> {
        if !(1..=10_000).contains(&part_number) {
            return Err(self.refuse(
                "UploadPart",
                key,
                "InvalidArgument",
                "part numbers are 1 to 10,000",
            ));
        }
        let mut s = self.lock();
        let etag = s.etag();
        let (upload_key, parts) = s
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| self.refuse("UploadPart", key, "NoSuchUpload", "no such upload"))?;
        if upload_key != key {
            return Err(self.refuse(
                "UploadPart",
                key,
                "NoSuchUpload",
                "the upload is of another key",
            ));
        }
        parts.insert(part_number, body);
        Ok(Part {
            number: part_number,
            etag: Some(etag),
            ..Part::default()
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
    ) -> Result<(), Error> {
        let mut s = self.lock();
        let (upload_key, uploaded) = s.uploads.get(upload_id).ok_or_else(|| {
            self.refuse(
                "CompleteMultipartUpload",
                key,
                "NoSuchUpload",
                "no such upload",
            )
        })?;
        if upload_key != key || parts.is_empty() {
            return Err(self.refuse(
                "CompleteMultipartUpload",
                key,
                "MalformedXML",
                "no parts, or the upload is of another key",
            ));
        }
        if parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(self.refuse(
                "CompleteMultipartUpload",
                key,
                "InvalidPartOrder",
                "parts must be listed in ascending order",
            ));
        }
        let mut body = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let data = uploaded.get(&p.number).ok_or_else(|| {
                self.refuse(
                    "CompleteMultipartUpload",
                    key,
                    "InvalidPart",
                    "a listed part was not uploaded",
                )
            })?;
            if i + 1 < parts.len() && data.len() < MIN_PART {
                return Err(self.refuse(
                    "CompleteMultipartUpload",
                    key,
                    "EntityTooSmall",
                    "every part but the last must be at least 5 MiB",
                ));
            }
            body.extend_from_slice(data);
        }
        s.uploads.remove(upload_id);
        let etag = s.etag();
        s.objects.insert(key.to_string(), (body, etag));
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let mut s = self.lock();
        match s.uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(self.refuse(
                "AbortMultipartUpload",
                key,
                "NoSuchUpload",
                "no such upload",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_writes_and_multipart_rules_follow_s3() {
        let m = MemoryStore::new("b");
        assert!(m
            .put_if_unchanged("k", b"1".to_vec(), "", None)
            .await
            .unwrap());
        assert!(!m
            .put_if_unchanged("k", b"2".to_vec(), "", None)
            .await
            .unwrap());
        let (_, tag) = m.get_tagged("k").await.unwrap().unwrap();
        assert!(m
            .put_if_unchanged("k", b"3".to_vec(), "", Some(&tag))
            .await
            .unwrap());
        assert!(!m
            .put_if_unchanged("k", b"4".to_vec(), "", Some(&tag))
            .await
            .unwrap());
        assert_eq!(m.get_bytes("k").await.unwrap().unwrap(), b"3");

        let id = m.create_multipart("big").await.unwrap();
        let small = m
            .upload_part("big", &id, 1, Bytes::from_static(b"ab"))
            .await
            .unwrap();
        let last = m
            .upload_part("big", &id, 2, Bytes::from_static(b"cd"))
            .await
            .unwrap();
        let err = m
            .complete_multipart("big", &id, vec![small.clone(), last.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("EntityTooSmall"), "{err}");
        let err = m
            .complete_multipart("big", &id, vec![last.clone(), small.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("InvalidPartOrder"), "{err}");
        assert_eq!(m.size_of("big").await.unwrap(), None);
        m.complete_multipart("big", &id, vec![last]).await.unwrap();
        assert_eq!(
            m.get_range("big", 0, 10).await.unwrap(),
            Bytes::from_static(b"cd")
        );
        assert_eq!(m.open_uploads(), 0);
        assert!(m.upload_part("big", &id, 3, Bytes::new()).await.is_err());
        assert!(m
            .put_bytes(&"k".repeat(1025), Vec::new(), "")
            .await
            .is_err());
        assert_eq!(m.list("", Some("/")).await.unwrap(), Vec::<String>::new());
        m.put_bytes("p/a/1", Vec::new(), "").await.unwrap();
        m.put_bytes("p/a/2", Vec::new(), "").await.unwrap();
        m.put_bytes("p/b/1", Vec::new(), "").await.unwrap();
        assert_eq!(m.list("p/", Some("/")).await.unwrap(), ["p/a/", "p/b/"]);
        assert_eq!(m.list("p/a/", None).await.unwrap(), ["p/a/1", "p/a/2"]);
    }
}
