//! A database shaped like production, backed up and restored by its owning role, which is not
//! a superuser (as on RDS): extensions, a partitioned table, a materialized view, a large
//! object, row-level security, other roles' grants, and what lives on the database object
//! itself (owner, settings, connection limit, comment, CONNECT/CREATE/TEMPORARY privileges).
//! A deploy damages all of it; each restore mode brings it back, and reports what only a
//! superuser could have put back.

use crate::support::{Bed, Cli};

const OWNER_PASSWORD: &str = "owner-pw-1";

/// Roles and the database, made by the server's superuser as an operator would.
const ROLES: &str = "
CREATE ROLE shop_owner LOGIN CREATEDB PASSWORD 'owner-pw-1';
CREATE ROLE shop_reader LOGIN PASSWORD 'reader-pw-1';
CREATE ROLE shop_writer NOLOGIN;
CREATE DATABASE shop OWNER shop_owner;
";

/// What only a superuser may set (since PostgreSQL 15 without `GRANT SET ON PARAMETER`): a
/// superuser-only setting, a custom one and a per-role setting.
const SUPERUSER_SETTINGS: &str = "
ALTER DATABASE shop SET app.tenant = 'a';
ALTER DATABASE shop SET log_min_duration_statement = '2s';
ALTER ROLE shop_reader IN DATABASE shop SET work_mem = '8MB';
";

/// The schema and data, made by the owner.
const SCHEMA: &str = r#"
CREATE EXTENSION pgcrypto;
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE SCHEMA app;
CREATE TABLE app.customers (
    id bigserial PRIMARY KEY,
    email citext UNIQUE NOT NULL,
    attrs hstore,
    token text NOT NULL DEFAULT encode(gen_random_bytes(8), 'hex')
);
INSERT INTO app.customers (email, attrs)
    SELECT 'Customer' || g || '@Example.com', hstore('tier', (g % 3)::text)
    FROM generate_series(1, 200) g;
CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, payload text)
    PARTITION BY RANGE (at);
CREATE TABLE app.events_2026 PARTITION OF app.events
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE app.events_2027 PARTITION OF app.events
    FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO app.events
    SELECT g, date '2026-06-01' + (g % 400), 'event ' || g FROM generate_series(1, 1000) g;
CREATE MATERIALIZED VIEW app.tiers AS
    SELECT attrs -> 'tier' AS tier, count(*) AS n FROM app.customers GROUP BY 1;
SELECT lo_from_bytea(424242, 'the signed contract');
CREATE TABLE app.notes (id int PRIMARY KEY, tenant text NOT NULL, body text);
ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_notes ON app.notes USING (tenant = current_setting('app.tenant', true));
INSERT INTO app.notes VALUES (1, 'a', 'first'), (2, 'b', 'second');
GRANT USAGE ON SCHEMA app TO shop_reader;
GRANT SELECT ON app.customers, app.notes, app.tiers TO shop_reader;
GRANT INSERT ON app.events TO shop_writer;
COMMENT ON DATABASE shop IS 'The shop''s orders \ and more';
ALTER DATABASE shop SET search_path = app, "$user", public;
ALTER DATABASE shop SET statement_timeout = '45s';
ALTER DATABASE shop CONNECTION LIMIT 40;
REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO shop_reader;
GRANT CREATE ON DATABASE shop TO shop_writer WITH GRANT OPTION;
"#;

/// What a bad deploy, running as the owner, does to all of it.
const DAMAGE: &str = "
ALTER DATABASE shop RESET ALL;
ALTER DATABASE shop SET search_path = public;
ALTER DATABASE shop CONNECTION LIMIT -1;
COMMENT ON DATABASE shop IS 'broken';
GRANT ALL ON DATABASE shop TO PUBLIC;
REVOKE CONNECT ON DATABASE shop FROM shop_reader;
DROP TABLE app.notes;
DELETE FROM app.customers WHERE id > 20;
DROP MATERIALIZED VIEW app.tiers;
DROP TABLE app.events_2027;
SELECT lo_unlink(424242);
REVOKE SELECT ON app.customers FROM shop_reader;
DROP EXTENSION hstore CASCADE;
";

/// Everything the test compares, one line per fact, as the superuser sees it.
fn shape(bed: &Bed) -> Vec<String> {
    let pg = bed.pg();
    let q = |db: &str, sql: &str| -> Vec<String> {
        pg.psql(db, sql)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mut lines = q(
        "postgres",
        "SELECT 'database: ' || pg_get_userbyid(datdba) || ' ' || pg_encoding_to_char(encoding) \
         || ' ' || datcollate || ' limit ' || datconnlimit || ' comment ' \
         || coalesce(shobj_description(oid, 'pg_database'), '-') FROM pg_database WHERE datname = 'shop'",
    );
    lines.extend(q(
        "postgres",
        "SELECT 'privilege: ' || coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC') || ' ' \
         || a.privilege_type || ' ' || a.is_grantable || ' by ' || pg_get_userbyid(a.grantor) \
         FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
         WHERE d.datname = 'shop' ORDER BY 1",
    ));
    lines.extend(q(
        "postgres",
        "SELECT 'setting: ' || coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ' ' || c \
         FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
         WHERE d.datname = 'shop' ORDER BY 1",
    ));
    lines.extend(q(
        "shop",
        "SELECT 'extension: ' || extname || ' ' || pg_get_userbyid(extowner) FROM pg_extension ORDER BY 1",
    ));
    lines.extend(q(
        "shop",
        "SELECT 'relation: ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' owner ' \
         || pg_get_userbyid(c.relowner) || ' rls ' || c.relrowsecurity || ' acl ' \
         || coalesce(c.relacl::text, '-') || ' partition of ' \
         || coalesce((SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
                      WHERE i.inhrelid = c.oid), '-') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'app' AND c.relkind IN ('r', 'p', 'm', 'v') ORDER BY 1",
    ));
    lines.extend(q(
        "shop",
        "SELECT 'schema: ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '-') \
         FROM pg_namespace WHERE nspname = 'app'",
    ));
    lines.extend(q(
        "shop",
        "SELECT 'policy: ' || tablename || ' ' || policyname || ' ' || qual FROM pg_policies ORDER BY 1",
    ));
    for (what, sql) in [
        (
            "customers",
            "SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM app.customers c",
        ),
        (
            "events",
            "SELECT count(*) || ' ' || sum(id) FROM app.events",
        ),
        ("events_2027", "SELECT count(*) FROM ONLY app.events_2027"),
        (
            "tiers",
            "SELECT string_agg(tier || '=' || n, ',' ORDER BY tier) FROM app.tiers",
        ),
        (
            "notes",
            "SELECT string_agg(body, ',' ORDER BY id) FROM app.notes",
        ),
        (
            "large object",
            "SELECT convert_from(lo_get(424242), 'UTF8')",
        ),
        ("sequence", "SELECT last_value FROM app.customers_id_seq"),
    ] {
        // After the damage some are gone: that is a difference too.
        let got = pg
            .psql("shop", sql)
            .unwrap_or_else(|_| "(gone)".to_string());
        lines.push(format!("{what}: {got}"));
    }
    lines
}

/// Runs `sql` on `shop` as its owner.
fn as_owner(bed: &Bed, sql: &str) {
    let url = format!(
        "postgres://shop_owner:{OWNER_PASSWORD}@127.0.0.1:{}/shop",
        bed.pg().port
    );
    let out = std::process::Command::new(bed.pg().bin_dir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn owner_cli(bed: &Bed) -> Cli {
    bed.cli()
        .login_as(bed.pg().port, "shop_owner", OWNER_PASSWORD)
}

#[test]
fn production_shaped_database_comes_back_whole_in_both_modes_as_its_non_superuser_owner() {
    let bed = Bed::new().postgres().moto().build();
    let pg = bed.pg();
    pg.psql_script("postgres", ROLES).unwrap();
    pg.psql_script("postgres", SUPERUSER_SETTINGS).unwrap();
    as_owner(&bed, SCHEMA);
    let original = shape(&bed);
    for fact in [
        "setting: * search_path=app, \"$user\", public",
        "setting: shop_reader work_mem=8MB",
        "privilege: shop_writer CREATE true by shop_owner",
        "large object: the signed contract",
    ] {
        assert!(
            original.iter().any(|l| l == fact),
            "{fact} in {original:#?}"
        );
    }
    let cli = owner_cli(&bed);
    let id = cli.db_backup("shop", &["--application", "shop"]);
    let manifest = cli.backups_show(&id);
    let props = &manifest["databases"][0]["properties"];
    assert_eq!(props["owner"], "shop_owner", "{props}");
    assert_eq!(props["connection_limit"], 40, "{props}");

    // Swap: a new database gets everything the owner may give it; the two settings only a
    // superuser can write are reported, everything else matches.
    as_owner(&bed, DAMAGE);
    assert_ne!(shape(&bed), original);
    let restore = cli.db_restore(&id, "shop", &["--json"]);
    assert!(restore.ok, "{}", restore.all());
    let report = restore.json();
    let not_restored: Vec<&str> = report["properties_not_restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(not_restored.len(), 3, "{not_restored:#?}");
    for (line, setting) in not_restored.iter().zip([
        "app.tenant",
        "log_min_duration_statement",
        "work_mem for role shop_reader",
    ]) {
        assert!(
            line.starts_with(&format!("shop: setting {setting} not put back (42501")),
            "{not_restored:#?}"
        );
    }
    let superuser_only = |l: &String| {
        l.starts_with("setting: * log_min_duration_statement")
            || l.starts_with("setting: * app.tenant")
            || l.starts_with("setting: shop_reader work_mem")
    };
    let mut want = original.clone();
    want.retain(|l| !superuser_only(l));
    assert_eq!(shape(&bed), want);
    // The failed state keeps what the superuser set.
    let kept = report["failed_state_database"].as_str().unwrap();
    assert!(kept.starts_with("shop_failed_"), "{kept}");

    // In place: the same database, so what only a superuser set is still there and untouched;
    // the rest is put back. Both superuser settings are restored first as an operator would.
    pg.psql_script("postgres", SUPERUSER_SETTINGS).unwrap();
    assert_eq!(shape(&bed), original);
    as_owner(&bed, DAMAGE);
    let restore = cli.db_restore(&id, "shop", &["--mode", "in-place", "--json"]);
    assert!(restore.ok, "{}", restore.all());
    let report = restore.json();
    assert_eq!(
        report["properties_not_restored"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(shape(&bed), original);
    // Privileges as they were: a role without CONNECT is refused, the reader connects.
    let refused = std::process::Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            &format!("postgres://shop_writer@127.0.0.1:{}/shop", pg.port),
            "-c",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let reader = std::process::Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-At",
            &format!(
                "postgres://shop_reader:reader-pw-1@127.0.0.1:{}/shop",
                pg.port
            ),
            "-c",
            "SHOW search_path",
        ])
        .output()
        .unwrap();
    assert!(
        reader.status.success(),
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&reader.stdout).trim(),
        "app, \"$user\", public"
    );
}

/// A database whose settings would end Backstop's own sessions (an idle-in-transaction
/// timeout shorter than pg_dump takes to start, a statement timeout shorter than a count)
/// still backs up and restores: Backstop's sessions carry their own bounds.
#[test]
fn database_timeouts_meant_for_the_application_do_not_end_backstops_own_sessions() {
    let bed = Bed::new()
        .database("app", crate::support::SHOP_SCHEMA)
        .moto()
        .build();
    let pg = bed.pg();
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET idle_in_transaction_session_timeout = '1s'",
    )
    .unwrap();
    pg.psql(
        "postgres",
        "ALTER DATABASE app SET statement_timeout = '1ms'",
    )
    .unwrap();
    let slow = crate::support::FakeTools::pg_dump_late(pg.bin_dir(), 3);
    let cli = bed.cli();
    let run =
        cli.clone()
            .tools(&slow.0)
            .catalog(&["db", "backup", "--database-url", &cli.url("app")]);
    assert!(run.ok, "{}", run.all());
    let id = run.stdout.trim().to_string();
    let restore = cli.db_restore(&id, "app", &[]);
    assert!(restore.ok, "{}", restore.all());
}

/// A table whose policies bind its owner too (`FORCE ROW LEVEL SECURITY`) cannot be dumped
/// whole by the owner: `pg_dump` refuses rather than silently leaving rows out, and the
/// backup is `DumpFailed` saying why, with no good manifest.
#[test]
fn a_table_forcing_row_security_on_its_owner_fails_the_backup_instead_of_losing_rows() {
    let bed = Bed::new().postgres().moto().build();
    bed.pg().psql_script("postgres", ROLES).unwrap();
    as_owner(
        &bed,
        "CREATE TABLE notes (id int, tenant text); \
         INSERT INTO notes VALUES (1, 'a'), (2, 'b'); \
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY; \
         ALTER TABLE notes FORCE ROW LEVEL SECURITY; \
         CREATE POLICY only_a ON notes USING (tenant = 'a')",
    );
    let cli = owner_cli(&bed);
    let run = cli.catalog(&["db", "backup", "--database-url", &cli.url("shop")]);
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("error: DumpFailed:") && run.stderr.contains("row-level security"),
        "{}",
        run.stderr
    );
    assert!(
        bed.manifests().iter().all(|m| m["state"] != "completed"),
        "{:?}",
        bed.manifests()
    );
}
