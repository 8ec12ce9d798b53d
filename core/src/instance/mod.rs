//! EC2 instances: backing them up as crash-consistent snapshot sets or images, polled to
//! completion with the catalog kept in step ([`backup`]), and putting them back as a
//! resumable sequence of steps, by swapping volumes or replacing the root ([`restore`]).

pub mod backup;
pub mod restore;

use std::collections::BTreeMap;

use crate::aws::ec2::Ec2;
use crate::error::Error;

/// The instances an instance target names: its id, or every instance its tags match now.
pub async fn target_instance_ids(
    ec2: &Ec2,
    instance_id: &Option<String>,
    tags: &BTreeMap<String, String>,
) -> Result<Vec<String>, Error> {
    if let Some(id) = instance_id {
        return Ok(vec![id.clone()]);
    }
    let tags: Vec<(String, String)> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(backup::resolve_targets(ec2, &[], &tags)
        .await?
        .into_iter()
        .map(|i| i.instance_id)
        .collect())
}
