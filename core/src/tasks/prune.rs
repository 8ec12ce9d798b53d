//! prune: the retention policy applied on a schedule (or from the CLI): per application the
//! newest good backups, those running executions use and those younger than the policy are
//! kept; everything else Backstop made is pruned (see [`crate::retention`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aws::sfn::running_executions;
use crate::context::Context;
use crate::db::target::DbTarget;
use crate::error::{Error, Named};
use crate::retention::{self, Plan, RetentionPolicy};
use crate::tasks::{check_scheduled, ScheduledEvent};

/// What to prune: the retention schedule's settings, or the CLI's arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneTask {
    pub keep_last: usize,
    pub max_age_days: u64,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub application: Option<String>,
}

/// The retention schedule fired: prunes with the deployment's policy
/// (`BACKSTOP_RETENTION_KEEP_LAST`, `…_MAX_AGE_DAYS`, `…_DRY_RUN`).
pub async fn handle(ctx: &Context, event: ScheduledEvent) -> Result<Plan, Error> {
    check_scheduled(&event)?;
    let r = &ctx.config.retention;
    let task = PruneTask {
        keep_last: r.keep_last,
        max_age_days: r.max_age_days,
        dry_run: r.dry_run,
        application: None,
    };
    run(ctx, &task).await
}

/// Applies the retention policy (or, in a dry run, only plans it) and returns the plan.
/// The servers searched for left databases are those of the database targets the catalog's
/// recorded runs name; one that cannot be resolved here is listed in `servers_skipped`.
pub async fn run(ctx: &Context, task: &PruneTask) -> Result<Plan, Error> {
    let running = match &ctx.config.state_machine_arn {
        Some(arn) => running_executions(ctx.sfn(), arn).await?,
        None => Vec::new(),
    };
    let policy = RetentionPolicy {
        keep_last: task.keep_last,
        max_age: Duration::from_secs(task.max_age_days.saturating_mul(86_400)),
    };
    let mut servers: Vec<DbTarget> = Vec::new();
    let mut unresolved = Vec::new();
    let mut seen = Vec::new();
    let listing = ctx.catalog().list(task.application.as_deref()).await?;
    let manifests = listing.manifests;
    for m in &manifests {
        for target in m.run.iter().flat_map(|r| r.targets.iter()) {
            if !target.is_database() || seen.contains(&(m.application.clone(), target.clone())) {
                continue;
            }
            seen.push((m.application.clone(), target.clone()));
            match ctx.database(&m.application, target).await {
                Ok(db) if !servers.contains(&db) => servers.push(db),
                Ok(_) => {}
                Err(e) => unresolved.push(format!("{}: {}", target.label(), Named(&e))),
            }
        }
    }
    let mut plan = retention::plan(
        &manifests,
        ctx.ec2(),
        &policy,
        &running,
        &servers,
        OffsetDateTime::now_utc(),
    )
    .await?;
    plan.servers_skipped.extend(unresolved);
    plan.manifests_skipped = listing.skipped;
    if !task.dry_run {
        retention::apply(ctx.catalog(), ctx.ec2(), &plan, &servers).await?;
    }
    Ok(plan)
}
