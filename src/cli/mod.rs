//! The commands, one file each with its clap arguments and its `run`: `db`, `ec2`, `backups`,
//! `incidents`, `prune`, `drill` and `run` (one protected deploy). The arguments several
//! commands share (the catalog, the database) and how they become core values are here.

pub mod backups;
mod db;
mod drill;
pub mod ec2;
mod incidents;
mod prune;
mod run;

use backstop_core::aws::{load_config, s3_client, secrets_client};
use backstop_core::catalog::{Catalog, DEFAULT_PREFIX};
use backstop_core::db::target::{DbTarget, TlsPolicy};
use backstop_core::store::S3Store;
use backstop_core::{Config, Context, Error};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Back up what a deploy can break, prove it, put it back."
)]
pub struct Cli {
    /// Machine-readable JSON on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// PostgreSQL databases: backup, verify, restore.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// EC2 instances: snapshot sets or images, their status, restore.
    #[command(subcommand)]
    Ec2(ec2::Ec2Command),
    /// The backup catalog.
    #[command(subcommand)]
    Backups(backups::BackupsCommand),
    /// Incident reports of failed deploys (written beside their backups).
    #[command(subcommand)]
    Incidents(incidents::IncidentsCommand),
    /// Delete backups, forensic dumps, replaced volumes and left databases older than the
    /// policy; never the newest good backups of an application, nor one a running execution
    /// uses.
    Prune(prune::PruneArgs),
    /// Restore drill: the latest good backup of each application restored into a scratch
    /// database and unattached volumes, checked against its manifest, and removed; the report
    /// goes beside the backup. Exits non-zero when a drill fails.
    Drill(drill::DrillArgs),
    /// Start one protected deploy (an execution of the state machine) with a run document and
    /// follow it state by state; exits non-zero with the failure's error and cause.
    Run(run::RunArgs),
}

/// Runs the command.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let json = cli.json;
    match cli.command {
        Command::Db(cmd) => db::run(cmd, json).await,
        Command::Ec2(cmd) => ec2::run(cmd, json).await,
        Command::Backups(cmd) => backups::run(cmd, json).await,
        Command::Incidents(cmd) => incidents::run(cmd, json).await,
        Command::Prune(args) => prune::run(args, json).await,
        Command::Drill(args) => drill::run(args, json).await,
        Command::Run(args) => run::run(args, json).await,
    }
}

/// Where the catalog is.
#[derive(Args)]
pub struct CatalogArgs {
    /// The backup bucket.
    #[arg(long)]
    pub bucket: String,
    /// Key prefix of the catalog inside the bucket.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
}

impl CatalogArgs {
    /// The catalog in the bucket, with the standard AWS configuration.
    pub async fn catalog(&self) -> Result<Catalog, Error> {
        self.check_bucket()?;
        let shared = load_config().await;
        Catalog::new(
            std::sync::Arc::new(S3Store::new(s3_client(&shared), &self.bucket)),
            &self.prefix,
        )
    }

    /// The Lambdas' task context on this catalog, the rest of its configuration from the
    /// environment.
    pub async fn context(&self) -> Result<Context, Error> {
        self.check_bucket()?;
        let mut config = Config::from_env()?;
        config.bucket = self.bucket.clone();
        config.prefix = self.prefix.clone();
        Context::new(load_config().await, config)
    }

    fn check_bucket(&self) -> Result<(), Error> {
        if self.bucket.trim().is_empty() {
            return Err(Error::InvalidInput(
                "--bucket must not be empty".to_string(),
            ));
        }
        Ok(())
    }
}

/// Which database, and how to log in.
#[derive(Args)]
pub struct DatabaseArgs {
    /// postgres://user:password@host:port/db. Prefer the environment variable: argv is visible
    /// to other users of the machine.
    #[arg(long, env = "BACKSTOP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A Secrets Manager secret in the RDS shape (host, port, username, password, dbname).
    #[arg(long, conflicts_with = "database_url")]
    pub database_secret: Option<String>,
    /// Database name, overriding the secret's dbname.
    #[arg(long, requires = "database_secret")]
    pub dbname: Option<String>,
    /// libpq sslmode for the secret's server (a URL carries its own, so this is unused with
    /// one): disable, allow, prefer (the default), require, verify-ca or verify-full.
    #[arg(long, env = "BACKSTOP_DB_SSLMODE")]
    pub sslmode: Option<String>,
    /// The CA bundle to verify the secret's server with (RDS: global-bundle.pem); without
    /// it, the system's roots (unused with a URL, which carries its own).
    #[arg(long, env = "BACKSTOP_DB_SSLROOTCERT")]
    pub sslrootcert: Option<std::path::PathBuf>,
}

impl DatabaseArgs {
    /// Where the database is and how to log in.
    pub async fn target(&self) -> Result<DbTarget, Error> {
        match (&self.database_url, &self.database_secret) {
            (Some(url), None) => DbTarget::from_url(url),
            (None, Some(secret)) => {
                let tls = TlsPolicy::new(self.sslmode.clone(), self.sslrootcert.clone())?;
                let client = secrets_client(&load_config().await);
                let mut db = DbTarget::from_secret(&client, secret, self.dbname.as_deref()).await?;
                tls.secure(&mut db, None)?;
                Ok(db)
            }
            _ => Err(Error::InvalidInput(
                "give the database as --database-url (or BACKSTOP_DATABASE_URL) or \
                 --database-secret"
                    .to_string(),
            )),
        }
    }
}

/// `KEY=VALUE`, for clap.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Resolves on Ctrl-C (never, when the signal cannot be watched).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
