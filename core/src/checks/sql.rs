//! SQL checks: a query on one of the run's database targets whose first value must equal the
//! expected text.

use crate::db::session::Session;
use crate::db::target::DbTarget;
use crate::error::Error;
use crate::model::run::{RunDocument, SqlCheck, Target};

/// One SQL check on the database target it names (or the run's only one).
pub async fn check(
    secrets: &aws_sdk_secretsmanager::Client,
    run: &RunDocument,
    q: &SqlCheck,
) -> Result<(), Error> {
    let db = database_of(secrets, run, q.database.as_deref()).await?;
    let session = Session::connect(&db).await?;
    let got = session
        .query_first_text(&q.query)
        .await
        .map_err(|e| Error::VerificationFailed(format!("{} on {}: {e}", q.query, db.dbname)))?;
    if got.as_deref() != Some(q.expect.as_str()) {
        return Err(Error::VerificationFailed(format!(
            "{} on {} gave {}, expected {:?}",
            q.query,
            db.dbname,
            got.map(|g| format!("{g:?}"))
                .unwrap_or_else(|| "no value".to_string()),
            q.expect
        )));
    }
    Ok(())
}

/// Where the database target a SQL check names is (or the run's only one). The name is the
/// target's `dbname`, `url_env` or `secret_id` as written, or else the name of the database it
/// resolves to (the one in the URL or the secret); each target is resolved at most once.
async fn database_of(
    secrets: &aws_sdk_secretsmanager::Client,
    run: &RunDocument,
    name: Option<&str>,
) -> Result<DbTarget, Error> {
    let dbs: Vec<&Target> = run
        .targets
        .iter()
        .filter(|t| matches!(t, Target::Database { .. }))
        .collect();
    let Some(n) = name else {
        return match dbs.as_slice() {
            [only] => DbTarget::resolve(secrets, only).await,
            _ => Err(Error::InvalidInput(
                "a SQL check must name its database when the run has several".to_string(),
            )),
        };
    };
    let declared = dbs.iter().find(|t| match t {
        Target::Database {
            dbname,
            url_env,
            secret_id,
        } => [dbname, url_env, secret_id]
            .iter()
            .any(|v| v.as_deref() == Some(n)),
        _ => false,
    });
    if let Some(t) = declared {
        return DbTarget::resolve(secrets, t).await;
    }
    for t in dbs {
        let db = DbTarget::resolve(secrets, t).await?;
        if db.dbname == n {
            return Ok(db);
        }
    }
    Err(Error::InvalidInput(format!("no database target named {n}")))
}
