//! The EC2 adapter: one client wrapper that maps a call still throttled after the SDK's
//! retries to the named `Throttled` error and every other failure to `Ec2Error` (keeping the
//! SDK's error as the source), and reads the instances and volumes the backup and restore
//! operations work on. The tags Backstop puts on everything it creates are named here.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceStateName, ResourceType, Tag, TagSpecification, Volume,
};

use crate::aws::{named_error, ServiceError};
use crate::error::Error;

/// Tag on everything a backup creates: the backup id.
pub const TAG_BACKUP_ID: &str = "backstop:backup-id";
/// Tag on everything a backup creates: the application.
pub const TAG_APPLICATION: &str = "backstop:application";
/// Tag on everything a backup creates: the application commit or version being protected.
pub const TAG_COMMIT: &str = "backstop:commit";
/// Tag on snapshots, images and restored volumes: the instance they belong to.
pub const TAG_INSTANCE_ID: &str = "backstop:instance-id";
/// Tag on snapshots and restored volumes: the device name on the instance.
pub const TAG_DEVICE: &str = "backstop:device";
/// Tag on restored volumes, replaced volumes and replace-root tasks: the restore run.
pub const TAG_RESTORE_ID: &str = "backstop:restore-id";
/// Tag on a replaced volume: the volume that took its place.
pub const TAG_REPLACED_BY: &str = "backstop:replaced-by";
/// Tag on a replaced volume: `<instance-id>:<device>` whose failed state it holds.
pub const TAG_FAILED_STATE_OF: &str = "backstop:failed-state-of";
/// Tag on a replaced volume: the restore that replaced it.
pub const TAG_REPLACED_IN: &str = "backstop:replaced-in";
/// Tag on every volume a drill creates: the drill's id.
pub const TAG_DRILL: &str = "backstop:drill";
/// Tag on every volume a drill creates: the backup it came from.
pub const TAG_DRILL_OF: &str = "backstop:drill-of";

/// EC2's own error.
const EC2: ServiceError = |operation, code, reason, source| Error::Ec2 {
    operation,
    code,
    reason,
    source,
};

/// An EC2 client whose failures are named errors.
#[derive(Clone, Debug)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
}

/// One instance as the backup and restore operations see it.
#[derive(Clone, Debug)]
pub struct InstanceView {
    pub instance_id: String,
    pub availability_zone: String,
    pub state: InstanceStateName,
    pub root_device: Option<String>,
    /// Device name to attached EBS volume id.
    pub devices: BTreeMap<String, String>,
}

impl Ec2 {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Ec2 { client }
    }

    /// A client of the shared configuration.
    pub fn from_config(shared: &crate::aws::SharedConfig) -> Self {
        Ec2::new(aws_sdk_ec2::Client::new(shared))
    }

    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Runs one call (the SDK retries it while AWS throttles it) and names its failure.
    pub async fn call<T, E, R, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, Error>
    where
        F: FnOnce(&aws_sdk_ec2::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        crate::aws::permissions::check(&format!("ec2:{operation}"))?;
        f(&self.client).await.map_err(|err| {
            let retry = self.client.config().retry_config();
            named_error(err, "EC2", operation, retry, EC2)
        })
    }

    /// Describes instances by id; an unknown id is `InstanceNotFound`.
    pub async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<InstanceView>, Error> {
        let mut found = Vec::new();
        for id in ids {
            if !id.starts_with("i-") || id.len() < 3 {
                return Err(Error::InvalidInput(format!(
                    "{id:?} is not an instance id (i-…)"
                )));
            }
            let out = self
                .call("DescribeInstances", |c| {
                    c.describe_instances().instance_ids(id.clone()).send()
                })
                .await
                .map_err(|e| not_found_as(e, id))?;
            let views: Vec<InstanceView> = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(view)
                .filter(|v| v.state != InstanceStateName::Terminated)
                .collect();
            match views.into_iter().next() {
                Some(v) => found.push(v),
                None => {
                    return Err(Error::InstanceNotFound {
                        instance_id: id.clone(),
                    })
                }
            }
        }
        Ok(found)
    }

    /// Instances (not terminated) carrying every `key=value` tag; none is `NoInstancesMatched`.
    pub async fn instances_by_tags(
        &self,
        tags: &[(String, String)],
    ) -> Result<Vec<InstanceView>, Error> {
        let mut req_filters: Vec<Filter> = tags
            .iter()
            .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
            .collect();
        req_filters.push(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        );
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .call("DescribeInstances", |c| {
                    c.describe_instances()
                        .set_filters(Some(req_filters.clone()))
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            found.extend(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(view),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        if found.is_empty() {
            return Err(Error::NoInstancesMatched {
                filter: tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(found)
    }

    /// One instance; a missing or terminated one is `InstanceNotFound`.
    pub async fn instance(&self, id: &str) -> Result<InstanceView, Error> {
        let mut all = self.instances_by_id(&[id.to_string()]).await?;
        Ok(all.remove(0))
    }

    /// Volumes by id, in the order given.
    pub async fn volumes(&self, ids: &[String]) -> Result<Vec<Volume>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .call("DescribeVolumes", |c| {
                c.describe_volumes()
                    .set_volume_ids(Some(ids.to_vec()))
                    .send()
            })
            .await?;
        let mut vols = out.volumes().to_vec();
        vols.sort_by_key(|v| ids.iter().position(|i| Some(i.as_str()) == v.volume_id()));
        Ok(vols)
    }

    /// Those of `ids` that carry this backup's id tag (`backstop:backup-id=backup_id`): asked
    /// by id with the tag as a filter, each answer's tag checked again. Backstop uses or deletes
    /// a snapshot only when it is in this list.
    pub async fn snapshots_of_backup(
        &self,
        ids: &[String],
        backup_id: &str,
    ) -> Result<Vec<String>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filters = tag_filters(&[(TAG_BACKUP_ID, backup_id)]);
        let out = self
            .call("DescribeSnapshots", |c| {
                c.describe_snapshots()
                    .set_snapshot_ids(Some(ids.to_vec()))
                    .set_filters(Some(filters.clone()))
                    .send()
            })
            .await?;
        Ok(out
            .snapshots()
            .iter()
            .filter(|s| tag_value(s.tags(), TAG_BACKUP_ID) == Some(backup_id))
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect())
    }

    /// The image `image_id` when it carries this backup's id tag; `None` when it does not
    /// (or no longer exists).
    pub async fn image_of_backup(
        &self,
        image_id: &str,
        backup_id: &str,
    ) -> Result<Option<aws_sdk_ec2::types::Image>, Error> {
        let out = self
            .call("DescribeImages", |c| {
                c.describe_images().image_ids(image_id).send()
            })
            .await?;
        Ok(out
            .images()
            .iter()
            .find(|i| {
                i.image_id() == Some(image_id)
                    && tag_value(i.tags(), TAG_BACKUP_ID) == Some(backup_id)
            })
            .cloned())
    }

    /// Volumes carrying every `key=value` tag.
    pub async fn volumes_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<Volume>, Error> {
        let filters = tag_filters(tags);
        let out = self
            .call("DescribeVolumes", |c| {
                c.describe_volumes()
                    .set_filters(Some(filters.clone()))
                    .send()
            })
            .await?;
        Ok(out.volumes().to_vec())
    }

    /// Adds (or overwrites) tags on resources.
    pub async fn tag(&self, resources: &[String], tags: &[(String, String)]) -> Result<(), Error> {
        if resources.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let tags: Vec<Tag> = tags.iter().map(|(k, v)| tag(k, v)).collect();
        self.call("CreateTags", |c| {
            c.create_tags()
                .set_resources(Some(resources.to_vec()))
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await?;
        Ok(())
    }
}

/// `InvalidInstanceID.NotFound` (and `.Malformed`) become `InstanceNotFound`.
fn not_found_as(e: Error, id: &str) -> Error {
    match &e {
        Error::Ec2 { code, .. } if code.starts_with("InvalidInstanceID") => {
            Error::InstanceNotFound {
                instance_id: id.to_string(),
            }
        }
        _ => e,
    }
}

fn view(i: &Instance) -> InstanceView {
    InstanceView {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .cloned()
            .unwrap_or_else(|| InstanceStateName::from("unknown")),
        root_device: i.root_device_name().map(str::to_string),
        devices: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.device_name()?.to_string(),
                    m.ebs()?.volume_id()?.to_string(),
                ))
            })
            .collect(),
    }
}

/// One tag.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// A tag specification for one resource type.
pub fn tag_spec(resource: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()))
        .build()
}

/// `tag:<key>` filters.
pub fn tag_filters(tags: &[(&str, &str)]) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| {
            Filter::builder()
                .name(format!("tag:{k}"))
                .values(*v)
                .build()
        })
        .collect()
}

/// A tag's value on a tagged resource.
pub fn tag_value<'t>(tags: &'t [Tag], key: &str) -> Option<&'t str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The most tags one EC2 resource can carry.
/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions>
pub const MAX_TAGS: usize = 50;

/// The user tags of a resource that may be copied onto one that will also carry `own` tags of
/// Backstop's: never `aws:` (AWS reserves the prefix) or `backstop:` keys, and no more than
/// fit under [`MAX_TAGS`] beside the `own` ones (the first ones in key order, so a retry
/// copies the same set).
pub fn copyable_tags(tags: &[Tag], own: usize) -> Vec<(String, String)> {
    let mut copied: Vec<(String, String)> = tags
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("backstop:"))
        .collect();
    copied.sort();
    copied.truncate(MAX_TAGS.saturating_sub(own));
    copied
}

/// An EC2 idempotency token for the request that `parts` identify: `backstop-` and 40 hex
/// digits of the parts' SHA-256, 49 ASCII characters whatever the parts' lengths (EC2 takes up
/// to 64: <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>), the
/// same on every retry and every resumed run of that request.
pub fn client_token(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0u8]);
    }
    let digest = hex::encode(hash.finalize());
    format!("backstop-{}", &digest[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_token_fits_ec2_whatever_its_parts_and_names_them_exactly() {
        let long = "codepipeline-0f3c2a4e-9b1d-4c8e-a6f2-7d5e9b3c1a20".repeat(4);
        let token = client_token(&["CreateReplaceRootVolumeTask", &long, "i-0a1b2c3d4e5f60718"]);
        assert_eq!(token.len(), 49);
        assert!(
            token.is_ascii() && token.starts_with("backstop-"),
            "{token}"
        );
        assert_eq!(
            token,
            client_token(&["CreateReplaceRootVolumeTask", &long, "i-0a1b2c3d4e5f60718"])
        );
        assert_ne!(client_token(&["a", "bc"]), client_token(&["ab", "c"]));
    }

    #[test]
    fn copied_tags_leave_room_for_backstops_own_under_ec2s_fifty() {
        let tags: Vec<Tag> = (0..60)
            .map(|i| tag(&format!("k{i:02}"), "v"))
            .chain([
                tag("aws:cloudformation:stack-name", "s"),
                tag("backstop:x", "y"),
            ])
            .collect();
        let copied = copyable_tags(&tags, 5);
        assert_eq!(copied.len(), MAX_TAGS - 5);
        assert!(copied.iter().all(|(k, _)| k.starts_with('k')), "{copied:?}");
        assert_eq!(copied[0].0, "k00", "the same tags on every retry");
        assert!(copyable_tags(&tags, 60).is_empty());
    }
}
