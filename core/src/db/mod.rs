//! PostgreSQL: where a database is and how to log in ([`target`]), TLS with libpq's `sslmode`
//! meanings ([`tls`]), a SQL session ([`session`]), the database object's own properties
//! ([`properties`]), the real `pg_dump`/`pg_restore` tools
//! ([`tools`]), and the three operations on a database built from them: a dump streamed into
//! the catalog ([`backup`]), a restore by swap or in place ([`restore`]), and the proof that a
//! backup restores ([`verify`]).

pub mod backup;
pub mod properties;
pub mod restore;
pub mod session;
pub mod target;
pub mod tls;
pub mod tools;
pub mod verify;
