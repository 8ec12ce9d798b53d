//! Retention: what a backup catalog may forget. Per application, the newest `keep_last` good
//! backups (completed pre-deploy backups) are always kept, as is every backup a running
//! execution uses (its id is the execution's name) and every backup younger than `max_age`.
//! Every other backup (pre-deploy, forensic or failed) is pruned: its manifest is first marked
//! failed, so a half-pruned backup never looks restorable, then its images and snapshots
//! (found by their `backstop:backup-id` tag, so parts a manifest missed go too) and its objects
//! are deleted, the manifest last. Volumes a restore replaced (the kept failed state, tagged
//! `backstop:failed-state-of`) go once older than `max_age`, volumes a killed drill left
//! (tagged `backstop:drill`) once a day old, and so do the databases Backstop
//! leaves on the servers of the recorded runs: the failed state a swap restore keeps
//! (`<db>_failed_<time>`), the scratch copy of a swap restore killed before it could drop it
//! (`<db>_restore_<time>`, once a day old whatever the policy: a restore may still be filling
//! it) and a drill's scratch database left by a crash (`backstop_verify_<time>_<n>`). A dry
//! run plans and deletes nothing.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::aws::ec2::{Ec2, TAG_BACKUP_ID, TAG_DRILL, TAG_FAILED_STATE_OF};
use crate::catalog::Catalog;
use crate::db::restore::{derived_name, maintenance_target};
use crate::db::session::{Marker, Session};
use crate::db::target::DbTarget;
use crate::error::Error;
use crate::model::job::guard_execution_name;
use crate::model::manifest::{BackupState, Manifest, Purpose};

/// How long backups live.
#[derive(Clone, Copy, Debug)]
pub struct RetentionPolicy {
    /// Good backups always kept per application, newest first.
    pub keep_last: usize,
    /// Anything younger is kept.
    pub max_age: Duration,
}

/// One backup and what retention does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub application: String,
    pub backup_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub state: BackupState,
    pub action: Action,
    pub reason: String,
}

/// What retention does with a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Prune,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Action::Keep => "keep",
            Action::Prune => "prune",
        })
    }
}

/// What a prune does (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub backups: Vec<Decision>,
    /// Replaced volumes (kept failed state) older than the policy, and drill volumes a killed
    /// drill left, a day old.
    pub volumes: Vec<String>,
    /// Databases Backstop left on a server, older than the policy.
    pub databases: Vec<LeftDatabase>,
    /// Servers whose left databases could not be looked at, and why.
    pub servers_skipped: Vec<String>,
    /// Manifests that could not be believed (malformed, of a newer format, disagreeing with
    /// their key): neither kept nor pruned, only named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests_skipped: Vec<String>,
}

/// A database a restore or a drill left on a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftDatabase {
    /// `host:port`.
    pub server: String,
    pub database: String,
    /// `failed state` (kept by a swap restore) or `drill scratch`.
    pub kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Plan {
    pub fn to_prune(&self) -> impl Iterator<Item = &Decision> {
        self.backups.iter().filter(|d| d.action == Action::Prune)
    }
}

/// Decides, backup by backup, what to keep of `manifests` (newest first, as
/// `Catalog::list` gives them). `running` holds the names of running executions; `servers` are
/// the database targets whose servers are searched for left databases.
pub async fn plan(
    manifests: &[Manifest],
    ec2: &Ec2,
    policy: &RetentionPolicy,
    running: &[String],
    servers: &[DbTarget],
    now: OffsetDateTime,
) -> Result<Plan, Error> {
    let mut good_seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut backups = Vec::new();
    for m in manifests {
        let good = m.state == BackupState::Completed && m.purpose == Purpose::Backup;
        let rank = good.then(|| {
            let n = good_seen.entry(m.application.clone()).or_default();
            *n += 1;
            *n
        });
        let age: Duration = (now - m.started_at).try_into().unwrap_or(Duration::ZERO);
        let (action, reason) = if rank.is_some_and(|r| r <= policy.keep_last) {
            (
                Action::Keep,
                format!("one of the newest {} good backups", policy.keep_last),
            )
        } else if running
            .iter()
            .any(|n| *n == m.backup_id || *n == guard_execution_name(&m.backup_id))
        {
            (Action::Keep, "a running execution uses it".to_string())
        } else if age < policy.max_age {
            (
                Action::Keep,
                format!("younger than {} s", policy.max_age.as_secs()),
            )
        } else {
            (
                Action::Prune,
                format!(
                    "{} and {} s old",
                    describe(m, rank.is_some()),
                    age.as_secs()
                ),
            )
        };
        backups.push(Decision {
            application: m.application.clone(),
            backup_id: m.backup_id.clone(),
            started_at: m.started_at,
            state: m.state,
            action,
            reason,
        });
    }
    let volumes = left_volumes(ec2, policy, now).await?;
    let (databases, servers_skipped) = left_databases(servers, policy, now).await;
    Ok(Plan {
        manifests_skipped: Vec::new(),
        backups,
        volumes,
        databases,
        servers_skipped,
    })
}

/// `host:port` of a target.
fn server_of(t: &DbTarget) -> String {
    format!("{}:{}", t.host, t.port)
}

/// The databases Backstop left on the targets' servers, older than the policy; and the
/// servers that could not be searched, with the reason (they are reported, not fatal).
async fn left_databases(
    targets: &[DbTarget],
    policy: &RetentionPolicy,
    now: OffsetDateTime,
) -> (Vec<LeftDatabase>, Vec<String>) {
    let mut by_server: std::collections::BTreeMap<String, (&DbTarget, Vec<String>)> =
        Default::default();
    for t in targets {
        by_server
            .entry(server_of(t))
            .or_insert_with(|| (t, Vec::new()))
            .1
            .push(t.dbname.clone());
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for (server, (target, dbnames)) in by_server {
        let names = async {
            Session::connect(&maintenance_target(target))
                .await?
                .query_first_text(
                    "SELECT string_agg(datname || E'\\t' || coalesce(translate(\
                     shobj_description(oid, 'pg_database'), E'\\t\\n', '  '), ''), E'\\n') \
                     FROM pg_database",
                )
                .await
        }
        .await;
        let names = match names {
            Ok(n) => n.unwrap_or_default(),
            Err(e) => {
                skipped.push(format!("{server}: {}", crate::error::Named(&e)));
                continue;
            }
        };
        for line in names.lines() {
            let (name, comment) = line.split_once('\t').unwrap_or((line, ""));
            let Some((kind, created_at)) = left_by_backstop(name, comment, &dbnames) else {
                continue;
            };
            let min_age = if kind == INTERRUPTED_RESTORE {
                policy.max_age.max(RESTORE_IN_PROGRESS_FOR)
            } else {
                policy.max_age
            };
            if at_least(now - created_at, min_age) {
                found.push(LeftDatabase {
                    server: server.clone(),
                    database: name.to_string(),
                    kind,
                    created_at,
                });
            }
        }
    }
    (found, skipped)
}

/// The kind of a swap restore's scratch copy left behind.
const INTERRUPTED_RESTORE: &str = "interrupted restore";

/// A restore may still be filling its scratch copy for this long (a CLI restore has no
/// function timeout), so a younger one is never taken for a leftover, whatever the policy.
const RESTORE_IN_PROGRESS_FOR: Duration = Duration::from_secs(86_400);

/// What `name` is when Backstop left it on a server holding `targets`: the failed state a
/// swap restore of one of them kept, the scratch copy of a swap restore that was killed, or a
/// drill's scratch database; with when it was made. Both the name and the marker Backstop put
/// in its `comment` must say so: a database someone named like one is never taken for it.
pub fn left_by_backstop(
    name: &str,
    comment: &str,
    targets: &[String],
) -> Option<(&'static str, OffsetDateTime)> {
    let (kind, at) = named_by_backstop(name, targets)?;
    let marker = match kind {
        INTERRUPTED_RESTORE => Marker::RestoreScratch,
        FAILED_STATE => Marker::FailedState,
        _ => Marker::VerifyScratch,
    };
    marker.on(comment).then_some((kind, at))
}

/// The kind of a failed state a swap restore kept.
const FAILED_STATE: &str = "failed state";

/// What `name` says it is, by Backstop's naming alone.
fn named_by_backstop(name: &str, targets: &[String]) -> Option<(&'static str, OffsetDateTime)> {
    // A swap restore's scratch copy, left when its process was killed before it could drop it.
    if let Some((_, ts)) = name.rsplit_once("_restore_") {
        let at = parse_timestamp(ts)?;
        let suffix = format!("restore_{ts}");
        return targets
            .iter()
            .any(|db| derived_name(db, &suffix) == name)
            .then_some((INTERRUPTED_RESTORE, at));
    }
    if let Some((_, ts)) = name.rsplit_once("_failed_") {
        let at = parse_timestamp(ts)?;
        let suffix = format!("failed_{ts}");
        return targets
            .iter()
            .any(|db| derived_name(db, &suffix) == name)
            .then_some((FAILED_STATE, at));
    }
    let rest = name.strip_prefix("backstop_verify_")?;
    let (ts, n) = rest.split_once('_')?;
    let at = parse_timestamp(ts)?;
    (n.len() == 4 && n.chars().all(|c| c.is_ascii_hexdigit())).then_some(("drill scratch", at))
}

/// Whether `age` is at least `min_age`, for any `min_age` however large (a policy of "forever"
/// never makes anything old enough) and any age (one in the future is not old).
fn at_least(age: time::Duration, min_age: Duration) -> bool {
    u64::try_from(age.whole_seconds()).is_ok_and(|secs| secs >= min_age.as_secs())
}

/// `YYYYMMDDHHMMSS` (UTC), as `restore::timestamp` writes it.
fn parse_timestamp(ts: &str) -> Option<OffsetDateTime> {
    if ts.len() != 14 || !ts.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts[r].parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        n(0..4)? as i32,
        time::Month::try_from(n(4..6)? as u8).ok()?,
        n(6..8)? as u8,
    )
    .ok()?;
    let t = time::Time::from_hms(n(8..10)? as u8, n(10..12)? as u8, n(12..14)? as u8).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

fn describe(m: &Manifest, good: bool) -> &'static str {
    match (&m.purpose, m.state, good) {
        (Purpose::Forensic { .. }, _, _) => "a forensic dump",
        (_, BackupState::Failed, _) => "a failed backup",
        (_, BackupState::Pending, _) => "a backup that never completed",
        _ => "an older good backup",
    }
}

/// Volumes a restore replaced, older than the policy, and volumes a drill made that it could
/// not delete (its process was killed), a day old whatever the policy (a drill uses its
/// volume for minutes); each no longer attached.
async fn left_volumes(
    ec2: &Ec2,
    policy: &RetentionPolicy,
    now: OffsetDateTime,
) -> Result<Vec<String>, Error> {
    let mut found = tagged_available(ec2, TAG_FAILED_STATE_OF, policy.max_age, now).await?;
    let drill_age = policy.max_age.max(RESTORE_IN_PROGRESS_FOR);
    found.extend(tagged_available(ec2, TAG_DRILL, drill_age, now).await?);
    Ok(found)
}

/// Available volumes carrying tag `key`, at least `min_age` old.
async fn tagged_available(
    ec2: &Ec2,
    key: &str,
    min_age: Duration,
    now: OffsetDateTime,
) -> Result<Vec<String>, Error> {
    let out = ec2
        .call("DescribeVolumes", |c| {
            c.describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag-key")
                        .values(key)
                        .build(),
                )
                .send()
        })
        .await?;
    Ok(out
        .volumes()
        .iter()
        .filter(|v| v.state() == Some(&aws_sdk_ec2::types::VolumeState::Available))
        .filter(|v| {
            v.create_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
                .map(|t| at_least(now - t, min_age))
                .unwrap_or(false)
        })
        .filter_map(|v| v.volume_id().map(str::to_string))
        .collect())
}

/// Carries out a plan: each pruned backup is marked failed first, then its EC2 artifacts and
/// objects are deleted, the manifest last; then the replaced volumes and the left databases
/// (on the servers of `servers`).
pub async fn apply(
    catalog: &Catalog,
    ec2: &Ec2,
    plan: &Plan,
    servers: &[DbTarget],
) -> Result<(), Error> {
    for d in plan.to_prune() {
        catalog
            .update_manifest(&d.application, &d.backup_id, |current| {
                let mut m = current.ok_or_else(|| Error::BackupNotFound {
                    bucket: catalog.store.bucket().to_string(),
                    prefix: catalog.prefix.clone(),
                    backup_id: d.backup_id.clone(),
                })?;
                m.state = BackupState::Failed;
                m.error = Some(format!("being pruned by retention: {}", d.reason));
                Ok(m)
            })
            .await?;
        delete_ec2_artifacts(ec2, &d.backup_id).await?;
        let dir = format!("{}/", catalog.backup_dir(&d.application, &d.backup_id));
        let manifest = catalog.manifest_key(&d.application, &d.backup_id);
        for key in catalog.store.list(&dir, None).await? {
            if key != manifest {
                catalog.store.delete(&key).await?;
            }
        }
        catalog.store.delete(&manifest).await?;
        tracing::info!(backup_id = %d.backup_id, reason = %d.reason, "pruned");
    }
    for v in &plan.volumes {
        ec2.call("DeleteVolume", |c| c.delete_volume().volume_id(v).send())
            .await?;
        tracing::info!(volume = %v, "replaced volume deleted");
    }
    for d in &plan.databases {
        let Some(target) = servers.iter().find(|t| server_of(t) == d.server) else {
            continue;
        };
        Session::connect(&maintenance_target(target))
            .await?
            .drop_database(&d.database)
            .await?;
        tracing::info!(server = %d.server, database = %d.database, kind = d.kind, "dropped");
    }
    Ok(())
}

/// Deregisters the images and deletes the snapshots tagged with the backup id.
async fn delete_ec2_artifacts(ec2: &Ec2, backup_id: &str) -> Result<(), Error> {
    let tagged = || {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{TAG_BACKUP_ID}"))
            .values(backup_id)
            .build()
    };
    let images = ec2
        .call("DescribeImages", |c| {
            c.describe_images().owners("self").filters(tagged()).send()
        })
        .await?;
    for image in images.images() {
        if let Some(id) = image.image_id() {
            ec2.call("DeregisterImage", |c| {
                c.deregister_image().image_id(id).send()
            })
            .await?;
        }
    }
    let snapshots = ec2
        .call("DescribeSnapshots", |c| {
            c.describe_snapshots()
                .owner_ids("self")
                .filters(tagged())
                .send()
        })
        .await?;
    for s in snapshots.snapshots() {
        if let Some(id) = s.snapshot_id() {
            ec2.call("DeleteSnapshot", |c| {
                c.delete_snapshot().snapshot_id(id).send()
            })
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_age_keeps_everything_instead_of_wrapping_into_deleting_it() {
        let day = time::Duration::days(1);
        assert!(at_least(day, Duration::from_secs(86_400)));
        assert!(!at_least(day, Duration::from_secs(86_401)));
        // "Forever": u64::MAX seconds (what a huge max_age_days saturates to) as i64 is -1.
        assert!(!at_least(
            time::Duration::days(365 * 100),
            Duration::from_secs(u64::MAX)
        ));
        assert!(!at_least(
            time::Duration::days(365 * 100),
            Duration::from_secs(1 << 63)
        ));
        assert!(
            !at_least(-day, Duration::ZERO),
            "an age in the future is not old"
        );
    }

    #[test]
    fn only_what_backstop_names_and_marks_is_left_by_it() {
        let targets = vec!["shop".to_string(), "x".repeat(60)];
        let failed = "backstop:failed-state of shop at 20261125140311 UTC";
        let (kind, at) = left_by_backstop("shop_failed_20261125140311", failed, &targets).unwrap();
        assert_eq!(kind, "failed state");
        assert_eq!(at, time::macros::datetime!(2026-11-25 14:03:11 UTC));
        let long = derived_name(&"x".repeat(60), "failed_20261125140311");
        assert_eq!(
            left_by_backstop(&long, failed, &targets).unwrap().0,
            "failed state"
        );
        assert_eq!(
            left_by_backstop(
                "backstop_verify_20261125140311_0a1f",
                "backstop:verify-scratch restore test of backup b",
                &[]
            )
            .unwrap()
            .0,
            "drill scratch"
        );
        assert_eq!(
            left_by_backstop(
                "shop_restore_20261125140311",
                "backstop:restore-scratch",
                &targets
            )
            .unwrap()
            .0,
            "interrupted restore"
        );
        for not_ours in [
            "shop",
            "stock_failed_20261125140311",
            "shop_failed_2026112514031",
            "shop_failed_20261399140311",
            "backstop_verify_20261125140311",
            "backstop_verify_20261125140311_zzzz",
            "shopping_failed_20261125140311",
            "stock_restore_20261125140311",
            "shop_restore_2026112514031",
        ] {
            for comment in [
                failed,
                "backstop:verify-scratch",
                "backstop:restore-scratch",
            ] {
                assert!(
                    left_by_backstop(not_ours, comment, &targets).is_none(),
                    "{not_ours}"
                );
            }
        }
        // Named like Backstop's, but not marked as such (or marked as another kind): kept.
        for comment in [
            "",
            "the shop's archive of 2026",
            "backstop:failed-stateX",
            "backstop:verify-scratch",
            "Backstop:failed-state",
        ] {
            assert!(
                left_by_backstop("shop_failed_20261125140311", comment, &targets).is_none(),
                "{comment:?}"
            );
        }
    }
}
