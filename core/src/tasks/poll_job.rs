//! poll-job: one look at a job the state machine's poll loop follows. An instance backup is
//! polled (its manifest kept in step); a failed or timed-out one is the error
//! `InstanceBackupFailed` / `TimedOut` (the manifest says `failed`, the snapshots are gone). An
//! instance restore is advanced one step. Database jobs are finished when reported.

use std::time::Duration;

use time::OffsetDateTime;

use crate::context::Context;
use crate::error::Error;
use crate::instance::backup::{poll_instance_backup, poll_round, record_outcome};
use crate::instance::restore::{restore_instance_step, InstanceRestore};
use crate::model::job::{InstanceJob, Job, JobReport, JobState};
use crate::model::manifest::BackupState;
use crate::model::poll::{JobStatus, PollPolicy};
use crate::model::run::WaitFor;

/// One look at the job of the report; the report of where it stands now.
pub async fn handle(ctx: &Context, report: JobReport) -> Result<JobReport, Error> {
    report.job.check()?;
    match &report.job {
        Job::InstanceBackup { .. } => poll_backup(ctx, report.job).await,
        Job::InstanceRestore { .. } => advance_restore(ctx, report.job).await,
        Job::DatabaseBackup { .. } | Job::DatabaseRestore { .. } => {
            Ok(JobReport::completed(report.job, report.detail))
        }
    }
}

/// One poll round of an instance backup's jobs: completed, or still pending (or only
/// started, when the policy waits for no more) with the wait before the next look.
pub(crate) async fn poll_backup(ctx: &Context, job: Job) -> Result<JobReport, Error> {
    let Job::InstanceBackup {
        jobs,
        wait_for,
        poll,
    } = &job
    else {
        return Err(Error::InvalidInput(
            "not an instance backup job".to_string(),
        ));
    };
    let refs: Vec<&InstanceJob> = jobs.iter().collect();
    let round = poll_round(
        ctx.ec2(),
        ctx.catalog(),
        &refs,
        poll,
        OffsetDateTime::now_utc(),
    )
    .await?;
    let progress: Vec<u32> = round
        .pending
        .iter()
        .map(|(_, p, _)| u32::from(*p))
        .chain(std::iter::repeat_n(100, round.completed))
        .collect();
    let pending: Vec<String> = round
        .pending
        .iter()
        .map(|(job, _, _)| job.instance_id.clone())
        .collect();
    let wait = round.wait_seconds;
    let mean = progress.iter().sum::<u32>() / progress.len().max(1) as u32;
    if pending.is_empty() {
        return Ok(JobReport::completed(
            job.clone(),
            format!("{} instance(s) backed up", jobs.len()),
        ));
    }
    let status = match wait_for {
        WaitFor::Started => JobState::Started,
        WaitFor::Completed => JobState::Pending,
    };
    Ok(JobReport {
        job: job.clone(),
        status,
        next_wait_seconds: wait,
        progress: mean.min(99) as u8,
        detail: format!("snapshots of {} still completing", pending.join(", ")),
    })
}

/// One step of every instance's restore; an instance whose snapshots were only started
/// (`wait_for: started`) first waits for them to complete.
pub(crate) async fn advance_restore(ctx: &Context, job: Job) -> Result<JobReport, Error> {
    let Job::InstanceRestore {
        backup_id,
        application,
        instance_ids,
        restore_id,
        mode,
        started_at,
        poll,
    } = &job
    else {
        return Err(Error::InvalidInput(
            "not an instance restore job".to_string(),
        ));
    };
    let now = OffsetDateTime::now_utc();
    let elapsed: Duration = (now - *started_at).try_into().unwrap_or(Duration::ZERO);
    let mut manifest = ctx.catalog().manifest(application, backup_id).await?;
    let mut phases = Vec::new();
    let mut acted = false;
    let mut done = 0;
    for id in instance_ids {
        let mut entry = manifest.instance(id)?.clone();
        if entry.state == BackupState::Pending {
            let bjob = InstanceJob::of(backup_id, application, &entry, manifest.started_at);
            let status =
                poll_instance_backup(ctx.ec2(), &bjob, &PollPolicy::default(), now).await?;
            if matches!(status, JobStatus::Pending { .. }) {
                phases.push(format!(
                    "{id}: waiting for the backup's snapshots to complete"
                ));
                continue;
            }
            manifest = record_outcome(ctx.ec2(), ctx.catalog(), &bjob, &status, now).await?;
            entry = manifest.instance(id)?.clone();
        }
        let step = restore_instance_step(
            ctx.ec2(),
            &InstanceRestore {
                backup_id,
                entry: &entry,
                restore_id,
                mode: *mode,
            },
        )
        .await?;
        acted |= !step.actions.is_empty();
        if step.done {
            done += 1;
        } else {
            phases.push(format!("{id}: {}", step.phase));
        }
    }
    if done == instance_ids.len() {
        return Ok(JobReport::completed(
            job.clone(),
            format!("{} instance(s) restored", instance_ids.len()),
        ));
    }
    if poll.expired(elapsed) {
        return Err(Error::TimedOut {
            operation: format!("restore {restore_id} ({})", phases.join("; ")),
            seconds: elapsed.as_secs(),
        });
    }
    Ok(JobReport {
        job: job.clone(),
        status: JobState::Pending,
        next_wait_seconds: if acted {
            1
        } else {
            poll.next_wait(elapsed).as_secs().min(30)
        },
        progress: (done * 100 / instance_ids.len().max(1)) as u8,
        detail: phases.join("; "),
    })
}
