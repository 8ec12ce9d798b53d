//! `backstop prune [--dry-run]`: the retention policy, as the scheduled prune applies it.

use backstop_core::tasks::prune::{self, PruneTask};
use backstop_core::Error;
use clap::Args;

use crate::cli::CatalogArgs;
use crate::render;

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Only this application's backups.
    #[arg(long)]
    application: Option<String>,
    /// Good (completed) backups always kept per application, newest first.
    #[arg(long, default_value_t = 3)]
    keep_last: usize,
    /// Backups (and replaced volumes) younger than this are kept.
    #[arg(long, default_value_t = 30)]
    max_age_days: u64,
    /// The protect state machine: backups its running executions use are kept.
    #[arg(long, env = "BACKSTOP_STATE_MACHINE_ARN")]
    state_machine_arn: Option<String>,
    /// Print the plan; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(args: PruneArgs, json: bool) -> Result<(), Error> {
    let mut ctx = args.catalog.context().await?;
    ctx.config.state_machine_arn = args.state_machine_arn.clone().filter(|a| !a.is_empty());
    let plan = prune::run(
        &ctx,
        &PruneTask {
            keep_last: args.keep_last,
            max_age_days: args.max_age_days,
            dry_run: args.dry_run,
            application: args.application.clone(),
        },
    )
    .await?;
    if json {
        render::json(&serde_json::json!({"dry_run": args.dry_run, "plan": plan}));
    } else {
        render::prune_plan(&plan, args.dry_run);
    }
    Ok(())
}
