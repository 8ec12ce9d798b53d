//! `backstop`: the operator's command line over the Backstop core. Every command takes
//! `--json`, exits 0 only on success, shows a progress bar only when stderr is a terminal, and
//! uses the standard AWS configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials).

mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use backstop_core::backup::{backup_database, BackupRequest, Compression};
use backstop_core::catalog::{Catalog, Manifest, DEFAULT_PREFIX};
use backstop_core::dbconfig::DbTarget;
use backstop_core::download::DownloadTuning;
use backstop_core::pg::PgTools;
use backstop_core::restore::{restore_database, RestoreMode, RestoreRequest};
use backstop_core::s3::{client_from_env, S3Store};
use backstop_core::verify::verify_backup;
use backstop_core::Error;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Back up what a deploy can break, prove it, put it back."
)]
struct Cli {
    /// Machine-readable JSON on stdout (errors too).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PostgreSQL databases: backup, verify, restore.
    #[command(subcommand)]
    Db(DbCommand),
    /// The backup catalog.
    #[command(subcommand)]
    Backups(BackupsCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Stream a pg_dump of the database into S3 and record it in the catalog; prints the backup id.
    Backup(BackupArgs),
    /// Check a backup: size and SHA-256, archive readable, optionally a restore test.
    Verify(VerifyArgs),
    /// Restore a backup into the database.
    Restore(RestoreArgs),
}

#[derive(Subcommand)]
enum BackupsCommand {
    /// List backups, newest first.
    List(ListArgs),
    /// Show one backup's manifest.
    Show(ShowArgs),
}

#[derive(Args)]
struct CatalogArgs {
    /// The backup bucket.
    #[arg(long)]
    bucket: String,
    /// Key prefix of the catalog inside the bucket.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
}

#[derive(Args)]
struct DatabaseArgs {
    /// postgres://user:password@host:port/db. Prefer the environment variable: argv is visible
    /// to other users of the machine.
    #[arg(long, env = "BACKSTOP_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A Secrets Manager secret in the RDS shape (host, port, username, password, dbname).
    #[arg(long, conflicts_with = "database_url")]
    database_secret: Option<String>,
    /// Database name, overriding the secret's dbname.
    #[arg(long, requires = "database_secret")]
    dbname: Option<String>,
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Application the backup belongs to (default: the database name).
    #[arg(long)]
    application: Option<String>,
    /// Application version or commit being protected.
    #[arg(long)]
    app_version: Option<String>,
    /// auto (zstd with pg_dump 16+, else gzip), none, gzip[:1-9], zstd[:1-22].
    #[arg(long, default_value = "auto")]
    compression: String,
    /// Give up (and abort the upload) after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// Also restore into a scratch database on the --database-url server and compare row counts.
    #[arg(long)]
    restore_test: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    #[command(flatten)]
    db: DatabaseArgs,
    /// swap: restore into a new database and swap it in, keeping the old one as
    /// <db>_failed_<timestamp>; in-place: pg_restore --clean --single-transaction.
    #[arg(long, default_value = "swap")]
    mode: String,
    /// Which database of the backup to restore, when it holds several.
    #[arg(long)]
    database: Option<String>,
    /// In-place only: skip the forensic dump of the current state.
    #[arg(long)]
    no_forensic_dump: bool,
    /// Give up after this many seconds (the target is left as it was).
    #[arg(long)]
    timeout: Option<u64>,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    application: Option<String>,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let body = serde_json::json!({"error": {"type": e.error_type(), "message": e.to_string()}});
                println!("{body}");
            } else {
                eprintln!("error: {}: {e}", e.error_type());
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKSTOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn catalog(args: &CatalogArgs) -> Result<Catalog, Error> {
    if args.bucket.trim().is_empty() {
        return Err(Error::InvalidInput(
            "--bucket must not be empty".to_string(),
        ));
    }
    Catalog::new(
        S3Store::new(client_from_env().await, &args.bucket),
        &args.prefix,
    )
}

async fn database(args: &DatabaseArgs) -> Result<DbTarget, Error> {
    match (&args.database_url, &args.database_secret) {
        (Some(url), None) => DbTarget::from_url(url),
        (None, Some(secret)) => {
            let shared = aws_config_load().await;
            let client = backstop_core::dbconfig::secrets_client(&shared);
            DbTarget::from_secret(&client, secret, args.dbname.as_deref()).await
        }
        _ => Err(Error::InvalidInput(
            "give the database as --database-url (or BACKSTOP_DATABASE_URL) or --database-secret"
                .to_string(),
        )),
    }
}

async fn aws_config_load() -> backstop_core::dbconfig::SharedConfig {
    backstop_core::dbconfig::load_aws_config().await
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let json = cli.json;
    let tools = PgTools::from_env();
    let bar = progress::Bar::for_stderr();
    match cli.command {
        Command::Db(DbCommand::Backup(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let db = database(&args.db).await?;
            let mut req = BackupRequest::new(args.application.unwrap_or_else(|| db.dbname.clone()));
            req.app_version = args.app_version;
            req.compression = args.compression.parse::<Compression>()?;
            req.timeout = args.timeout.map(Duration::from_secs);
            let manifest = backup_database(&catalog, &tools, &db, &req, &bar, ctrl_c()).await?;
            if json {
                print_json(&manifest);
            } else {
                println!("{}", manifest.backup_id);
            }
        }
        Command::Db(DbCommand::Verify(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let server = if args.restore_test {
                Some(database(&args.db).await?)
            } else {
                None
            };
            let report = verify_backup(
                &catalog,
                &tools,
                &args.backup_id,
                server.as_ref(),
                DownloadTuning::default(),
                &bar,
            )
            .await?;
            if json {
                print_json(&report);
            } else {
                for d in &report.databases {
                    let test = match d.restore_test_tables {
                        Some(n) => format!(", restore test: {n} tables match the manifest"),
                        None => String::new(),
                    };
                    println!(
                        "{} {}: {} bytes, SHA-256 matches, {} archive entries{test}",
                        report.backup_id, d.database, d.bytes, d.archive_entries
                    );
                }
            }
        }
        Command::Db(DbCommand::Restore(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let db = database(&args.db).await?;
            let mut req = RestoreRequest::new(args.backup_id, args.mode.parse::<RestoreMode>()?);
            req.database = args.database;
            req.forensic_dump = !args.no_forensic_dump;
            req.timeout = args.timeout.map(Duration::from_secs);
            let report = restore_database(&catalog, &tools, &db, &req, &bar, ctrl_c()).await?;
            if json {
                print_json(&report);
            } else {
                println!(
                    "restored backup {} into {} ({} tables, row counts match the manifest) in {:.1} s",
                    report.backup_id,
                    report.database,
                    report.tables.len(),
                    report.seconds
                );
                if let Some(kept) = &report.failed_state_database {
                    println!("the previous state is kept as database {kept}");
                }
                if let Some(id) = &report.forensic_backup_id {
                    println!("the previous state was dumped first as backup {id}");
                }
                if !report.tables_not_in_backup.is_empty() {
                    println!(
                        "left in place (not in the backup): {}",
                        report.tables_not_in_backup.join(", ")
                    );
                }
            }
        }
        Command::Backups(BackupsCommand::List(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let manifests = catalog.list(args.application.as_deref()).await?;
            if json {
                print_json(&manifests);
            } else {
                print_table(&manifests);
            }
        }
        Command::Backups(BackupsCommand::Show(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let manifest = catalog.find(&args.backup_id).await?;
            if json {
                print_json(&manifest);
            } else {
                print_manifest(&manifest);
            }
        }
    }
    Ok(())
}

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot serialise the output: {e}"),
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn print_table(manifests: &[Manifest]) {
    println!(
        "{:<28} {:<22} {:<16} {:<14} {:>12} {:<10}",
        "ID", "STARTED", "APPLICATION", "VERSION", "SIZE", "STATE"
    );
    for m in manifests {
        let kind = match &m.purpose {
            backstop_core::catalog::Purpose::Backup => String::new(),
            backstop_core::catalog::Purpose::Forensic { .. } => " (forensic)".to_string(),
        };
        println!(
            "{:<28} {:<22} {:<16} {:<14} {:>12} {}{kind}",
            m.backup_id,
            rfc3339(m.started_at),
            m.application,
            m.app_version.as_deref().unwrap_or("-"),
            progress::human_bytes(m.total_bytes()),
            m.state
        );
    }
}

fn print_manifest(m: &Manifest) {
    println!("backup       {}", m.backup_id);
    println!("application  {}", m.application);
    println!("version      {}", m.app_version.as_deref().unwrap_or("-"));
    println!("state        {}", m.state);
    println!("started      {}", rfc3339(m.started_at));
    println!("finished     {}", rfc3339(m.finished_at));
    if let backstop_core::catalog::Purpose::Forensic { restore_of } = &m.purpose {
        println!("forensic     state before restoring {restore_of}");
    }
    if let Some(e) = &m.error {
        println!("error        {e}");
    }
    for d in &m.databases {
        println!(
            "database     {} on {} (PostgreSQL {}, pg_dump {}, {})",
            d.database, d.server, d.server_version, d.pg_dump_version, d.compression
        );
        println!(
            "  artifact   s3://…/{} {} in {} parts",
            d.artifact.key,
            progress::human_bytes(d.artifact.bytes),
            d.artifact.parts
        );
        println!("  sha256     {}", d.artifact.sha256);
        for t in &d.tables {
            println!("  table      {}.{}: {} rows", t.schema, t.table, t.rows);
        }
    }
}
