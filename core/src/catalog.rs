//! The backup catalog in S3: backup ids, the versioned manifest format and its layout,
//! `<prefix>/<application>/<backup-id>/manifest.json` beside the dump objects. A backup is good
//! only when its manifest says `completed`; the manifest is written last.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Error;
use crate::pg::TableCount;
use crate::run::RunDocument;
use crate::s3::S3Store;

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// The prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "backstop";

/// Where backups of one bucket live.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub store: S3Store,
    pub prefix: String,
}

/// The state a manifest (or one instance in it) records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Snapshots or an image were started and are not all complete yet; not usable.
    Pending,
    /// Every artifact is in place and checked; the backup can be restored.
    Completed,
    /// The backup did not finish; its artifacts were removed or never completed.
    Failed,
}

impl std::fmt::Display for BackupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupState::Pending => "pending",
            BackupState::Completed => "completed",
            BackupState::Failed => "failed",
        })
    }
}

/// Why the backup was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Purpose {
    /// A pre-deploy (or operator-requested) backup.
    Backup,
    /// The state of a database just before an in-place restore overwrote it.
    Forensic { restore_of: String },
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    pub parts: u32,
}

/// One database in a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseBackup {
    pub database: String,
    /// `host:port`, for the operator's eyes; no credentials.
    pub server: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_dump_version: String,
    /// As given to pg_dump, e.g. `gzip:6` or `zstd:3`.
    pub compression: String,
    pub artifact: Artifact,
    pub tables: Vec<TableCount>,
}

/// How an instance was backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceBackupMode {
    /// `CreateSnapshots`: one crash-consistent snapshot set of the attached EBS volumes.
    Snapshots,
    /// `CreateImage`: an AMI whose block device mappings hold the snapshots.
    Image,
}

impl std::fmt::Display for InstanceBackupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceBackupMode::Snapshots => "snapshots",
            InstanceBackupMode::Image => "image",
        })
    }
}

impl std::str::FromStr for InstanceBackupMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "snapshots" => Ok(InstanceBackupMode::Snapshots),
            "image" => Ok(InstanceBackupMode::Image),
            other => Err(Error::InvalidInput(format!(
                "instance backup mode {other:?} is not one of snapshots, image"
            ))),
        }
    }
}

/// One EBS volume of a backed-up instance: everything needed to create its replacement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBackup {
    /// Device name on the instance, e.g. `/dev/xvda`.
    pub device: String,
    /// True for the instance's root (boot) device.
    pub boot: bool,
    pub volume_id: String,
    pub size_gib: i32,
    pub volume_type: String,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// The snapshot of this volume; in image mode known once the image is available.
    pub snapshot_id: Option<String>,
}

/// One instance in a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceBackup {
    pub instance_id: String,
    pub availability_zone: String,
    pub mode: InstanceBackupMode,
    /// The AMI, in image mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub state: BackupState,
    pub volumes: Vec<VolumeBackup>,
    /// Why this instance's backup failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InstanceBackup {
    /// The snapshot ids known so far.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.volumes
            .iter()
            .filter_map(|v| v.snapshot_id.clone())
            .collect()
    }
}

/// The record of one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: String,
    pub application: String,
    pub app_version: Option<String>,
    pub purpose: Purpose,
    pub state: BackupState,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    #[serde(default)]
    pub databases: Vec<DatabaseBackup>,
    /// EC2 instances backed up as snapshot sets or images.
    #[serde(default)]
    pub instances: Vec<InstanceBackup>,
    /// Why the backup failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the deploy this backup protected passed its checks: from then on,
    /// `app_version` is what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployed>,
    /// The run document this backup protects, recorded when the backup is verified: where
    /// its targets are, the checks, the policy. Guard mode and restore drills restore from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunDocument>,
}

/// A deploy that passed its checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The checks' summary.
    pub checks: String,
}

impl Manifest {
    /// Total bytes of all artifacts.
    pub fn total_bytes(&self) -> u64 {
        self.databases.iter().map(|d| d.artifact.bytes).sum()
    }

    /// The manifest's state follows its parts: failed if any part failed, pending while any
    /// instance is pending, completed otherwise.
    pub fn settle_state(&mut self) {
        let states = self.instances.iter().map(|i| i.state);
        self.state = if self.state == BackupState::Failed
            || states.clone().any(|s| s == BackupState::Failed)
        {
            BackupState::Failed
        } else if states.clone().any(|s| s == BackupState::Pending) {
            BackupState::Pending
        } else {
            BackupState::Completed
        };
        if self.error.is_none() {
            self.error = self
                .instances
                .iter()
                .filter_map(|i| i.error.as_ref().map(|e| format!("{}: {e}", i.instance_id)))
                .reduce(|a, b| format!("{a}; {b}"));
        }
    }

    /// Merges this manifest (one target's part of a backup: its databases, its instances, its
    /// failure) into `current`, what other targets of the same backup wrote already.
    pub fn merged_into(self, current: Option<Manifest>) -> Manifest {
        let Some(mut m) = current else {
            let mut me = self;
            me.settle_state();
            return me;
        };
        for d in self.databases {
            match m.databases.iter_mut().find(|x| x.database == d.database) {
                Some(x) => *x = d,
                None => m.databases.push(d),
            }
        }
        for i in self.instances {
            match m
                .instances
                .iter_mut()
                .find(|x| x.instance_id == i.instance_id)
            {
                Some(x) => *x = i,
                None => m.instances.push(i),
            }
        }
        if self.state == BackupState::Failed {
            m.state = BackupState::Failed;
            m.error = match (m.error.take(), self.error) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
        }
        m.started_at = m.started_at.min(self.started_at);
        m.finished_at = m.finished_at.max(self.finished_at);
        m.deployed = m.deployed.or(self.deployed);
        m.run = m.run.or(self.run);
        m.settle_state();
        m
    }

    /// The instance part for `instance_id`, or the named error listing what the backup holds.
    pub fn instance(&self, instance_id: &str) -> Result<&InstanceBackup, Error> {
        self.instances
            .iter()
            .find(|i| i.instance_id == instance_id)
            .ok_or_else(|| Error::InstanceNotInBackup {
                backup_id: self.backup_id.clone(),
                instance_id: instance_id.to_string(),
                backed_up: if self.instances.is_empty() {
                    "no instances".to_string()
                } else {
                    self.instances
                        .iter()
                        .map(|i| i.instance_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }
}

/// A new backup id: UTC time then 8 random hex digits, so ids sort by time and never collide.
pub fn new_backup_id(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:08x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        rand::random::<u32>()
    )
}

/// Checks a name used as one path segment of a key (application, backup id).
pub fn check_segment(what: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} {value:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Catalog {
    pub fn new(store: S3Store, prefix: &str) -> Result<Self, Error> {
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.is_empty()
            || prefix
                .split('/')
                .any(|s| check_segment("prefix", s).is_err())
        {
            return Err(Error::InvalidInput(format!(
                "prefix {prefix:?} must be non-empty segments of letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Catalog { store, prefix })
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
        })
    }

    /// The manifest of a backup of a known application; `BackupNotFound` when there is none.
    pub async fn manifest(&self, application: &str, backup_id: &str) -> Result<Manifest, Error> {
        self.read_manifest(application, backup_id)
            .await?
            .ok_or_else(|| Error::BackupNotFound {
                bucket: self.store.bucket().to_string(),
                prefix: self.prefix.clone(),
                backup_id: backup_id.to_string(),
            })
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
        Err(Error::BackupNotFound {
            bucket: self.store.bucket().to_string(),
            prefix: self.prefix.clone(),
            backup_id: backup_id.to_string(),
        })
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

    /// The verified backup taken for CodePipeline execution `pipeline_execution_id`, and the
    /// run document it recorded (written once the backup was verified, naming the execution);
    /// newest first when there are several. A backup whose snapshots are still completing
    /// (`wait_for: started`) counts: the restore waits for them. A failed one does not.
    pub async fn find_by_pipeline_execution(
        &self,
        pipeline_execution_id: &str,
    ) -> Result<Option<(Manifest, RunDocument)>, Error> {
        Ok(self.list(None).await?.into_iter().find_map(|mut m| {
            let run = m.run.take()?;
            (m.state != BackupState::Failed
                && m.purpose == Purpose::Backup
                && run.version.pipeline_execution_id.as_deref() == Some(pipeline_execution_id))
            .then_some((m, run))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_segments_are_checked() {
        let a = new_backup_id(time::macros::datetime!(2026-01-02 03:04:05 UTC));
        assert!(a.starts_with("20260102T030405Z-"), "{a}");
        assert_eq!(a.len(), "20260102T030405Z-".len() + 8);
        assert!(check_segment("application", "shop-api_1.2").is_ok());
        for bad in ["", "..", "a/b", "a b", "x;rm"] {
            assert_eq!(
                check_segment("application", bad).unwrap_err().error_type(),
                "InvalidInput"
            );
        }
    }
}
