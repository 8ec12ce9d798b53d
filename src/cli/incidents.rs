//! `backstop incidents list|show`: the incident reports written beside failed deploys'
//! backups.

use backstop_core::model::incident::markdown;
use backstop_core::Error;
use clap::Subcommand;

use crate::cli::backups::{ListArgs, ShowArgs};
use crate::render;

#[derive(Subcommand)]
pub enum IncidentsCommand {
    /// List incident reports, newest first.
    List(ListArgs),
    /// Show one report (by backup id) as Markdown, or as JSON with --json.
    Show(ShowArgs),
}

pub async fn run(cmd: IncidentsCommand, json: bool) -> Result<(), Error> {
    match cmd {
        IncidentsCommand::List(args) => {
            let catalog = args.catalog.catalog().await?;
            let reports = catalog.incidents(args.application.as_deref()).await?;
            if json {
                render::json(&reports);
            } else {
                render::incidents(&reports);
            }
        }
        IncidentsCommand::Show(args) => {
            let catalog = args.catalog.catalog().await?;
            let report = catalog.incident(&args.backup_id).await?;
            if json {
                render::json(&report);
            } else {
                print!("{}", markdown(&report));
            }
        }
    }
    Ok(())
}
