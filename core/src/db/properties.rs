//! The database object's own properties, which `pg_dump` without `--create` leaves out: owner,
//! connection limit, comment, privileges (CONNECT, CREATE, TEMPORARY) and the settings stored
//! with `ALTER DATABASE … SET` and `ALTER ROLE … IN DATABASE … SET`. [`read`] records them at
//! backup; [`apply`] puts them back on a database after a restore, in either mode.
//!
//! Backstop runs as the database's owner, not a superuser, as on RDS. Some properties need
//! more than that (a superuser-only setting, a per-role setting, a grant to a role this server
//! lacks): [`apply`] puts back everything it may, in one transaction, and returns a sentence
//! for each property it could not, so the restore reports them instead of failing on them.

use std::collections::{BTreeMap, BTreeSet};

use crate::db::session::{quote_ident, quote_literal, Session};
use crate::error::Error;
use crate::model::manifest::{DatabasePrivilege, DatabaseProperties, DatabaseSetting};

/// Settings whose value is a list: PostgreSQL stores the elements joined by `, `, each
/// double-quoted where needed, and they must be given back as separate literals (as
/// `pg_dump` does), or the whole list would become one element.
const LIST_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// The properties of database `dbname` on the session's server.
pub async fn read(session: &Session, dbname: &str) -> Result<DatabaseProperties, Error> {
    let client = session.client();
    let err = |e: tokio_postgres::Error| session.error(&e);
    let row = client
        .query_opt(
            "SELECT pg_get_userbyid(d.datdba)::text, pg_encoding_to_char(d.encoding)::text, \
             d.datcollate::text, d.datctype::text, d.datconnlimit, \
             shobj_description(d.oid, 'pg_database') \
             FROM pg_database d WHERE d.datname = $1",
            &[&dbname],
        )
        .await
        .map_err(err)?
        .ok_or_else(|| Error::Database {
            target: session.target().to_string(),
            reason: format!("database {dbname:?} does not exist"),
        })?;
    let privileges = client
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, \
             a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)::text \
             FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
             WHERE d.datname = $1",
            &[&dbname],
        )
        .await
        .map_err(err)?;
    let settings = client
        .query(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole)::text END, c \
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
             unnest(s.setconfig) c WHERE d.datname = $1",
            &[&dbname],
        )
        .await
        .map_err(err)?;
    let get_err = |e: tokio_postgres::Error| session.error(&e);
    let mut props = DatabaseProperties {
        owner: row.try_get(0).map_err(get_err)?,
        encoding: row.try_get(1).map_err(get_err)?,
        collate: row.try_get(2).map_err(get_err)?,
        ctype: row.try_get(3).map_err(get_err)?,
        connection_limit: row.try_get(4).map_err(get_err)?,
        comment: row.try_get(5).map_err(get_err)?,
        privileges: Vec::with_capacity(privileges.len()),
        settings: Vec::with_capacity(settings.len()),
    };
    for p in privileges {
        props.privileges.push(DatabasePrivilege {
            grantee: p.try_get(0).map_err(get_err)?,
            privilege: p.try_get(1).map_err(get_err)?,
            grantable: p.try_get(2).map_err(get_err)?,
            grantor: p.try_get(3).map_err(get_err)?,
        });
    }
    for s in settings {
        let config: String = s.try_get(1).map_err(get_err)?;
        let (name, value) = config.split_once('=').unwrap_or((config.as_str(), ""));
        props.settings.push(DatabaseSetting {
            role: s.try_get(0).map_err(get_err)?,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    props.privileges.sort();
    props.settings.sort();
    Ok(props)
}

/// Gives database `dbname` (shown as `label`) the properties `want`, from a session on
/// another database of its server (no session may be open on `dbname` itself for nothing
/// here to matter). Only what differs is changed, so a property already right needs no
/// privilege. Everything happens in one transaction; a statement the server refuses is undone
/// alone (a savepoint) and reported. Returns what could not be put back; an error means the
/// session failed and nothing was changed.
pub async fn apply(
    maint: &Session,
    dbname: &str,
    label: &str,
    want: &DatabaseProperties,
) -> Result<Vec<String>, Error> {
    want.check().map_err(Error::InvalidInput)?;
    let have = read(maint, dbname).await?;
    let db = quote_ident(dbname);
    let mut tx = Steps::begin(maint, label).await?;

    for (what, got, wanted) in [
        ("encoding", &have.encoding, &want.encoding),
        ("collation", &have.collate, &want.collate),
        ("character type", &have.ctype, &want.ctype),
    ] {
        if got != wanted {
            tx.not_restored.push(format!(
                "{label}: {what} is {got}, not {wanted} as backed up (fixed when a database is created)"
            ));
        }
    }
    if have.owner != want.owner {
        tx.step(
            &format!("the owner {}", want.owner),
            &format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(&want.owner)),
        )
        .await?;
    }
    if have.connection_limit != want.connection_limit {
        tx.step(
            "the connection limit",
            &format!(
                "ALTER DATABASE {db} CONNECTION LIMIT {}",
                want.connection_limit.max(-1)
            ),
        )
        .await?;
    }
    if have.comment != want.comment {
        let comment = want
            .comment
            .as_deref()
            .map_or("NULL".to_string(), quote_literal);
        tx.step(
            "the comment",
            &format!("COMMENT ON DATABASE {db} IS {comment}"),
        )
        .await?;
    }

    let key = |s: &DatabaseSetting| (s.role.clone(), s.name.clone());
    let wanted: BTreeMap<_, _> = want.settings.iter().map(|s| (key(s), s)).collect();
    let found: BTreeMap<_, _> = have.settings.iter().map(|s| (key(s), s)).collect();
    for (k, s) in &found {
        if !wanted.contains_key(k) {
            tx.step(
                &setting_label(s),
                &format!("{} RESET {}", setting_target(&db, s), quote_ident(&s.name)),
            )
            .await?;
        }
    }
    for (k, s) in &wanted {
        if found.get(k).map(|f| &f.value) != Some(&s.value) {
            tx.step(
                &setting_label(s),
                &format!(
                    "{} SET {} TO {}",
                    setting_target(&db, s),
                    quote_ident(&s.name),
                    setting_value(&s.name, &s.value)
                ),
            )
            .await?;
        }
    }

    let grants = |list: &[DatabasePrivilege]| -> BTreeSet<(Option<String>, String, bool)> {
        list.iter()
            .map(|p| (p.grantee.clone(), p.privilege.clone(), p.grantable))
            .collect()
    };
    if grants(&have.privileges) != grants(&want.privileges) {
        let holders: BTreeSet<String> = have
            .privileges
            .iter()
            .filter_map(|p| p.grantee.as_deref().map(quote_ident))
            .chain(["PUBLIC".to_string()])
            .collect();
        let revoked = tx
            .step(
                "the privileges found",
                &format!(
                    "REVOKE ALL ON DATABASE {db} FROM {} CASCADE",
                    holders.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
            .await?;
        if revoked {
            for (grantee, privilege, grantable) in grants(&want.privileges) {
                let to = grantee.as_deref().map_or("PUBLIC".to_string(), quote_ident);
                tx.step(
                    &format!("{privilege} for {}", grantee.as_deref().unwrap_or("PUBLIC")),
                    &format!(
                        "GRANT {privilege} ON DATABASE {db} TO {to}{}",
                        if grantable { " WITH GRANT OPTION" } else { "" }
                    ),
                )
                .await?;
            }
        }
    }
    for p in &want.privileges {
        if p.grantor != want.owner {
            tx.not_restored.push(format!(
                "{label}: {} for {} was granted by {} in the backup, and is now granted by the owner",
                p.privilege,
                p.grantee.as_deref().unwrap_or("PUBLIC"),
                p.grantor
            ));
        }
    }
    tx.commit().await
}

/// One transaction of statements, each under a savepoint: a refused one is undone alone and
/// noted.
struct Steps<'s> {
    session: &'s Session,
    label: &'s str,
    not_restored: Vec<String>,
}

impl<'s> Steps<'s> {
    async fn begin(session: &'s Session, label: &'s str) -> Result<Steps<'s>, Error> {
        session.execute("BEGIN").await?;
        Ok(Steps {
            session,
            label,
            not_restored: Vec::new(),
        })
    }

    /// Runs `sql`; true when it took effect. A refusal by the server (with a SQLSTATE) is
    /// noted under `what`; anything else (the connection) fails the whole.
    async fn step(&mut self, what: &str, sql: &str) -> Result<bool, Error> {
        let client = self.session.client();
        let run = client
            .batch_execute(&format!("SAVEPOINT backstop_property; {sql}"))
            .await;
        match run {
            Ok(()) => {
                self.session
                    .execute("RELEASE SAVEPOINT backstop_property")
                    .await?;
                Ok(true)
            }
            Err(e) => match e.as_db_error() {
                Some(db) => {
                    self.session
                        .execute("ROLLBACK TO SAVEPOINT backstop_property; RELEASE SAVEPOINT backstop_property")
                        .await?;
                    self.not_restored.push(format!(
                        "{}: {what} not put back ({}: {})",
                        self.label,
                        db.code().code(),
                        db.message()
                    ));
                    Ok(false)
                }
                None => {
                    let _ = self.session.execute("ROLLBACK").await;
                    Err(self.session.error(&e))
                }
            },
        }
    }

    async fn commit(self) -> Result<Vec<String>, Error> {
        self.session.execute("COMMIT").await?;
        Ok(self.not_restored)
    }
}

/// `ALTER DATABASE db` or `ALTER ROLE r IN DATABASE db`, for a setting.
fn setting_target(db: &str, s: &DatabaseSetting) -> String {
    match &s.role {
        None => format!("ALTER DATABASE {db}"),
        Some(role) => format!("ALTER ROLE {} IN DATABASE {db}", quote_ident(role)),
    }
}

fn setting_label(s: &DatabaseSetting) -> String {
    match &s.role {
        None => format!("setting {}", s.name),
        Some(role) => format!("setting {} for role {role}", s.name),
    }
}

/// A stored value as SQL: one literal, or one per element for a list setting.
fn setting_value(name: &str, value: &str) -> String {
    if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        split_list(value)
            .iter()
            .map(|e| quote_literal(e))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    }
}

/// The elements of a stored list value: separated by commas, surrounding blanks dropped, an
/// element in double quotes taken as written (`""` inside is one `"`). As libpq's
/// `SplitGUCList`, which `pg_dump` uses for the same purpose.
fn split_list(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_split_into_their_elements() {
        assert_eq!(
            split_list(r#"app, "$user", public"#),
            ["app", "$user", "public"]
        );
        assert_eq!(split_list(r#""we""ird, one",x"#), [r#"we"ird, one"#, "x"]);
        assert_eq!(split_list(r#""""#), [""]);
        assert_eq!(
            setting_value("search_path", r#"app, "$user""#),
            "'app', '$user'"
        );
        assert_eq!(setting_value("statement_timeout", "45s"), "'45s'");
        assert_eq!(
            setting_value("app.note", r"it's a \ path"),
            r"E'it''s a \\ path'"
        );
    }
}
