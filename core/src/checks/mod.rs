//! The deployment checks a run document names, run after the deploy and again after a
//! restore: HTTP GETs ([`http`]), SQL queries on the run's databases ([`sql`]) and CloudWatch
//! alarms ([`alarms`]). A round runs every check once; the checks pass once every round has
//! passed `consecutive` times in a row over at least `bake_seconds`. The first failure is
//! `VerificationFailed`, saying which check and what it saw.

pub mod alarms;
pub mod http;
pub mod sql;

use std::time::Duration;

use crate::aws::cloudwatch::Alarms;
use crate::error::Error;
use crate::model::run::RunDocument;

/// What the checks call: CloudWatch for alarms, Secrets Manager for the databases' logins.
#[derive(Clone, Copy)]
pub struct Checker<'a> {
    pub alarms: &'a Alarms,
    pub secrets: &'a aws_sdk_secretsmanager::Client,
}

impl Checker<'_> {
    /// Runs every check until each has passed `consecutive` times in a row over at least
    /// `bake_seconds`; the first failure is `VerificationFailed`. Returns a one-line summary.
    pub async fn run(&self, run: &RunDocument) -> Result<String, Error> {
        let checks = &run.checks;
        if checks.http.is_empty() && checks.sql.is_empty() && checks.alarms.is_empty() {
            return Ok("no checks configured".to_string());
        }
        let started = std::time::Instant::now();
        let mut passes = 0;
        loop {
            self.round(run).await?;
            passes += 1;
            if passes >= checks.consecutive && started.elapsed().as_secs() >= checks.bake_seconds {
                break;
            }
            tokio::time::sleep(Duration::from_secs(checks.interval_seconds)).await;
        }
        Ok(format!(
            "{} HTTP, {} SQL and {} alarm check(s) passed {passes} time(s) in a row over {} s",
            checks.http.len(),
            checks.sql.len(),
            checks.alarms.len(),
            started.elapsed().as_secs()
        ))
    }

    /// One round: every check once, in the order HTTP, alarms, SQL.
    async fn round(&self, run: &RunDocument) -> Result<(), Error> {
        for h in &run.checks.http {
            http::check(h).await?;
        }
        for a in &run.checks.alarms {
            alarms::check(self.alarms, a).await?;
        }
        for q in &run.checks.sql {
            sql::check(self.secrets, run, q).await?;
        }
        Ok(())
    }
}
