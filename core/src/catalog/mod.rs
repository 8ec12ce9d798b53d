//! The backup catalog in an object store: where each backup's objects live,
//! `<prefix>/<application>/<backup-id>/manifest.json` beside the dump objects and the incident
//! and drill reports; reading, listing and finding manifests; and updating one manifest safely
//! while the targets of one backup write their parts concurrently. A backup is good only when
//! its manifest says `completed`; the manifest is written last. Beside them,
//! `<prefix>/_index/pipeline-executions/<id>.json` names the verified backup of each
//! CodePipeline execution, so guard finds it with one read.

mod incidents;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::manifest::{check_segment, BackupState, Manifest, Purpose, MANIFEST_FORMAT};
use crate::model::run::RunDocument;
use crate::store::ObjectStore;

/// The prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "backstop";

/// Where backups of one bucket live.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
}

impl Catalog {
    /// The catalog under `prefix` in `store`; a prefix that is not key segments of letters,
    /// digits, `-`, `_` or `.` is `InvalidInput`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, Error> {
        Self::check_prefix(prefix)?;
        Ok(Catalog {
            store,
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// Checks a catalog prefix: key segments of letters, digits, `-`, `_` or `.`.
    pub fn check_prefix(prefix: &str) -> Result<(), Error> {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty()
            || prefix
                .split('/')
                .any(|s| check_segment("prefix", s).is_err())
        {
            return Err(Error::InvalidInput(format!(
                "prefix {prefix:?} must be non-empty segments of letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(())
    }

    pub fn backup_dir(&self, application: &str, backup_id: &str) -> String {
        format!("{}/{}/{}", self.prefix, application, backup_id)
    }

    pub fn manifest_key(&self, application: &str, backup_id: &str) -> String {
        format!("{}/manifest.json", self.backup_dir(application, backup_id))
    }

    pub fn dump_key(&self, application: &str, backup_id: &str, database: &str) -> String {
        let safe: String = database
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{}/db/{}.dump",
            self.backup_dir(application, backup_id),
            safe
        )
    }

    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), Error> {
        let key = self.manifest_key(&manifest.application, &manifest.backup_id);
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::InvalidInput(format!("manifest cannot be serialised: {e}")))?;
        self.store.put_bytes(&key, body, "application/json").await
    }

    /// Reads, changes and writes a manifest so that concurrent writers (the targets of one
    /// backup, backed up in parallel) never lose each other's parts: the write is conditional
    /// on the object being unchanged since the read, and the change is retried on a conflict.
    /// `change` gets the current manifest (`None` when there is none yet).
    pub async fn update_manifest(
        &self,
        application: &str,
        backup_id: &str,
        mut change: impl FnMut(Option<Manifest>) -> Result<Manifest, Error>,
    ) -> Result<Manifest, Error> {
        let key = self.manifest_key(application, backup_id);
        const ATTEMPTS: u32 = 20;
        for attempt in 1..=ATTEMPTS {
            let (current, etag) = match self.store.get_tagged(&key).await? {
                Some((body, etag)) => (Some(self.parse(&key, &body)?), Some(etag)),
                None => (None, None),
            };
            let manifest = change(current)?;
            let body = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| Error::InvalidInput(format!("manifest cannot be serialised: {e}")))?;
            if self
                .store
                .put_if_unchanged(&key, body, "application/json", etag.as_deref())
                .await?
            {
                return Ok(manifest);
            }
            tracing::debug!(key, attempt, "manifest changed concurrently; merging again");
            let jitter = rand::random::<u64>() % (20 * u64::from(attempt));
            tokio::time::sleep(std::time::Duration::from_millis(10 + jitter)).await;
        }
        Err(Error::Storage {
            operation: "PutObject",
            bucket: self.store.bucket().to_string(),
            key,
            reason: format!("the manifest kept changing under {ATTEMPTS} attempts to update it"),
            source: None,
        })
    }

    /// Changes an existing manifest (as [`Catalog::update_manifest`]); `BackupNotFound` when
    /// there is none.
    pub async fn amend_manifest(
        &self,
        application: &str,
        backup_id: &str,
        change: impl Fn(&mut Manifest),
    ) -> Result<Manifest, Error> {
        self.update_manifest(application, backup_id, |current| {
            let mut m = current.ok_or_else(|| self.not_found(backup_id))?;
            change(&mut m);
            Ok(m)
        })
        .await
    }

    /// `BackupNotFound` for `backup_id` in this catalog.
    pub fn not_found(&self, backup_id: &str) -> Error {
        Error::BackupNotFound {
            bucket: self.store.bucket().to_string(),
            prefix: self.prefix.clone(),
            backup_id: backup_id.to_string(),
        }
    }

    /// The manifest of a backup of a known application; `BackupNotFound` when there is none.
    pub async fn manifest(&self, application: &str, backup_id: &str) -> Result<Manifest, Error> {
        self.read_manifest(application, backup_id)
            .await?
            .ok_or_else(|| self.not_found(backup_id))
    }

    /// The manifest of a backup of a known application, if it exists.
    pub async fn read_manifest(
        &self,
        application: &str,
        backup_id: &str,
    ) -> Result<Option<Manifest>, Error> {
        let key = self.manifest_key(application, backup_id);
        match self.store.get_bytes(&key).await? {
            Some(body) => self.parse(&key, &body).map(Some),
            None => Ok(None),
        }
    }

    fn parse(&self, key: &str, body: &[u8]) -> Result<Manifest, Error> {
        let malformed = |reason: String| Error::ManifestMalformed {
            bucket: self.store.bucket().to_string(),
            key: key.to_string(),
            reason,
        };
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        if v.format_version != MANIFEST_FORMAT {
            return Err(malformed(format!(
                "format_version {} is not supported (this build reads {MANIFEST_FORMAT})",
                v.format_version
            )));
        }
        serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))
    }

    /// The applications that have backups under the prefix.
    pub async fn applications(&self) -> Result<Vec<String>, Error> {
        let base = format!("{}/", self.prefix);
        let prefixes = self.store.list(&base, Some("/")).await?;
        Ok(prefixes
            .into_iter()
            .filter_map(|p| {
                p.strip_prefix(&base)
                    .map(|s| s.trim_end_matches('/').to_string())
            })
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// Finds a backup by id, in any application.
    pub async fn find(&self, backup_id: &str) -> Result<Manifest, Error> {
        check_segment("backup id", backup_id)?;
        self.store.check_bucket().await?;
        for app in self.applications().await? {
            let key = self.manifest_key(&app, backup_id);
            if let Some(body) = self.store.get_bytes(&key).await? {
                return self.parse(&key, &body);
            }
        }
        Err(self.not_found(backup_id))
    }

    /// Every object whose key ends in `/<file_name>` under the backups of one application
    /// (or of every application), with its key and body.
    pub async fn objects_named(
        &self,
        application: Option<&str>,
        file_name: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.store.check_bucket().await?;
        let apps = match application {
            Some(a) => {
                check_segment("application", a)?;
                vec![a.to_string()]
            }
            None => self.applications().await?,
        };
        let suffix = format!("/{file_name}");
        let mut found = Vec::new();
        for app in apps {
            let keys = self
                .store
                .list(&format!("{}/{}/", self.prefix, app), None)
                .await?;
            for key in keys.into_iter().filter(|k| k.ends_with(&suffix)) {
                if let Some(body) = self.store.get_bytes(&key).await? {
                    found.push((key, body));
                }
            }
        }
        Ok(found)
    }

    /// Every manifest (of one application, when given), newest first. A malformed manifest
    /// fails the listing with its key named, rather than being skipped silently.
    pub async fn list(&self, application: Option<&str>) -> Result<Vec<Manifest>, Error> {
        let mut manifests = self
            .objects_named(application, "manifest.json")
            .await?
            .into_iter()
            .map(|(key, body)| self.parse(&key, &body))
            .collect::<Result<Vec<_>, _>>()?;
        manifests.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| b.backup_id.cmp(&a.backup_id))
        });
        Ok(manifests)
    }

    /// Where the backup taken for a CodePipeline execution is recorded: one small object per
    /// execution, so that guard finds it with one read however large the catalog. `None` for
    /// an id that cannot be a key segment (it can have no backup).
    pub fn pipeline_execution_key(&self, pipeline_execution_id: &str) -> Option<String> {
        check_segment("pipeline execution id", pipeline_execution_id).ok()?;
        Some(format!(
            "{}/_index/pipeline-executions/{pipeline_execution_id}.json",
            self.prefix
        ))
    }

    /// Records that `backup_id` of `application` was taken, and verified, for pipeline
    /// execution `pipeline_execution_id` (the newest such backup wins: a retried stage keeps
    /// its execution id). Does nothing for an id that cannot be a key segment.
    pub async fn record_pipeline_execution(
        &self,
        pipeline_execution_id: &str,
        application: &str,
        backup_id: &str,
    ) -> Result<(), Error> {
        let Some(key) = self.pipeline_execution_key(pipeline_execution_id) else {
            return Ok(());
        };
        let entry = PipelineExecutionEntry {
            application: application.to_string(),
            backup_id: backup_id.to_string(),
        };
        let body = serde_json::to_vec(&entry)
            .map_err(|e| Error::InvalidInput(format!("index entry cannot be serialised: {e}")))?;
        self.store.put_bytes(&key, body, "application/json").await
    }

    /// The verified backup taken for CodePipeline execution `pipeline_execution_id`, and the
    /// run document it recorded: two reads, the execution's index entry and the manifest it
    /// names. The manifest must agree (its application, id and recorded pipeline execution),
    /// so an entry cannot point guard at another backup. A backup whose snapshots are still
    /// completing (`wait_for: started`) counts: the restore waits for them. A failed one, or
    /// one no longer in the catalog, does not.
    pub async fn find_by_pipeline_execution(
        &self,
        pipeline_execution_id: &str,
    ) -> Result<Option<(Manifest, RunDocument)>, Error> {
        let Some(key) = self.pipeline_execution_key(pipeline_execution_id) else {
            return Ok(None);
        };
        let Some(body) = self.store.get_bytes(&key).await? else {
            return Ok(None);
        };
        let entry: PipelineExecutionEntry =
            serde_json::from_slice(&body).map_err(|e| Error::ManifestMalformed {
                bucket: self.store.bucket().to_string(),
                key: key.clone(),
                reason: format!("not a pipeline execution index entry: {e}"),
            })?;
        if check_segment("application", &entry.application).is_err()
            || check_segment("backup id", &entry.backup_id).is_err()
        {
            return Err(Error::ManifestMalformed {
                bucket: self.store.bucket().to_string(),
                key,
                reason: "the entry names no valid application and backup id".to_string(),
            });
        }
        let Some(mut m) = self
            .read_manifest(&entry.application, &entry.backup_id)
            .await?
        else {
            return Ok(None);
        };
        let Some(run) = m.run.take() else {
            return Ok(None);
        };
        let agrees = m.application == entry.application
            && m.backup_id == entry.backup_id
            && m.state != BackupState::Failed
            && m.purpose == Purpose::Backup
            && run.version.pipeline_execution_id.as_deref() == Some(pipeline_execution_id);
        Ok(agrees.then_some((m, run)))
    }
}

/// One pipeline execution's backup, as its index entry records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PipelineExecutionEntry {
    application: String,
    backup_id: String,
}
