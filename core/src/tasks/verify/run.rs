//! verify, mode `run` (Prepare): checks the run document before anything is backed up and
//! returns it with every default filled in. A database login the application is not mapped
//! to is `NotAllowed` here, before any backup; an alarm check that selects no alarm could
//! never pass, so it is refused here too.

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::Error;
use crate::model::run::RunDocument;

/// The execution's input, as Prepare hands it on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    pub document: RunDocument,
}

pub async fn handle(ctx: &Context, task: RunTask) -> Result<RunDocument, Error> {
    let doc = task.document;
    doc.check()?;
    ctx.config.access.check_run(&doc)?;
    for (n, check) in doc.checks.alarms.iter().enumerate() {
        if ctx.alarms().select(check).await?.is_empty() {
            return Err(Error::InvalidInput(format!(
                "checks.alarms[{n}]: {} does not exist",
                check.label()
            )));
        }
    }
    Ok(doc)
}
