//! The composition root: the configuration every Lambda and the CLI read once (bucket,
//! prefix, event bus, state machine, guarded stages, where the PostgreSQL tools are) and the
//! clients the tasks use, each built from the shared AWS configuration the first time a task
//! asks for it, so a function builds only the clients it uses.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::aws::cloudwatch::Alarms;
use crate::aws::ec2::Ec2;
use crate::aws::events::Notifier;
use crate::aws::SharedConfig;
use crate::catalog::{Catalog, DEFAULT_PREFIX};
use crate::checks::Checker;
use crate::db::target::{Access, DbTarget, TlsPolicy};
use crate::db::tools::PgTools;
use crate::error::Error;
use crate::model::run::Target;
use crate::store::S3Store;

/// How long a drill waits for a new volume unless told otherwise.
pub const DEFAULT_DRILL_VOLUME_WAIT_SECONDS: u64 = 600;

/// What a deployment configures, read once from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `BACKSTOP_BUCKET`: the backup bucket (required).
    pub bucket: String,
    /// `BACKSTOP_PREFIX`: the catalog's key prefix in the bucket.
    pub prefix: String,
    /// `BACKSTOP_EVENT_BUS`: where outcomes are published.
    pub event_bus: String,
    /// `BACKSTOP_STATE_MACHINE_ARN`: the protect state machine, which pipeline-action and
    /// guard start and whose running executions retention keeps the backups of.
    pub state_machine_arn: Option<String>,
    /// `BACKSTOP_GUARD_STAGES`: the pipeline stages guard mode watches.
    pub guard: GuardConfig,
    /// `PG_BIN_DIR`: where `pg_dump` and `pg_restore` are (else `PATH`).
    pub pg_bin_dir: Option<PathBuf>,
    /// The scheduled prune's policy.
    pub retention: RetentionSettings,
    /// `BACKSTOP_DRILL_VOLUME_WAIT_SECONDS`: how long the scheduled drill waits for a volume.
    pub drill_volume_wait_seconds: u64,
    /// `BACKSTOP_APPLICATION_SECRETS`: which database logins each application's runs may
    /// use. Unset: unrestricted on an operator's machine, nothing at all in a Lambda function.
    pub access: Access,
    /// `BACKSTOP_DB_SSLMODE` and `BACKSTOP_DB_SSLROOTCERT`: TLS to the servers behind secrets.
    pub tls: TlsPolicy,
}

/// The scheduled prune's policy: `BACKSTOP_RETENTION_KEEP_LAST` (default 3),
/// `BACKSTOP_RETENTION_MAX_AGE_DAYS` (30) and `BACKSTOP_RETENTION_DRY_RUN` (false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    pub keep_last: usize,
    pub max_age_days: u64,
    pub dry_run: bool,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            keep_last: 3,
            max_age_days: 30,
            dry_run: false,
        }
    }
}

/// A variable's value parsed, its default when unset; `InvalidInput` naming it when malformed.
fn parsed<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Error> {
    match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| Error::InvalidInput(format!("{name}={v:?} is not a valid value"))),
    }
}

impl Config {
    /// The protect state machine; `InvalidInput` naming its variable when it is not set.
    pub fn state_machine(&self) -> Result<&str, Error> {
        self.state_machine_arn
            .as_deref()
            .ok_or_else(|| Error::InvalidInput("BACKSTOP_STATE_MACHINE_ARN is not set".to_string()))
    }

    /// A configuration of the catalog at `bucket`/`prefix`, everything else at its default.
    pub fn new(bucket: &str, prefix: &str) -> Config {
        Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            event_bus: "default".to_string(),
            state_machine_arn: None,
            guard: GuardConfig::default(),
            pg_bin_dir: None,
            retention: RetentionSettings::default(),
            drill_volume_wait_seconds: DEFAULT_DRILL_VOLUME_WAIT_SECONDS,
            access: Access::Unrestricted,
            tls: TlsPolicy::default(),
        }
    }

    /// From the environment: `BACKSTOP_BUCKET`, `BACKSTOP_PREFIX`, `BACKSTOP_EVENT_BUS`,
    /// `BACKSTOP_STATE_MACHINE_ARN`, `BACKSTOP_GUARD_STAGES`, `PG_BIN_DIR`, the retention
    /// policy ([`RetentionSettings`]) and `BACKSTOP_DRILL_VOLUME_WAIT_SECONDS`.
    pub fn from_env() -> Result<Config, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = Config::new(
            &var("BACKSTOP_BUCKET").unwrap_or_default(),
            &var("BACKSTOP_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
        );
        if let Some(bus) = var("BACKSTOP_EVENT_BUS") {
            config.event_bus = bus;
        }
        config.state_machine_arn = var("BACKSTOP_STATE_MACHINE_ARN");
        config.guard = GuardConfig::parse(&var("BACKSTOP_GUARD_STAGES").unwrap_or_default())?;
        config.pg_bin_dir = std::env::var_os("PG_BIN_DIR").map(PathBuf::from);
        let d = RetentionSettings::default();
        config.retention = RetentionSettings {
            keep_last: parsed("BACKSTOP_RETENTION_KEEP_LAST", d.keep_last)?,
            max_age_days: parsed("BACKSTOP_RETENTION_MAX_AGE_DAYS", d.max_age_days)?,
            dry_run: parsed("BACKSTOP_RETENTION_DRY_RUN", d.dry_run)?,
        };
        config.access = match var("BACKSTOP_APPLICATION_SECRETS") {
            Some(json) => Access::parse(&json)?,
            // In a function the map is the only authority there is: without it, no secret.
            None if var("AWS_LAMBDA_FUNCTION_NAME").is_some() => Access::Mapped(Default::default()),
            None => Access::Unrestricted,
        };
        config.tls = TlsPolicy::new(
            var("BACKSTOP_DB_SSLMODE"),
            var("BACKSTOP_DB_SSLROOTCERT").map(PathBuf::from),
        )?;
        config.drill_volume_wait_seconds = parsed(
            "BACKSTOP_DRILL_VOLUME_WAIT_SECONDS",
            config.drill_volume_wait_seconds,
        )?;
        Ok(config)
    }
}

/// The stages whose failure triggers a restore: `BACKSTOP_GUARD_STAGES`, a comma-separated
/// list of `pipeline:stage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardConfig {
    pub stages: Vec<GuardedStage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedStage {
    pub pipeline: String,
    pub stage: String,
    /// The application whose backups the stage's failure restores; when not named, the only
    /// application that recorded a backup for the failed pipeline execution.
    #[serde(default)]
    pub application: Option<String>,
}

impl GuardConfig {
    /// Parses `pipeline:stage[:application],…`; empty means no stage is guarded.
    pub fn parse(text: &str) -> Result<GuardConfig, Error> {
        let mut stages = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = item.split(':').map(str::trim).collect();
            let bad = || {
                Error::InvalidInput(format!(
                    "guarded stage {item:?} is not pipeline:stage or pipeline:stage:application \
                     (BACKSTOP_GUARD_STAGES)"
                ))
            };
            let (pipeline, stage, application) = match parts.as_slice() {
                [p, s] => (*p, *s, None),
                [p, s, a] => {
                    crate::model::manifest::check_segment("application", a)?;
                    (*p, *s, Some(a.to_string()))
                }
                _ => return Err(bad()),
            };
            if pipeline.is_empty() || stage.is_empty() {
                return Err(bad());
            }
            stages.push(GuardedStage {
                pipeline: pipeline.to_string(),
                stage: stage.to_string(),
                application,
            });
        }
        Ok(GuardConfig { stages })
    }

    /// The application named for a guarded stage, if any.
    pub fn application(&self, pipeline: &str, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|g| g.pipeline == pipeline && g.stage == stage)
            .and_then(|g| g.application.as_deref())
    }

    pub fn guards(&self, pipeline: &str, stage: &str) -> bool {
        self.stages
            .iter()
            .any(|g| g.pipeline == pipeline && g.stage == stage)
    }
}

/// The configuration and the clients every task needs.
pub struct Context {
    pub config: Config,
    pub tools: PgTools,
    shared: SharedConfig,
    catalog: OnceLock<Catalog>,
    ec2: OnceLock<Ec2>,
    alarms: OnceLock<Alarms>,
    sfn: OnceLock<aws_sdk_sfn::Client>,
    codepipeline: OnceLock<aws_sdk_codepipeline::Client>,
    events: OnceLock<Notifier>,
    secrets: OnceLock<aws_sdk_secretsmanager::Client>,
}

impl Context {
    /// From the environment ([`Config::from_env`]) and the standard AWS configuration.
    pub async fn from_env() -> Result<Context, Error> {
        Context::new(crate::aws::load_config().await, Config::from_env()?)
    }

    /// With the clients of a loaded AWS configuration. The bucket and prefix are checked here,
    /// so a misconfigured function fails at its start.
    pub fn new(shared: SharedConfig, config: Config) -> Result<Context, Error> {
        if config.bucket.trim().is_empty() {
            return Err(Error::InvalidInput(
                "BACKSTOP_BUCKET is not set: the backup bucket".to_string(),
            ));
        }
        Catalog::check_prefix(&config.prefix)?;
        Ok(Context {
            tools: PgTools::new(config.pg_bin_dir.as_deref()),
            config,
            shared,
            catalog: OnceLock::new(),
            ec2: OnceLock::new(),
            alarms: OnceLock::new(),
            sfn: OnceLock::new(),
            codepipeline: OnceLock::new(),
            events: OnceLock::new(),
            secrets: OnceLock::new(),
        })
    }

    /// The same, with this catalog instead of the bucket's (an in-memory one, in tests).
    pub fn with_catalog(self, catalog: Catalog) -> Context {
        let _ = self.catalog.set(catalog);
        self
    }

    /// The backup catalog in the bucket.
    pub fn catalog(&self) -> &Catalog {
        self.catalog.get_or_init(|| Catalog {
            store: Arc::new(S3Store::new(
                crate::aws::s3_client(&self.shared),
                &self.config.bucket,
            )),
            prefix: self.config.prefix.trim_matches('/').to_string(),
        })
    }

    pub fn ec2(&self) -> &Ec2 {
        self.ec2
            .get_or_init(|| Ec2::new(aws_sdk_ec2::Client::new(&self.shared)))
    }

    pub fn alarms(&self) -> &Alarms {
        self.alarms
            .get_or_init(|| Alarms::new(aws_sdk_cloudwatch::Client::new(&self.shared)))
    }

    /// Step Functions: starting executions, their history, the running ones.
    pub fn sfn(&self) -> &aws_sdk_sfn::Client {
        self.sfn
            .get_or_init(|| aws_sdk_sfn::Client::new(&self.shared))
    }

    /// CodePipeline, answered by the job worker (pipeline-action).
    pub fn codepipeline(&self) -> &aws_sdk_codepipeline::Client {
        self.codepipeline
            .get_or_init(|| aws_sdk_codepipeline::Client::new(&self.shared))
    }

    /// Where outcomes are published.
    pub fn events(&self) -> &Notifier {
        self.events.get_or_init(|| {
            Notifier::new(
                aws_sdk_eventbridge::Client::new(&self.shared),
                &self.config.event_bus,
            )
        })
    }

    pub fn secrets(&self) -> &aws_sdk_secretsmanager::Client {
        self.secrets
            .get_or_init(|| crate::aws::secrets_client(&self.shared))
    }

    /// What the deployment checks call.
    pub fn checker(&self) -> Checker<'_> {
        Checker {
            alarms: self.alarms(),
            secrets: self.secrets(),
            access: &self.config.access,
            tls: &self.config.tls,
        }
    }

    /// Where a database target of `application`'s run is and how to log in, when the
    /// application may use it.
    pub async fn database(&self, application: &str, target: &Target) -> Result<DbTarget, Error> {
        DbTarget::resolve(
            self.secrets(),
            &self.config.access,
            &self.config.tls,
            application,
            target,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_setting_is_invalid_input_naming_it_and_an_unset_one_its_default() {
        // Variables no other test reads, so setting them races with nothing.
        let name = "BACKSTOP_TEST_CONTEXT_SETTING";
        std::env::remove_var(name);
        assert_eq!(parsed(name, 3usize).unwrap(), 3);
        std::env::set_var(name, " 7 ");
        assert_eq!(parsed(name, 3usize).unwrap(), 7);
        for bad in ["-1", "three", "1e3"] {
            std::env::set_var(name, bad);
            let e = parsed(name, 3usize).unwrap_err();
            assert_eq!(e.error_type(), "InvalidInput", "{bad}");
            assert!(e.to_string().contains(name), "{e}");
        }
        std::env::set_var(name, "yes");
        assert_eq!(
            parsed(name, false).unwrap_err().error_type(),
            "InvalidInput"
        );
        std::env::remove_var(name);
    }

    #[test]
    fn a_context_needs_a_bucket_and_a_valid_prefix() {
        let shared = aws_config::SdkConfig::builder().build();
        let e = Context::new(shared.clone(), Config::new(" ", "backstop")).err();
        assert_eq!(e.map(|e| e.error_type()), Some("InvalidInput"));
        let e = Context::new(shared.clone(), Config::new("b", "a b")).err();
        assert_eq!(e.map(|e| e.error_type()), Some("InvalidInput"));
        assert!(Context::new(shared, Config::new("b", "/backstop/")).is_ok());
    }
}
