//! The deployment checks a run document names, run after the deploy and again after a
//! restore: HTTP GETs ([`http`]), SQL queries on the run's databases ([`sql`]) and CloudWatch
//! alarms ([`alarms`]). A round runs every check once; the checks pass once every round has
//! passed `consecutive` times in a row over at least `bake_seconds`. The first failure is
//! `VerificationFailed`, saying which check and what it saw. Rounds stop before the deadline
//! (`crate::deadline`) and carry on from a [`ChecksProgress`] in the next invocation.

pub mod alarms;
pub mod http;
pub mod sql;

use std::time::Duration;

use crate::aws::cloudwatch::Alarms;
use crate::db::target::{Access, TlsPolicy};
use crate::error::Error;
use crate::model::run::{ChecksProgress, ChecksStatus, RunDocument};
use time::OffsetDateTime;

/// What the checks call: CloudWatch for alarms, Secrets Manager for the databases' logins.
#[derive(Clone, Copy)]
pub struct Checker<'a> {
    pub alarms: &'a Alarms,
    pub secrets: &'a aws_sdk_secretsmanager::Client,
    /// Which logins the run's application may use.
    pub access: &'a Access,
    /// TLS to the servers behind secrets.
    pub tls: &'a TlsPolicy,
}

/// What a round and the recording after it may take at most: rounds stop this long before the
/// deadline, and the rest of the bake goes to the next invocation.
pub const ROUND_RESERVE: Duration = Duration::from_secs(120);

impl Checker<'_> {
    /// Runs every check until each has passed `consecutive` times in a row over at least
    /// `bake_seconds`, or until the deadline comes near, whichever is first; the first failure
    /// is `VerificationFailed`. Returns a one-line summary, which says so when the deadline
    /// cut the bake short.
    pub async fn run(&self, run: &RunDocument) -> Result<String, Error> {
        let progress = self.rounds(run, None).await?;
        Ok(match progress.status {
            ChecksStatus::Passed => progress.summary,
            ChecksStatus::Pending => format!(
                "{} (the bake was cut short: the deadline came first)",
                progress.summary
            ),
        })
    }

    /// Runs rounds from where `progress` left them (from the start when `None`) until the
    /// checks have passed `consecutive` rounds in a row over at least `bake_seconds`
    /// (`PASSED`), or until the next round would end within [`ROUND_RESERVE`] of the
    /// deadline (`PENDING`, with the wait before the next round). The first failure is
    /// `VerificationFailed`.
    pub async fn rounds(
        &self,
        run: &RunDocument,
        progress: Option<ChecksProgress>,
    ) -> Result<ChecksProgress, Error> {
        let checks = &run.checks;
        let now = OffsetDateTime::now_utc();
        let mut p = progress.unwrap_or(ChecksProgress {
            status: ChecksStatus::Pending,
            rounds: 0,
            started_at: now,
            next_wait_seconds: 0,
            summary: String::new(),
        });
        if checks.http.is_empty() && checks.sql.is_empty() && checks.alarms.is_empty() {
            p.status = ChecksStatus::Passed;
            p.summary = "no checks configured".to_string();
            return Ok(p);
        }
        let interval = Duration::from_secs(checks.interval_seconds);
        loop {
            self.round(run).await?;
            p.rounds += 1;
            let baked = (OffsetDateTime::now_utc() - p.started_at)
                .whole_seconds()
                .max(0) as u64;
            p.summary = format!(
                "{} HTTP, {} SQL and {} alarm check(s) passed {} time(s) in a row over {baked} s",
                checks.http.len(),
                checks.sql.len(),
                checks.alarms.len(),
                p.rounds,
            );
            if p.rounds >= checks.consecutive && baked >= checks.bake_seconds {
                p.status = ChecksStatus::Passed;
                p.next_wait_seconds = 0;
                return Ok(p);
            }
            p.next_wait_seconds = checks.interval_seconds;
            if crate::deadline::remaining().is_some_and(|left| left < interval + ROUND_RESERVE) {
                return Ok(p);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One round: every check once, in the order HTTP, alarms, SQL.
    async fn round(&self, run: &RunDocument) -> Result<(), Error> {
        for h in &run.checks.http {
            http::check(h).await?;
        }
        for a in &run.checks.alarms {
            alarms::check(self.alarms, a).await?;
        }
        for (i, q) in run.checks.sql.iter().enumerate() {
            sql::check(self.secrets, self.access, self.tls, run, i, q).await?;
        }
        Ok(())
    }
}
