//! verify, mode `deployment` (VerifyDeploy): the deployment checks of the run document, as
//! rounds the state machine drives: each invocation carries on from `checks` (the progress the
//! last one returned) and runs rounds until the checks pass or its deadline comes near, then
//! returns `PENDING` and the wait before the next round, so a bake of any length never runs
//! past the function's timeout (which Step Functions would treat as a failed deploy). With the
//! backup id, a pass is recorded in its manifest (`deployed`), since from then on its
//! `app_version` is what runs, and `DeployProtected` is published.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::events::{EventDetail, Outcome};
use crate::context::Context;
use crate::error::Error;
use crate::model::manifest::Deployed;
use crate::model::run::{ChecksProgress, ChecksStatus, Deploy, RunDocument};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentTask {
    pub run: RunDocument,
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Where the last invocation left the checks; none (or null) before the first.
    #[serde(default)]
    pub checks: Option<ChecksProgress>,
}

pub async fn handle(ctx: &Context, task: DeploymentTask) -> Result<ChecksProgress, Error> {
    let run = &task.run;
    let progress = ctx.checker().rounds(run, task.checks.clone()).await?;
    if progress.status == ChecksStatus::Pending {
        return Ok(progress);
    }
    let summary = progress.summary.clone();
    if let Some(id) = &task.backup_id {
        // Without a deploy step the pipeline deploys later (guard mode): what runs now is not
        // yet this run's version.
        if run.deploy != Deploy::None {
            let at = OffsetDateTime::now_utc();
            ctx.catalog()
                .amend_manifest(&run.application, id, |m| {
                    m.deployed = Some(Deployed {
                        at,
                        checks: summary.clone(),
                    })
                })
                .await?;
        }
        let mut detail = EventDetail::new(&summary, &run.application, id);
        detail.commit = run.version.commit.clone();
        ctx.events()
            .publish(Outcome::DeployProtected, &detail)
            .await;
    }
    Ok(progress)
}
