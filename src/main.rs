//! `backstop`: the operator's command line over the Backstop core. Every command takes
//! `--json`, exits 0 only on success, shows a progress bar only when stderr is a terminal, and
//! uses the standard AWS configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials).

mod follow;
mod local;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use backstop_core::backup::{backup_database, BackupRequest, Compression};
use backstop_core::catalog::{
    new_backup_id, BackupState, Catalog, InstanceBackup, InstanceBackupMode, Manifest,
    DEFAULT_PREFIX,
};
use backstop_core::dbconfig::DbTarget;
use backstop_core::download::DownloadTuning;
use backstop_core::ec2::Ec2;
use backstop_core::incident;
use backstop_core::instance_backup::{
    poll_instance_backup, record_outcome, record_started, resolve_targets, start_instance_backup,
    wait_for_backup, InstanceBackupRequest, InstanceJob,
};
use backstop_core::instance_restore::{restore_instance, InstanceRestore, InstanceRestoreMode};
use backstop_core::pg::PgTools;
use backstop_core::poll::{JobStatus, PollPolicy};
use backstop_core::restore::{restore_database, RestoreMode, RestoreRequest};
use backstop_core::s3::{client_from_env, S3Store};
use backstop_core::tasks::{self, Context, PruneTask};
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
    /// EC2 instances: snapshot sets or images, their status, restore.
    #[command(subcommand)]
    Ec2(Ec2Command),
    /// The backup catalog.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Incident reports of failed deploys (written beside their backups).
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// Delete backups, forensic dumps, replaced volumes and left databases older than the
    /// policy; never the newest good backups of an application, nor one a running execution
    /// uses.
    Prune(PruneArgs),
    /// Restore drill: the latest good backup of each application restored into a scratch
    /// database and unattached volumes, checked against its manifest, and removed; the report
    /// goes beside the backup. Exits non-zero when a drill fails.
    Drill(DrillArgs),
    /// Run the local default: moto with its Step Functions engine, the project's functions
    /// served on its Lambda port, the bucket and the protect state machine. Prints one JSON
    /// line (endpoint, state_machine_arn, …) and runs until Ctrl-C.
    Local(LocalArgs),
    /// Start one protected deploy (an execution of the state machine) with a run document and
    /// follow it state by state; exits non-zero with the failure's error and cause.
    Run(RunArgs),
}

#[derive(Args)]
struct LocalArgs {
    #[arg(long, default_value = "backstop-local")]
    bucket: String,
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// A stand-in for one of your functions (a deploy): NAME=SHELL-COMMAND, run with the
    /// payload on stdin; a non-zero exit is a function error (repeatable).
    #[arg(long = "function")]
    functions: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// The run document (JSON file; - for stdin).
    #[arg(long)]
    input: String,
    /// The protect state machine.
    #[arg(long, env = "BACKSTOP_STATE_MACHINE_ARN")]
    state_machine_arn: String,
    /// The execution name, which is also the backup id (default: a new backup id).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Ec2Command {
    /// Snapshot every attached EBS volume of the instances as one crash-consistent set (or
    /// create an image), record them in the catalog, and wait until they complete.
    Backup(Ec2BackupArgs),
    /// Poll a backup's snapshots or images once, record the outcome, print each instance's
    /// status (PENDING with progress, COMPLETED, FAILED, TIMED_OUT).
    Status(Ec2StatusArgs),
    /// Put instances back to a backup: swap in volumes created from its snapshots (or replace
    /// the root volume), keeping the replaced volumes. Resumable with --restore-id.
    Restore(Ec2RestoreArgs),
}

#[derive(Args)]
struct Ec2BackupArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Instance to back up (repeatable).
    #[arg(long = "instance-id")]
    instance_ids: Vec<String>,
    /// Back up the instances carrying this tag, KEY=VALUE (repeatable; all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// snapshots (CreateSnapshots, crash-consistent across volumes) or image (CreateImage).
    #[arg(long, default_value = "snapshots")]
    mode: String,
    /// Application the backup belongs to (default: the instance id, when there is one).
    #[arg(long)]
    application: Option<String>,
    /// Application version or commit being protected (tagged backstop:commit).
    #[arg(long)]
    app_version: Option<String>,
    /// Reuse this backup id: a retried call finds what the first one created.
    #[arg(long)]
    backup_id: Option<String>,
    /// Snapshots mode: leave out the boot volume.
    #[arg(long)]
    exclude_boot: bool,
    /// Snapshots mode: only this device, e.g. /dev/sdf (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Image mode: reboot the instance for a file-system-consistent image (default: no reboot).
    #[arg(long)]
    reboot: bool,
    /// Return once the snapshots are started; `ec2 status` follows them.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting (TIMED_OUT, snapshots deleted) this many seconds after the start.
    #[arg(long, default_value_t = 7200)]
    timeout: u64,
}

#[derive(Args)]
struct Ec2StatusArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// The deadline, in seconds after the backup started, past which a pending backup is TIMED_OUT.
    #[arg(long, default_value_t = 7200)]
    timeout: u64,
}

#[derive(Args)]
struct Ec2RestoreArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[arg(long)]
    backup_id: String,
    /// Restore only this instance of the backup.
    #[arg(long)]
    instance_id: Option<String>,
    /// swap-volumes (any volume) or replace-root (a replace-root-volume task, old root kept).
    #[arg(long, default_value = "swap-volumes")]
    mode: String,
    /// Resume an interrupted restore: the id it printed.
    #[arg(long)]
    restore_id: Option<String>,
    /// Give up waiting after this many seconds (rerun with the restore id to resume).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
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
struct PruneArgs {
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

#[derive(Args)]
struct DrillArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Only this application.
    #[arg(long)]
    application: Option<String>,
    /// How long a new volume may take to become available.
    #[arg(long, default_value_t = 600)]
    volume_wait_seconds: u64,
}

#[derive(Subcommand)]
enum IncidentsCommand {
    /// List incident reports, newest first.
    List(ListArgs),
    /// Show one report (by backup id) as Markdown, or as JSON with --json.
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
    /// Add to (or retry) this backup id: other targets of the same backup are kept, and a
    /// database already in it is not dumped again.
    #[arg(long)]
    backup_id: Option<String>,
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

/// The Lambdas' task context on the catalog's bucket and prefix, from the environment.
async fn task_context(args: &CatalogArgs) -> Result<Context, Error> {
    if args.bucket.trim().is_empty() {
        return Err(Error::InvalidInput(
            "--bucket must not be empty".to_string(),
        ));
    }
    Context::new(&aws_config_load().await, &args.bucket, &args.prefix)
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
            req.backup_id = args.backup_id;
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
        Command::Ec2(cmd) => ec2_command(cmd, json, &bar).await?,
        Command::Local(args) => {
            let mut functions = std::collections::BTreeMap::new();
            for f in &args.functions {
                match f.split_once('=') {
                    Some((name, cmd)) if !name.is_empty() && !cmd.is_empty() => {
                        functions.insert(name.to_string(), cmd.to_string());
                    }
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "--function {f:?} is not NAME=COMMAND"
                        )))
                    }
                }
            }
            local::run(local::LocalOptions {
                bucket: args.bucket,
                prefix: args.prefix,
                region: args.region,
                functions,
            })
            .await?;
        }
        Command::Run(args) => {
            let input = if args.input == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| Error::InvalidInput(format!("reading stdin: {e}")))?;
                s
            } else {
                std::fs::read_to_string(&args.input)
                    .map_err(|e| Error::InvalidInput(format!("{}: {e}", args.input)))?
            };
            let document: serde_json::Value = serde_json::from_str(&input)
                .map_err(|e| Error::InvalidInput(format!("{}: not JSON: {e}", args.input)))?;
            // Checked here too, so a bad document fails before an execution starts.
            backstop_core::run::RunDocument::parse(document)?;
            let name = args
                .name
                .unwrap_or_else(|| new_backup_id(time::OffsetDateTime::now_utc()));
            let shared = aws_config_load().await;
            let sfn = aws_sdk_sfn::Client::new(&shared);
            let outcome = follow::run(&sfn, &args.state_machine_arn, &name, &input, !json).await?;
            if json {
                print_json(&outcome);
            } else {
                let total: f64 = outcome.states.iter().map(|(_, s)| s).sum::<f64>();
                println!(
                    "{} {} ({} history events, {total:.1} s in states)",
                    outcome.name, outcome.status, outcome.events
                );
            }
            if outcome.status != "SUCCEEDED" {
                return Err(Error::ExecutionFailed {
                    name: outcome.name,
                    status: outcome.status,
                    error: outcome.error.unwrap_or_default(),
                    cause: outcome.cause.unwrap_or_default(),
                });
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
        Command::Drill(args) => {
            let ctx = task_context(&args.catalog).await?;
            let reports = backstop_core::drill::run(
                &ctx,
                &backstop_core::drill::DrillTask {
                    application: args.application,
                    volume_wait_seconds: args.volume_wait_seconds,
                },
            )
            .await?;
            if json {
                print_json(&reports);
            } else {
                for r in &reports {
                    println!("{:<16} {}", r.application, r.summary());
                    if !r.report_key.is_empty() {
                        println!("{:<16} report: {}", "", r.report_key);
                    }
                }
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
        }
        Command::Prune(args) => {
            let mut ctx = task_context(&args.catalog).await?;
            ctx.state_machine_arn = args.state_machine_arn.clone().filter(|a| !a.is_empty());
            let plan = tasks::prune(
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
                print_json(&serde_json::json!({"dry_run": args.dry_run, "plan": plan}));
            } else {
                for d in &plan.backups {
                    println!(
                        "{:<6} {:<16} {:<32} {}",
                        d.action, d.application, d.backup_id, d.reason
                    );
                }
                for v in &plan.volumes {
                    println!(
                        "{:<6} {:<16} {:<32} a replaced volume older than the policy",
                        "prune", "-", v
                    );
                }
                for d in &plan.databases {
                    println!(
                        "{:<6} {:<16} {:<32} a {} database on {} older than the policy",
                        "prune", "-", d.database, d.kind, d.server
                    );
                }
                for s in &plan.servers_skipped {
                    println!("{:<6} {:<16} {:<32} not searched: {s}", "skip", "-", "-");
                }
                println!(
                    "{} backup(s), {} volume(s) and {} database(s) {}",
                    plan.to_prune().count(),
                    plan.volumes.len(),
                    plan.databases.len(),
                    if args.dry_run {
                        "would be pruned (dry run: nothing deleted)"
                    } else {
                        "pruned"
                    }
                );
            }
        }
        Command::Incidents(IncidentsCommand::List(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let reports = incident::list(&catalog, args.application.as_deref()).await?;
            if json {
                print_json(&reports);
            } else {
                println!(
                    "{:<20} {:<32} {:<14} {:<12} ORIGINAL ERROR",
                    "WRITTEN", "BACKUP", "OUTCOME", "DEPLOYED"
                );
                for r in &reports {
                    println!(
                        "{:<20} {:<32} {:<14} {:<12} {}",
                        r.written_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                            .chars()
                            .take(19)
                            .collect::<String>(),
                        r.backup_id,
                        r.outcome,
                        r.versions.deploy_commit.as_deref().unwrap_or("-"),
                        r.original_error
                    );
                }
            }
        }
        Command::Incidents(IncidentsCommand::Show(args)) => {
            let catalog = catalog(&args.catalog).await?;
            let (report, markdown) = incident::show(&catalog, &args.backup_id).await?;
            if json {
                print_json(&report);
            } else {
                print!("{markdown}");
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

async fn ec2_command(cmd: Ec2Command, json: bool, bar: &progress::Bar) -> Result<(), Error> {
    let ec2 = Ec2::from_env().await;
    match cmd {
        Ec2Command::Backup(args) => {
            let catalog = catalog(&args.catalog).await?;
            let mode = args.mode.parse::<InstanceBackupMode>()?;
            let tags = args
                .tags
                .iter()
                .map(|t| match t.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => Err(Error::InvalidInput(format!("--tag {t:?} is not KEY=VALUE"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let application = match (&args.application, args.instance_ids.as_slice()) {
                (Some(a), _) => a.clone(),
                (None, [one]) if tags.is_empty() => one.clone(),
                _ => {
                    return Err(Error::InvalidInput(
                        "name the --application of a backup of several or tagged instances"
                            .to_string(),
                    ))
                }
            };
            let now = time::OffsetDateTime::now_utc();
            let backup_id = args.backup_id.unwrap_or_else(|| new_backup_id(now));
            let mut req = InstanceBackupRequest::new(&backup_id, &application, mode);
            req.commit = args.app_version;
            req.exclude_boot = args.exclude_boot;
            req.devices = args.devices;
            req.no_reboot = !args.reboot;
            catalog.store.check_bucket().await?;
            let instances = resolve_targets(&ec2, &args.instance_ids, &tags).await?;
            let mut entries = Vec::new();
            for instance in &instances {
                entries.push(start_instance_backup(&ec2, &req, instance).await?);
            }
            let manifest = record_started(&catalog, &req, &entries, now).await?;
            if !json {
                eprintln!("backup {backup_id}: started for {}", ids_of(&entries));
            }
            let manifest = if args.no_wait {
                manifest
            } else {
                let jobs: Vec<InstanceJob> = entries
                    .iter()
                    .map(|e| InstanceJob::of(&backup_id, &application, e, manifest.started_at))
                    .collect();
                let policy = PollPolicy {
                    deadline_seconds: args.timeout,
                    ..PollPolicy::default()
                };
                wait_for_backup(&ec2, &catalog, &jobs, &policy, bar).await?
            };
            if json {
                print_json(&manifest);
            } else {
                println!("{}", manifest.backup_id);
            }
        }
        Ec2Command::Status(args) => {
            let catalog = catalog(&args.catalog).await?;
            let manifest = catalog.find(&args.backup_id).await?;
            let policy = PollPolicy {
                deadline_seconds: args.timeout,
                ..PollPolicy::default()
            };
            let now = time::OffsetDateTime::now_utc();
            let mut statuses = Vec::new();
            for entry in &manifest.instances {
                let status = match entry.state {
                    BackupState::Completed => JobStatus::Completed,
                    BackupState::Failed => JobStatus::Failed {
                        reason: entry.error.clone().unwrap_or_default(),
                    },
                    BackupState::Pending => {
                        let job = InstanceJob::of(
                            &manifest.backup_id,
                            &manifest.application,
                            entry,
                            manifest.started_at,
                        );
                        let status = poll_instance_backup(&ec2, &job, &policy, now).await?;
                        record_outcome(&ec2, &catalog, &job, &status, now).await?;
                        status
                    }
                };
                statuses.push(InstanceStatus {
                    instance_id: entry.instance_id.clone(),
                    status,
                });
            }
            if json {
                print_json(&serde_json::json!({
                    "backup_id": manifest.backup_id,
                    "instances": statuses,
                }));
            } else {
                for s in &statuses {
                    match &s.status {
                        JobStatus::Pending {
                            progress,
                            next_wait_seconds,
                            detail,
                        } => println!(
                            "{} PENDING {progress}% ({detail}); poll again in {next_wait_seconds} s",
                            s.instance_id
                        ),
                        JobStatus::Failed { reason } => {
                            println!("{} FAILED: {reason}", s.instance_id)
                        }
                        JobStatus::TimedOut { waited_seconds } => {
                            println!("{} TIMED_OUT after {waited_seconds} s", s.instance_id)
                        }
                        JobStatus::Completed => println!("{} COMPLETED", s.instance_id),
                    }
                }
            }
            if let Some(bad) = statuses.iter().find(|s| {
                matches!(
                    s.status,
                    JobStatus::Failed { .. } | JobStatus::TimedOut { .. }
                )
            }) {
                return Err(Error::InstanceBackupFailed {
                    backup_id: manifest.backup_id.clone(),
                    instance_id: bad.instance_id.clone(),
                    reason: match &bad.status {
                        JobStatus::Failed { reason } => reason.clone(),
                        _ => "timed out".to_string(),
                    },
                });
            }
        }
        Ec2Command::Restore(args) => {
            let catalog = catalog(&args.catalog).await?;
            let mode = args.mode.parse::<InstanceRestoreMode>()?;
            let manifest = catalog.find(&args.backup_id).await?;
            let entries: Vec<&InstanceBackup> =
                match &args.instance_id {
                    Some(id) => vec![manifest.instance(id)?],
                    None if manifest.instances.is_empty() => {
                        return Err(manifest.instance("(any)").err().unwrap_or(
                            Error::InvalidInput("the backup holds no instances".to_string()),
                        ))
                    }
                    None => manifest.instances.iter().collect(),
                };
            for entry in &entries {
                if entry.state != BackupState::Completed {
                    return Err(Error::BackupNotUsable {
                        backup_id: manifest.backup_id.clone(),
                        state: format!("{} for {}", entry.state, entry.instance_id),
                    });
                }
            }
            let restore_id = args.restore_id.unwrap_or_else(|| {
                format!("restore-{}", new_backup_id(time::OffsetDateTime::now_utc()))
            });
            if !json {
                eprintln!(
                    "restore id {restore_id} (rerun with --restore-id {restore_id} to resume)"
                );
            }
            let policy = PollPolicy {
                first_wait_seconds: 5,
                max_wait_seconds: 30,
                deadline_seconds: args.timeout,
            };
            let mut steps = Vec::new();
            for entry in entries {
                let r = InstanceRestore {
                    backup_id: &manifest.backup_id,
                    entry,
                    restore_id: &restore_id,
                    mode,
                };
                let step = restore_instance(&ec2, &r, &policy, bar).await?;
                if !json {
                    println!(
                        "restored {} from backup {} ({})",
                        step.instance_id, manifest.backup_id, args.mode
                    );
                    for v in &step.volumes {
                        println!(
                            "  {} now {} from {}; the replaced volume {} is kept",
                            v.device,
                            v.volume_id,
                            v.snapshot_id,
                            v.replaced_volume_id.as_deref().unwrap_or("-")
                        );
                    }
                    if let Some(task) = &step.replace_root_task_id {
                        println!("  root volume replaced by task {task}; the old root is kept");
                    }
                }
                steps.push(step);
            }
            if json {
                print_json(&steps);
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct InstanceStatus {
    instance_id: String,
    #[serde(flatten)]
    status: JobStatus,
}

fn ids_of(entries: &[InstanceBackup]) -> String {
    entries
        .iter()
        .map(|e| format!("{} ({} volumes)", e.instance_id, e.volumes.len()))
        .collect::<Vec<_>>()
        .join(", ")
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
        "{:<28} {:<22} {:<16} {:<14} {:>12} {:<24} {:<10}",
        "ID", "STARTED", "APPLICATION", "VERSION", "SIZE", "CONTENTS", "STATE"
    );
    for m in manifests {
        let kind = match &m.purpose {
            backstop_core::catalog::Purpose::Backup => String::new(),
            backstop_core::catalog::Purpose::Forensic { .. } => " (forensic)".to_string(),
        };
        let contents = [(m.databases.len(), "db"), (m.instances.len(), "instance")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<28} {:<22} {:<16} {:<14} {:>12} {:<24} {}{kind}",
            m.backup_id,
            rfc3339(m.started_at),
            m.application,
            m.app_version.as_deref().unwrap_or("-"),
            progress::human_bytes(m.total_bytes()),
            contents,
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
    for i in &m.instances {
        println!(
            "instance     {} in {} ({}{}), {}",
            i.instance_id,
            i.availability_zone,
            i.mode,
            i.image_id
                .as_ref()
                .map(|id| format!(" {id}"))
                .unwrap_or_default(),
            i.state
        );
        if let Some(e) = &i.error {
            println!("  error      {e}");
        }
        for v in &i.volumes {
            println!(
                "  volume     {}{} {} {} GiB {}{}{}{} → {}",
                v.device,
                if v.boot { " (boot)" } else { "" },
                v.volume_id,
                v.size_gib,
                v.volume_type,
                v.iops.map(|n| format!(" {n} iops")).unwrap_or_default(),
                v.throughput
                    .map(|n| format!(" {n} MiB/s"))
                    .unwrap_or_default(),
                if v.encrypted {
                    format!(
                        " encrypted ({})",
                        v.kms_key_id.as_deref().unwrap_or("default key")
                    )
                } else {
                    String::new()
                },
                v.snapshot_id.as_deref().unwrap_or("(snapshot pending)")
            );
        }
    }
}
