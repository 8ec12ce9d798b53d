//! `backstop backups list|show`: the catalog's manifests.

use backstop_core::Error;
use clap::{Args, Subcommand};

use crate::cli::CatalogArgs;
use crate::render;

#[derive(Subcommand)]
pub enum BackupsCommand {
    /// List backups, newest first.
    List(ListArgs),
    /// Show one backup's manifest.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[arg(long)]
    pub application: Option<String>,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[arg(long)]
    pub backup_id: String,
}

pub async fn run(cmd: BackupsCommand, json: bool) -> Result<(), Error> {
    match cmd {
        BackupsCommand::List(args) => {
            let catalog = args.catalog.catalog().await?;
            let listing = catalog.list(args.application.as_deref()).await?;
            for skipped in &listing.skipped {
                eprintln!("skipped: {}", render::printable(skipped));
            }
            let manifests = listing.manifests;
            if json {
                render::json(&manifests);
            } else {
                render::backups(&manifests);
            }
        }
        BackupsCommand::Show(args) => {
            let catalog = args.catalog.catalog().await?;
            let manifest = catalog.find(&args.backup_id).await?;
            if json {
                render::json(&manifest);
            } else {
                render::manifest(&manifest);
            }
        }
    }
    Ok(())
}
