//! verify, mode `authorize_restore` (GuardRestore): an execution that enters with
//! `restore_of` restores only what guard authorised. Guard records the restore it asks for
//! in the catalog under the execution's name before it starts the execution, and only
//! guard's role writes there; this mode reads that record, requires the input to be exactly
//! it, and hands on the run document the backup itself recorded (checked like any run
//! document, its logins checked against the application's), never one from the input.

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::Error;
use crate::model::job::{RestoreOf, StepFailure};
use crate::model::manifest::{check_segment, BackupState, Purpose};
use crate::model::run::RunDocument;

/// The execution's `restore_of` and its name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRestoreTask {
    pub request: RestoreOf,
    pub execution_name: String,
}

/// What the restore path runs on: the backup, its recorded run, the failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthorizedRestore {
    pub backup_id: String,
    pub run: RunDocument,
    pub failure: StepFailure,
}

pub async fn handle(ctx: &Context, task: AuthorizeRestoreTask) -> Result<AuthorizedRestore, Error> {
    let request = task.request;
    check_segment("application", &request.application)?;
    check_segment("backup id", &request.backup_id)?;
    let catalog = ctx.catalog();
    let recorded = catalog.restore_request(&task.execution_name).await?;
    if recorded.as_ref() != Some(&request) {
        return Err(Error::NotAllowed(format!(
            "execution {} asks to restore backup {} of {}, and guard recorded no such restore \
             for it: a restore entry is accepted only from guard",
            task.execution_name, request.backup_id, request.application
        )));
    }
    let mut manifest = catalog
        .manifest(&request.application, &request.backup_id)
        .await?;
    if manifest.purpose != Purpose::Backup || manifest.state == BackupState::Failed {
        return Err(Error::BackupNotUsable {
            backup_id: manifest.backup_id,
            state: format!("{} ({:?})", manifest.state, manifest.purpose),
        });
    }
    let run = manifest.run.take().ok_or_else(|| Error::BackupNotUsable {
        backup_id: request.backup_id.clone(),
        state: "its run was never recorded, so it was never verified".to_string(),
    })?;
    if run.application != request.application {
        return Err(Error::NotAllowed(format!(
            "backup {} recorded a run of application {}, not {}",
            request.backup_id, run.application, request.application
        )));
    }
    run.check()?;
    ctx.config.access.check_run(&run)?;
    Ok(AuthorizedRestore {
        backup_id: request.backup_id,
        run,
        failure: request.failure,
    })
}
