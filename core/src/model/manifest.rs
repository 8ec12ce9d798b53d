//! The manifest: the record of one backup (its databases, instances, state and the run it
//! protects), backup ids and the names that become key segments. Pure data: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Error;
use crate::model::run::RunDocument;

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

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

/// One database in a backup. A database is identified by its server and its name together:
/// two targets with the same database name on different servers are two entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseBackup {
    pub database: String,
    /// `host:port` (host lower-cased, an IPv6 literal bracketed); no credentials.
    pub server: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_dump_version: String,
    /// As given to pg_dump, e.g. `gzip:6` or `zstd:3`.
    pub compression: String,
    pub artifact: Artifact,
    pub tables: Vec<TableCount>,
    /// What lives on the database object rather than inside it, which `pg_dump` leaves out
    /// (absent in backups taken before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<DatabaseProperties>,
}

/// The database object's own properties as the backup found them: owner, locale, connection
/// limit, comment, privileges (the default ones spelled out) and `ALTER DATABASE … SET` /
/// `ALTER ROLE … IN DATABASE … SET` settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// -1: no limit.
    pub connection_limit: i32,
    pub comment: Option<String>,
    pub privileges: Vec<DatabasePrivilege>,
    pub settings: Vec<DatabaseSetting>,
}

/// One privilege on the database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatabasePrivilege {
    /// The role it is granted to; `None` is PUBLIC.
    pub grantee: Option<String>,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub privilege: String,
    pub grantable: bool,
    pub grantor: String,
}

/// One setting stored for the database: for every role (`role` is `None`) or for one role in
/// this database. `value` is as PostgreSQL stores it (a list setting's elements joined by
/// `, `, double-quoted where needed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatabaseSetting {
    pub role: Option<String>,
    pub name: String,
    pub value: String,
}

/// The privileges a database can carry.
pub const DATABASE_PRIVILEGES: [&str; 3] = ["CONNECT", "CREATE", "TEMPORARY"];

impl DatabaseProperties {
    /// Refuses what no server records (so a planted manifest cannot smuggle SQL through a
    /// privilege or setting name): privileges other than [`DATABASE_PRIVILEGES`], setting
    /// names other than letters, digits, `_` and `.`, names or values holding NUL.
    pub fn check(&self) -> Result<(), String> {
        for p in &self.privileges {
            if !DATABASE_PRIVILEGES.contains(&p.privilege.as_str()) {
                return Err(format!(
                    "database privilege {:?} is not one of {DATABASE_PRIVILEGES:?}",
                    p.privilege
                ));
            }
        }
        for s in &self.settings {
            let ok = !s.name.is_empty()
                && s.name.len() <= 200
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !ok {
                return Err(format!(
                    "database setting name {:?} is not a setting name",
                    s.name
                ));
            }
        }
        let texts = [&self.owner, &self.encoding, &self.collate, &self.ctype]
            .into_iter()
            .chain(self.comment.iter())
            .chain(
                self.privileges
                    .iter()
                    .flat_map(|p| p.grantee.iter().chain([&p.grantor])),
            )
            .chain(
                self.settings
                    .iter()
                    .flat_map(|s| s.role.iter().chain([&s.value])),
            );
        for t in texts {
            if t.contains('\0') {
                return Err("a database property holds a NUL character".to_string());
            }
        }
        Ok(())
    }
}

impl DatabaseBackup {
    /// Whether this is the backup of `database` on `server` (`host:port`).
    pub fn is(&self, server: &str, database: &str) -> bool {
        self.server == server && self.database == database
    }

    /// `database on server`, for messages.
    pub fn label(&self) -> String {
        format!("{} on {}", self.database, self.server)
    }
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
            match m
                .databases
                .iter_mut()
                .find(|x| x.is(&d.server, &d.database))
            {
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

    /// Every EC2 id the manifest names has the form AWS gives it (`i-`, `vol-`, `snap-`,
    /// `ami-` and 8 or 17 hex digits), and a forensic backup names a valid backup id: no
    /// wildcard, separator or other character can reach an EC2 filter, a key or a log line
    /// from a manifest. The reason names the first that does not.
    pub fn check_ids(&self) -> Result<(), String> {
        if let Purpose::Forensic { restore_of } = &self.purpose {
            check_segment("restore_of", restore_of).map_err(|e| e.to_string())?;
        }
        for d in &self.databases {
            if let Some(p) = &d.properties {
                p.check()?;
            }
        }
        for i in &self.instances {
            check_ec2_id("i", &i.instance_id)?;
            if let Some(image) = &i.image_id {
                check_ec2_id("ami", image)?;
            }
            for v in &i.volumes {
                check_ec2_id("vol", &v.volume_id)?;
                if let Some(snap) = &v.snapshot_id {
                    check_ec2_id("snap", snap)?;
                }
            }
        }
        Ok(())
    }

    /// The entry of `database` on `server`, or `DatabaseNotInBackup` listing what the backup
    /// holds.
    pub fn database(&self, server: &str, database: &str) -> Result<&DatabaseBackup, Error> {
        self.databases
            .iter()
            .find(|d| d.is(server, database))
            .ok_or_else(|| Error::DatabaseNotInBackup {
                backup_id: self.backup_id.clone(),
                database: format!("{database} on {server}"),
                backed_up: if self.databases.is_empty() {
                    "no databases".to_string()
                } else {
                    self.databases
                        .iter()
                        .map(DatabaseBackup::label)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
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

/// Checks that `id` is an EC2 id of `kind` (`i`, `vol`, `snap`, `ami`): the kind, a dash and
/// 8 or 17 lower-case hex digits.
pub fn check_ec2_id(kind: &str, id: &str) -> Result<(), String> {
    let ok = id
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17) && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not an EC2 {kind}- id ({kind}- and 8 or 17 hex digits)",
            id.chars().take(40).collect::<String>()
        ))
    }
}

/// One table's exact row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

/// Compares counts; returns a human list of differences, empty when equal. Tables found but not
/// in `expected` count as differences unless `allow_extra`.
pub fn count_differences(
    expected: &[TableCount],
    actual: &[TableCount],
    allow_extra: bool,
) -> String {
    let want: BTreeMap<(&str, &str), i64> = expected
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str()), c.rows))
        .collect();
    let got: BTreeMap<(&str, &str), i64> = actual
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str()), c.rows))
        .collect();
    let mut diffs = Vec::new();
    for (k, w) in &want {
        match got.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("{}.{}: expected {w}, found {g}", k.0, k.1)),
            None => diffs.push(format!("{}.{}: missing", k.0, k.1)),
        }
    }
    for k in got
        .keys()
        .filter(|k| !allow_extra && !want.contains_key(*k))
    {
        diffs.push(format!("{}.{}: not in the backup", k.0, k.1));
    }
    diffs.join("; ")
}

/// Fails with `RowCountMismatch` (naming `database`) unless `found` matches `expected`.
pub fn check_counts(
    expected: &[TableCount],
    found: &[TableCount],
    database: &str,
    allow_extra: bool,
) -> Result<(), Error> {
    let differences = count_differences(expected, found, allow_extra);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::RowCountMismatch {
            database: database.to_string(),
            differences,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_differences_name_each_table() {
        let a = vec![TableCount {
            schema: "public".into(),
            table: "t".into(),
            rows: 3,
        }];
        let mut b = a.clone();
        assert_eq!(count_differences(&a, &b, false), "");
        b[0].rows = 2;
        assert_eq!(
            count_differences(&a, &b, false),
            "public.t: expected 3, found 2"
        );
        assert_eq!(count_differences(&a, &[], false), "public.t: missing");
        let extra = vec![
            a[0].clone(),
            TableCount {
                schema: "public".into(),
                table: "new".into(),
                rows: 1,
            },
        ];
        assert_eq!(
            count_differences(&a, &extra, false),
            "public.new: not in the backup"
        );
        assert_eq!(count_differences(&a, &extra, true), "");
    }

    #[test]
    fn ec2_ids_are_checked_before_they_reach_a_filter() {
        assert!(check_ec2_id("snap", "snap-0123456789abcdef0").is_ok());
        assert!(check_ec2_id("i", "i-12345678").is_ok());
        for bad in [
            "snap-*",
            "snap-",
            "snap-0123456789ABCDEF0",
            "vol-01234567",
            "snap-0123?567",
        ] {
            assert!(check_ec2_id("snap", bad).is_err(), "{bad}");
        }
    }

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
