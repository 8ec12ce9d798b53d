//! verify, mode `deployment` (VerifyDeploy): the deployment checks of the run document. With
//! the backup id, a pass is recorded in its manifest (`deployed`), since from then on its
//! `app_version` is what runs, and `DeployProtected` is published.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::events::{EventDetail, Outcome};
use crate::context::Context;
use crate::error::Error;
use crate::model::manifest::Deployed;
use crate::model::run::{Deploy, RunDocument};
use crate::tasks::verify::VerifyReport;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentTask {
    pub run: RunDocument,
    #[serde(default)]
    pub backup_id: Option<String>,
}

pub async fn handle(ctx: &Context, task: DeploymentTask) -> Result<VerifyReport, Error> {
    let run = &task.run;
    let summary = ctx.checker().run(run).await?;
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
    Ok(VerifyReport::summary(summary))
}
