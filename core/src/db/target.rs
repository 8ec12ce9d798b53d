//! Where a database is and how to log in to it.
//!
//! A [`DbTarget`] comes from a `postgres://` URL (local use) or from a Secrets Manager secret in
//! the RDS shape (`host`, `port`, `username`, `password`, `dbname`). The password lives in a
//! [`Password`] whose `Debug`/`Display` print `***`; it reaches the PostgreSQL tools only through
//! their environment (`PGPASSWORD`) and never appears in argv, logs, errors or outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::error::Error;
use crate::model::run::Target;

/// How the servers behind secrets are reached: the operator's `sslmode` (the least a run
/// document may ask for) and CA bundle. A secret in the RDS shape says nothing of TLS, so
/// without this a secret's server would be reached with libpq's `prefer`: encrypted when
/// offered, never verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// `BACKSTOP_DB_SSLMODE`; unset: `prefer` (local use).
    pub sslmode: Option<String>,
    /// `BACKSTOP_DB_SSLROOTCERT`: the CA bundle (RDS's `global-bundle.pem`); unset: the
    /// system's roots.
    pub sslrootcert: Option<std::path::PathBuf>,
}

impl TlsPolicy {
    /// The operator's policy; `InvalidInput` for an unknown mode.
    pub fn new(
        sslmode: Option<String>,
        sslrootcert: Option<std::path::PathBuf>,
    ) -> Result<TlsPolicy, Error> {
        if let Some(mode) = &sslmode {
            if crate::db::tls::strictness(mode).is_none() {
                return Err(Error::InvalidInput(format!(
                    "BACKSTOP_DB_SSLMODE={mode:?}: use one of {}",
                    crate::db::tls::SSLMODES.join(", ")
                )));
            }
        }
        Ok(TlsPolicy {
            sslmode,
            sslrootcert,
        })
    }

    /// Gives a secret's target its TLS: the run's `sslmode` when it is at least as strict as
    /// the operator's (else `NotAllowed`), otherwise the operator's; the operator's bundle.
    pub fn secure(&self, db: &mut DbTarget, asked: Option<&str>) -> Result<(), Error> {
        let floor = self.sslmode.as_deref();
        let mode = match (asked, floor) {
            (Some(a), Some(f))
                if crate::db::tls::strictness(a) < crate::db::tls::strictness(f) =>
            {
                return Err(Error::NotAllowed(format!(
                    "sslmode {a} is weaker than the operator's {f} (DatabaseSslMode in the template)"
                )))
            }
            (Some(a), _) => Some(a),
            (None, f) => f,
        };
        db.sslmode = mode.map(str::to_string);
        db.sslrootcert = self.sslrootcert.clone();
        Ok(())
    }
}

/// Which database logins each application's runs may use. A Lambda function's role reaches
/// every secret in the stack's `DatabaseSecretArns` whichever run document it serves, so IAM
/// alone cannot keep one team's run document away from another team's database: the
/// operator maps each application to its own secrets (and, for `url_env` targets, to the
/// variables named `env:NAME`) and every resolution checks the map first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Whatever the caller's credentials reach: the CLI on an operator's own machine.
    Unrestricted,
    /// Only what is mapped to each application (`BACKSTOP_APPLICATION_SECRETS`).
    Mapped(BTreeMap<String, BTreeSet<String>>),
}

impl Access {
    /// Parses `{"<application>": ["<secret name or ARN>", "env:<VARIABLE>", ...], ...}`.
    pub fn parse(json: &str) -> Result<Access, Error> {
        let map: BTreeMap<String, BTreeSet<String>> = serde_json::from_str(json).map_err(|e| {
            Error::InvalidInput(format!(
                "BACKSTOP_APPLICATION_SECRETS is not a JSON object of application to a list of secrets: {e}"
            ))
        })?;
        for (app, allowed) in &map {
            crate::model::manifest::check_segment("application", app)?;
            if allowed
                .iter()
                .any(|a| a.trim().is_empty() || a.contains('*'))
            {
                return Err(Error::InvalidInput(format!(
                    "BACKSTOP_APPLICATION_SECRETS: application {app} lists an empty or wildcard entry; name each secret (or env:VARIABLE) exactly"
                )));
            }
        }
        Ok(Access::Mapped(map))
    }

    /// `NotAllowed` unless the run's application may use every login the run names.
    pub fn check_run(&self, run: &crate::model::run::RunDocument) -> Result<(), Error> {
        run.targets
            .iter()
            .try_for_each(|t| self.check(&run.application, t))
    }

    /// `NotAllowed` unless `application`'s runs may use `target`'s login: its `secret_id` as
    /// listed (name or ARN, exactly as written), or its `url_env` listed as `env:NAME`.
    pub fn check(&self, application: &str, target: &Target) -> Result<(), Error> {
        let Access::Mapped(map) = self else {
            return Ok(());
        };
        let Target::Database {
            secret_id, url_env, ..
        } = target
        else {
            return Ok(());
        };
        let (entry, what) = match (secret_id, url_env) {
            (Some(s), _) => (s.clone(), format!("secret {s}")),
            (None, Some(v)) => (format!("env:{v}"), format!("url_env {v}")),
            (None, None) => return Ok(()),
        };
        if map.get(application).is_some_and(|a| a.contains(&entry)) {
            Ok(())
        } else {
            Err(Error::NotAllowed(format!(
                "application {application} may not use database {what}: the operator maps each application to its secrets (ApplicationSecrets in the template)"
            )))
        }
    }
}

/// A password that never prints itself.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }
    /// The secret itself; only for handing to a PostgreSQL client or tool environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Replaces every occurrence of the password in `text` by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A PostgreSQL database to back up into or restore from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Password,
    pub dbname: String,
    /// libpq `sslmode`, passed to the tools as `PGSSLMODE` when set.
    pub sslmode: Option<String>,
    /// libpq `sslrootcert`, passed to the tools as `PGSSLROOTCERT` when set.
    pub sslrootcert: Option<std::path::PathBuf>,
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

/// The RDS secret JSON shape (extra fields such as `engine` are ignored).
#[derive(Deserialize)]
struct RdsSecret {
    host: String,
    #[serde(default)]
    port: Option<PortValue>,
    username: String,
    password: String,
    #[serde(default)]
    dbname: Option<String>,
}

/// RDS secrets carry the port as a number, hand-written ones often as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(u16),
    Text(String),
}

impl DbTarget {
    /// Parses `postgres://user:password@host:port/dbname?sslmode=...`. The error never echoes
    /// the URL, since it may hold a password.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidInput(format!("database URL: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "postgres" && parsed.scheme() != "postgresql" {
            return Err(bad("scheme must be postgres:// or postgresql://"));
        }
        // An IPv6 literal comes bracketed (`[::1]`); libpq and the session want it bare.
        let host = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .to_string();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(parsed.username());
        if user.is_empty() {
            return Err(bad("no user name"));
        }
        let password = Password::new(parsed.password().map(decode).unwrap_or_default());
        let dbname = decode(parsed.path().trim_start_matches('/'));
        if dbname.is_empty() {
            return Err(bad("no database name in the path"));
        }
        let (mut sslmode, mut sslrootcert) = (None, None);
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = Some(v.into_owned()),
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(v.into_owned())),
                other => return Err(bad(&format!("unsupported parameter {other}"))),
            }
        }
        Ok(DbTarget {
            host,
            port: parsed.port().unwrap_or(5432),
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
        })
    }

    /// Parses an RDS-shaped secret string. `dbname` overrides the secret's own `dbname`.
    pub fn from_secret_json(
        secret_id: &str,
        json: &str,
        dbname: Option<&str>,
    ) -> Result<Self, Error> {
        // No source: serde's error could quote a value of the secret.
        let unusable = |reason: String| Error::SecretUnusable {
            secret_id: secret_id.to_string(),
            reason,
            source: None,
        };
        // serde's message names the missing field but never a value.
        let s: RdsSecret = serde_json::from_str(json)
            .map_err(|e| unusable(format!("not an RDS-shaped secret ({})", e.classify_name())))?;
        let port = match s.port {
            None => 5432,
            Some(PortValue::Number(p)) => p,
            Some(PortValue::Text(t)) => t
                .parse()
                .map_err(|_| unusable("port is not a number".to_string()))?,
        };
        let dbname = dbname
            .map(str::to_string)
            .or(s.dbname)
            .ok_or_else(|| unusable("no dbname in the secret and none given".to_string()))?;
        Ok(DbTarget {
            host: s.host,
            port,
            user: s.username,
            password: Password::new(s.password),
            dbname,
            sslmode: None,
            sslrootcert: None,
        })
    }

    /// Reads the secret from Secrets Manager and parses it.
    pub async fn from_secret(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
        dbname: Option<&str>,
    ) -> Result<Self, Error> {
        crate::aws::permissions::check("secretsmanager:GetSecretValue")?;
        let out = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| {
                let failure = crate::aws::Failure::of(e);
                Error::SecretUnusable {
                    secret_id: secret_id.to_string(),
                    reason: format!("{}: {}", failure.code, failure.message),
                    source: Some(failure.source),
                }
            })?;
        let json = out.secret_string().ok_or_else(|| Error::SecretUnusable {
            secret_id: secret_id.to_string(),
            reason: "the secret has no string value".to_string(),
            source: None,
        })?;
        Self::from_secret_json(secret_id, json, dbname)
    }

    /// Where a database target of `application`'s run is and how to log in, once `access`
    /// allows it: from its secret (with TLS as `tls` and the target say), or (local use) from
    /// the URL in the environment variable it names; its `dbname` overrides a URL's.
    pub async fn resolve(
        secrets: &aws_sdk_secretsmanager::Client,
        access: &Access,
        tls: &TlsPolicy,
        application: &str,
        target: &Target,
    ) -> Result<Self, Error> {
        access.check(application, target)?;
        let Target::Database {
            secret_id,
            url_env,
            dbname,
            sslmode,
        } = target
        else {
            return Err(Error::InvalidInput(format!(
                "{} is not a database",
                target.label()
            )));
        };
        let mut db = match (secret_id, url_env) {
            (Some(secret), None) => {
                let mut db = DbTarget::from_secret(secrets, secret, dbname.as_deref()).await?;
                tls.secure(&mut db, sslmode.as_deref())?;
                db
            }
            (None, Some(var)) => {
                let url = std::env::var(var).map_err(|_| {
                    Error::InvalidInput(format!(
                        "url_env {var}: no such environment variable where the task runs"
                    ))
                })?;
                DbTarget::from_url(&url)?
            }
            _ => {
                return Err(Error::InvalidInput(
                    "a database target needs exactly one of secret_id, url_env".to_string(),
                ))
            }
        };
        if let (Some(name), None) = (dbname, secret_id) {
            db.dbname = name.clone();
        }
        Ok(db)
    }

    /// The server, as `host:port` (the host lower-cased, an IPv6 literal in brackets): with
    /// the database name, what identifies a database in a backup.
    pub fn server(&self) -> String {
        server_label(&self.host, self.port)
    }

    /// The same server and login, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        DbTarget {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// Environment for libpq-based tools. The database goes in `PGDATABASE` too: as a
    /// `--dbname` argument a name containing `=` would be read as a connection string.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGDATABASE", self.dbname.clone()),
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGPASSWORD", self.password.expose().to_string()),
            ("PGAPPNAME", "backstop".to_string()),
            ("PGCONNECT_TIMEOUT", "15".to_string()),
        ];
        if let Some(mode) = &self.sslmode {
            env.push(("PGSSLMODE", mode.clone()));
        }
        if let Some(root) = &self.sslrootcert {
            env.push(("PGSSLROOTCERT", root.display().to_string()));
        }
        env
    }
}

/// `host:port` as [`DbTarget::server`] writes it.
pub fn server_label(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Serde's classification of a JSON error, without the offending input.
trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> String {
        let msg = self.to_string();
        // "missing field `password` at line 1 column 40" is safe; "invalid type: string \"...\""
        // may quote a value, so only the category is kept for everything but missing fields.
        if msg.starts_with("missing field") {
            msg
        } else {
            format!("{:?} error at line {}", self.classify(), self.line())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_parsed_and_password_hidden() {
        let t = DbTarget::from_url("postgres://app:s%40cret@db.local:6543/orders?sslmode=require")
            .unwrap();
        assert_eq!(t.host, "db.local");
        assert_eq!(t.port, 6543);
        assert_eq!(t.user, "app");
        assert_eq!(t.password.expose(), "s@cret");
        assert_eq!(t.dbname, "orders");
        assert_eq!(t.sslmode.as_deref(), Some("require"));
        assert_eq!(t.to_string(), "app@db.local:6543/orders");
        assert!(!format!("{t:?}").contains("s@cret"));
    }

    #[test]
    fn an_ipv6_literal_host_is_bare_for_libpq_and_bracketed_in_the_server() {
        let t = DbTarget::from_url("postgres://app:pw@[::1]:6543/orders").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.server(), "[::1]:6543");
        assert!(t.libpq_env().contains(&("PGHOST", "::1".to_string())));
        let t = DbTarget::from_url("postgres://app:pw@DB.Example.com/orders").unwrap();
        assert_eq!(t.server(), "db.example.com:5432");
    }

    #[test]
    fn bad_urls_are_named_and_not_echoed() {
        for url in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h",
            "postgres://:hunter2@h/db",
            "not a url hunter2",
            "postgres://u:hunter2@h/db?password=x",
        ] {
            let err = DbTarget::from_url(url).unwrap_err();
            assert_eq!(err.error_type(), "InvalidInput", "{url}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn access_allows_only_what_is_mapped_to_the_application() {
        let db = |secret: Option<&str>, env: Option<&str>| Target::Database {
            secret_id: secret.map(str::to_string),
            url_env: env.map(str::to_string),
            dbname: None,
            sslmode: None,
        };
        let access =
            Access::parse(r#"{"shop": ["prod/shop-db", "env:SHOP_DB_URL"], "billing": []}"#)
                .unwrap();
        assert!(access
            .check("shop", &db(Some("prod/shop-db"), None))
            .is_ok());
        assert!(access.check("shop", &db(None, Some("SHOP_DB_URL"))).is_ok());
        for (app, target) in [
            ("billing", db(Some("prod/shop-db"), None)),
            ("shop", db(Some("prod/billing-db"), None)),
            ("shop", db(Some("prod/shop-db-2"), None)),
            ("shop", db(None, Some("BILLING_DB_URL"))),
            ("other", db(Some("prod/shop-db"), None)),
        ] {
            let e = access.check(app, &target).unwrap_err();
            assert_eq!(e.error_type(), "NotAllowed", "{app} {target:?}");
        }
        assert!(Access::Unrestricted
            .check("any", &db(Some("prod/shop-db"), None))
            .is_ok());
        for bad in [
            r#"["shop"]"#,
            r#"{"shop": ["prod/*"]}"#,
            r#"{"a b": []}"#,
            "{",
        ] {
            assert_eq!(
                Access::parse(bad).unwrap_err().error_type(),
                "InvalidInput",
                "{bad}"
            );
        }
    }

    #[test]
    fn rds_secret_shape() {
        let t = DbTarget::from_secret_json(
            "prod/db",
            r#"{"engine":"postgres","host":"h","port":"5433","username":"u","password":"p4ss","dbname":"app"}"#,
            None,
        )
        .unwrap();
        assert_eq!((t.port, t.dbname.as_str()), (5433, "app"));
        let err = DbTarget::from_secret_json("prod/db", r#"{"host":"h","password":"p4ss"}"#, None)
            .unwrap_err();
        assert_eq!(err.error_type(), "SecretUnusable");
        assert!(err.to_string().contains("username"));
        let err =
            DbTarget::from_secret_json("s", r#"{"host":1,"password":"p4ss"}"#, None).unwrap_err();
        assert!(!err.to_string().contains("p4ss"));
    }

    #[test]
    fn a_secrets_tls_is_the_operators_or_stricter() {
        let target = || {
            DbTarget::from_secret_json(
                "s",
                r#"{"host":"h","username":"u","password":"p","dbname":"d"}"#,
                None,
            )
            .unwrap()
        };
        let policy = TlsPolicy::new(
            Some("verify-full".to_string()),
            Some("/opt/certs/global-bundle.pem".into()),
        )
        .unwrap();
        let mut db = target();
        policy.secure(&mut db, None).unwrap();
        assert_eq!(db.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(db.sslrootcert, Some("/opt/certs/global-bundle.pem".into()));
        for weaker in ["disable", "prefer", "require", "verify-ca"] {
            let err = policy.secure(&mut target(), Some(weaker)).unwrap_err();
            assert_eq!(err.error_type(), "NotAllowed", "{weaker}");
        }
        let lenient = TlsPolicy::new(Some("require".to_string()), None).unwrap();
        let mut db = target();
        lenient.secure(&mut db, Some("verify-full")).unwrap();
        assert_eq!(db.sslmode.as_deref(), Some("verify-full"));
        let mut db = target();
        TlsPolicy::default().secure(&mut db, None).unwrap();
        assert_eq!(
            db.sslmode, None,
            "libpq's default, prefer, on an operator's machine"
        );
        assert_eq!(
            TlsPolicy::new(Some("maybe".to_string()), None)
                .unwrap_err()
                .error_type(),
            "InvalidInput"
        );
    }
}
