//! SQL checks: a query on one of the run's database targets whose first value must equal the
//! expected text. The query runs as [`Session::read_only_value`] runs it: one statement, in a
//! read-only transaction that is rolled back, under a statement timeout. What it returned
//! never leaves the function: a failure says which check, on which database, and only the
//! shape of what it saw (no row, NULL, a value of N characters) or the SQLSTATE it failed
//! with, so that no data reaches execution history, events or reports.

use std::time::Duration;

use crate::db::session::Session;
use crate::db::target::{Access, DbTarget, TlsPolicy};
use crate::error::Error;
use crate::model::run::{RunDocument, SqlCheck, Target};

/// How long a check's query may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many characters of a query appear in a message.
const QUERY_SHOWN: usize = 60;

/// One SQL check (the `index`th of the run) on the database target it names (or the run's
/// only one).
pub async fn check(
    secrets: &aws_sdk_secretsmanager::Client,
    access: &Access,
    tls: &TlsPolicy,
    run: &RunDocument,
    index: usize,
    q: &SqlCheck,
) -> Result<(), Error> {
    let db = database_of(secrets, access, tls, run, q.database.as_deref()).await?;
    let label = format!(
        "SQL check {} ({}) on {} at {}",
        index + 1,
        shown(&q.query),
        db.dbname,
        db.server()
    );
    let session = Session::connect(&db).await?;
    let got = session
        .read_only_value(&q.query, STATEMENT_TIMEOUT)
        .await
        .map_err(|refused| Error::VerificationFailed(format!("{label}: {refused}")))?;
    if got.as_deref() != Some(q.expect.as_str()) {
        let saw = match got {
            None => "no row, or NULL".to_string(),
            Some(v) => format!("a value of {} characters", v.chars().count()),
        };
        return Err(Error::VerificationFailed(format!(
            "{label} gave {saw}, not the expected value"
        )));
    }
    Ok(())
}

/// The query as a message shows it: control characters as spaces, at most
/// [`QUERY_SHOWN`] characters.
fn shown(query: &str) -> String {
    let flat: String = query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > QUERY_SHOWN {
        format!("{}…", flat.chars().take(QUERY_SHOWN).collect::<String>())
    } else {
        flat
    }
}

/// Where the database target a SQL check names is (or the run's only one). The name is the
/// target's `dbname`, `url_env` or `secret_id` as written, or else the name of the database it
/// resolves to (the one in the URL or the secret). A name that fits more than one target is
/// `InvalidInput`: two servers can hold databases of one name, and a check must say which.
async fn database_of(
    secrets: &aws_sdk_secretsmanager::Client,
    access: &Access,
    tls: &TlsPolicy,
    run: &RunDocument,
    name: Option<&str>,
) -> Result<DbTarget, Error> {
    let app = run.application.as_str();
    let dbs: Vec<&Target> = run.targets.iter().filter(|t| t.is_database()).collect();
    let Some(n) = name else {
        return match dbs.as_slice() {
            [only] => DbTarget::resolve(secrets, access, tls, app, only).await,
            _ => Err(Error::InvalidInput(
                "a SQL check must name its database when the run has several".to_string(),
            )),
        };
    };
    let ambiguous = || {
        Error::InvalidInput(format!(
            "a SQL check names {n}, which fits several database targets: name it by the \
             target's url_env or secret_id"
        ))
    };
    let declared: Vec<&&Target> = dbs
        .iter()
        .filter(|t| match t {
            Target::Database {
                dbname,
                url_env,
                secret_id,
                ..
            } => [dbname, url_env, secret_id]
                .iter()
                .any(|v| v.as_deref() == Some(n)),
            _ => false,
        })
        .collect();
    match declared.as_slice() {
        [one] => return DbTarget::resolve(secrets, access, tls, app, one).await,
        [] => {}
        _ => return Err(ambiguous()),
    }
    let mut found = Vec::new();
    for t in dbs {
        let db = DbTarget::resolve(secrets, access, tls, app, t).await?;
        if db.dbname == n {
            found.push(db);
        }
    }
    match found.len() {
        0 => Err(Error::InvalidInput(format!("no database target named {n}"))),
        1 => Ok(found.remove(0)),
        _ => Err(ambiguous()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_shown_flat_and_short() {
        assert_eq!(
            shown("SELECT\n  count(*)\tFROM t"),
            "SELECT count(*) FROM t"
        );
        let long = format!("SELECT '{}'", "x".repeat(200));
        let s = shown(&long);
        assert_eq!(s.chars().count(), QUERY_SHOWN + 1);
        assert!(s.ends_with('…'));
        assert!(!shown("SELECT '\u{1b}[2J'").contains('\u{1b}'));
    }
}
