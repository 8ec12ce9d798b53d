//! `backstop drill`: the restore drill, as the scheduled drill runs it; exits non-zero
//! (`DrillFailed`) when a drill fails.

use backstop_core::tasks::drill::{self, DrillTask};
use backstop_core::Error;
use clap::Args;

use crate::cli::CatalogArgs;
use crate::render;

#[derive(Args)]
pub struct DrillArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Only this application.
    #[arg(long)]
    application: Option<String>,
    /// How long a new volume may take to become available.
    #[arg(long, default_value_t = backstop_core::context::DEFAULT_DRILL_VOLUME_WAIT_SECONDS)]
    volume_wait_seconds: u64,
}

pub async fn run(args: DrillArgs, json: bool) -> Result<(), Error> {
    let ctx = args.catalog.context().await?;
    let reports = drill::run(
        &ctx,
        &DrillTask {
            application: args.application,
            volume_wait_seconds: args.volume_wait_seconds,
        },
    )
    .await?;
    if json {
        render::json(&reports);
    } else {
        render::drills(&reports);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.application.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(Error::DrillFailed(format!(
            "the drill of {} failed (see above)",
            failed.join(", ")
        )));
    }
    Ok(())
}
