//! The backup catalog in an object store: where each backup's objects live,
//! `<prefix>/<application>/<backup-id>/manifest.json` beside the dump objects and the incident
//! and drill reports; reading, listing and finding manifests; and updating one manifest safely
//! while the targets of one backup write their parts concurrently. A backup is good only when
//! its manifest says `completed`; the manifest is written last. Beside them,
//! `<prefix>/_index/pipeline-executions/<id>.json` names the verified backup of each
//! CodePipeline execution, so guard finds it with one read.

mod incidents;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::job::RestoreOf;
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

    /// Where the dump of `database` on `server` goes: `<backup>/db/<server>/<database>.dump`,
    /// each segment percent-encoded (every byte but ASCII letters, digits, `-`, `_` and `.`),
    /// so odd names stay readable and two names never share a key: not names differing only
    /// in case or in Unicode normalisation, not `a b` and `a_b`.
    pub fn dump_key(
        &self,
        application: &str,
        backup_id: &str,
        server: &str,
        database: &str,
    ) -> String {
        format!(
            "{}/db/{}/{}.dump",
            self.backup_dir(application, backup_id),
            key_segment(server),
            key_segment(database)
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
        check_segment("application", application)?;
        check_segment("backup id", backup_id)?;
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
        check_segment("application", application)?;
        check_segment("backup id", backup_id)?;
        let key = self.manifest_key(application, backup_id);
        match self.store.get_bytes(&key).await? {
            Some(body) => self.parse(&key, &body).map(Some),
            None => Ok(None),
        }
    }

    /// A manifest read from `key`, believed only when it holds together: a supported
    /// format, the application and backup id its key names, every artifact under the
    /// backup's own directory, every id of the form AWS gives it (see
    /// [`Manifest::check_ids`]). Anything else is `ManifestMalformed` naming the key.
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
        let m: Manifest = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        if check_segment("application", &m.application).is_err()
            || check_segment("backup id", &m.backup_id).is_err()
            || self.manifest_key(&m.application, &m.backup_id) != key
        {
            return Err(malformed(
                "its application and backup id are not the ones its key names".to_string(),
            ));
        }
        let dir = format!("{}/", self.backup_dir(&m.application, &m.backup_id));
        if let Some(d) = m
            .databases
            .iter()
            .find(|d| !d.artifact.key.starts_with(&dir) || d.artifact.key.contains("/../"))
        {
            return Err(malformed(format!(
                "the dump of {} is not under the backup's own directory {dir}",
                d.label()
            )));
        }
        m.check_ids().map_err(malformed)?;
        Ok(m)
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

    /// Finds a backup by id in any application; an id found in more than one application is
    /// `InvalidInput` naming them (give the application).
    pub async fn find(&self, backup_id: &str) -> Result<Manifest, Error> {
        check_segment("backup id", backup_id)?;
        self.store.check_bucket().await?;
        let mut found = Vec::new();
        for app in self.applications().await? {
            if check_segment("application", &app).is_err() {
                continue;
            }
            if let Some(m) = self.read_manifest(&app, backup_id).await? {
                found.push(m);
            }
        }
        match found.len() {
            0 => Err(self.not_found(backup_id)),
            1 => Ok(found.remove(0)),
            _ => Err(Error::InvalidInput(format!(
                "backup id {backup_id} is in several applications ({}): name the application",
                found
                    .iter()
                    .map(|m| m.application.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
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

    /// Every manifest (of one application, when given), newest first. A manifest that cannot
    /// be believed (malformed, of a newer format, or disagreeing with its key: see
    /// [`Catalog::parse`]) is left out and named in [`Listing::skipped`], so one bad object
    /// never stops guard, prune or the drill.
    pub async fn list(&self, application: Option<&str>) -> Result<Listing, Error> {
        let mut listing = Listing::default();
        for (key, body) in self.objects_named(application, "manifest.json").await? {
            match self.parse(&key, &body) {
                Ok(m) => listing.manifests.push(m),
                Err(e) => {
                    tracing::warn!(key, error = %e, "manifest skipped");
                    listing.skipped.push(e.to_string());
                }
            }
        }
        listing.manifests.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| b.backup_id.cmp(&a.backup_id))
        });
        Ok(listing)
    }

    /// Where the backup that `application` took for a CodePipeline execution is recorded:
    /// one small object per execution and application, so that guard finds it with one read
    /// however large the catalog, and a run of another application that claims the same
    /// execution id writes beside it, never over it. `None` for an id that cannot be a key
    /// segment (it can have no backup).
    pub fn pipeline_execution_key(
        &self,
        pipeline_execution_id: &str,
        application: &str,
    ) -> Option<String> {
        check_segment("pipeline execution id", pipeline_execution_id).ok()?;
        check_segment("application", application).ok()?;
        Some(format!(
            "{}/_index/pipeline-executions/{pipeline_execution_id}/{application}.json",
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
        check_segment("backup id", backup_id)?;
        let Some(key) = self.pipeline_execution_key(pipeline_execution_id, application) else {
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

    /// The verified backup `application` took for CodePipeline execution
    /// `pipeline_execution_id`, and the run document it recorded: two reads, the index entry
    /// and the manifest it names. The manifest must agree (its application, id and recorded
    /// pipeline execution), so an entry cannot point guard at another backup. A backup whose
    /// snapshots are still completing (`wait_for: started`) counts: the restore waits for
    /// them. A failed one, one no longer in the catalog, or an entry or manifest that cannot
    /// be read (malformed, or of a newer format) does not: that is logged, and `None`.
    pub async fn find_by_pipeline_execution(
        &self,
        pipeline_execution_id: &str,
        application: &str,
    ) -> Result<Option<(Manifest, RunDocument)>, Error> {
        let Some(key) = self.pipeline_execution_key(pipeline_execution_id, application) else {
            return Ok(None);
        };
        let Some(body) = self.store.get_bytes(&key).await? else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_slice::<PipelineExecutionEntry>(&body) else {
            tracing::warn!(key, "not a pipeline execution index entry: ignored");
            return Ok(None);
        };
        if entry.application != application || check_segment("backup id", &entry.backup_id).is_err()
        {
            tracing::warn!(
                key,
                "the index entry names another application or no valid backup id: ignored"
            );
            return Ok(None);
        }
        let mut m = match self
            .read_manifest(&entry.application, &entry.backup_id)
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e @ Error::ManifestMalformed { .. }) => {
                tracing::warn!(key, error = %e, "the backup's manifest cannot be believed: ignored");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(run) = m.run.take() else {
            return Ok(None);
        };
        let agrees = m.state != BackupState::Failed
            && m.purpose == Purpose::Backup
            && run.application == application
            && run.version.pipeline_execution_id.as_deref() == Some(pipeline_execution_id);
        Ok(agrees.then_some((m, run)))
    }

    /// The applications that recorded a backup for CodePipeline execution
    /// `pipeline_execution_id`.
    pub async fn pipeline_execution_applications(
        &self,
        pipeline_execution_id: &str,
    ) -> Result<Vec<String>, Error> {
        if check_segment("pipeline execution id", pipeline_execution_id).is_err() {
            return Ok(Vec::new());
        }
        let dir = format!(
            "{}/_index/pipeline-executions/{pipeline_execution_id}/",
            self.prefix
        );
        Ok(self
            .store
            .list(&dir, None)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&dir)?.strip_suffix(".json"))
            .filter(|a| check_segment("application", a).is_ok())
            .map(str::to_string)
            .collect())
    }

    /// Where guard records the restore it asks for under the restore execution's name.
    pub fn restore_request_key(&self, execution_name: &str) -> Result<String, Error> {
        check_segment("execution name", execution_name)?;
        Ok(format!(
            "{}/_restore-requests/{execution_name}.json",
            self.prefix
        ))
    }

    /// Records (guard only) the restore the execution `execution_name` will run.
    pub async fn record_restore_request(
        &self,
        execution_name: &str,
        request: &RestoreOf,
    ) -> Result<(), Error> {
        check_segment("application", &request.application)?;
        check_segment("backup id", &request.backup_id)?;
        let key = self.restore_request_key(execution_name)?;
        let body = serde_json::to_vec(request).map_err(|e| {
            Error::InvalidInput(format!("restore request cannot be serialised: {e}"))
        })?;
        self.store.put_bytes(&key, body, "application/json").await
    }

    /// The restore recorded for execution `execution_name`, if any (one that cannot be read
    /// is none).
    pub async fn restore_request(&self, execution_name: &str) -> Result<Option<RestoreOf>, Error> {
        let key = self.restore_request_key(execution_name)?;
        Ok(self
            .store
            .get_bytes(&key)
            .await?
            .and_then(|body| serde_json::from_slice(&body).ok()))
    }
}

/// Every byte but ASCII letters, digits, `-`, `_` and `.` is percent-encoded in a key segment.
const KEY_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// A name as one key segment: percent-encoded, never `.` or `..`.
pub fn key_segment(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, KEY_SEGMENT).to_string();
    match encoded.as_str() {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => encoded,
    }
}

/// The manifests a listing found, and those it could not believe.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub manifests: Vec<Manifest>,
    /// Each manifest left out, as its `ManifestMalformed` message (the key and why).
    pub skipped: Vec<String>,
}

/// One pipeline execution's backup, as its index entry records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PipelineExecutionEntry {
    application: String,
    backup_id: String,
}
