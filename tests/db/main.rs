//! PostgreSQL databases through `backstop db …`, against moto and a throwaway PostgreSQL:
//! the round trip of a realistic schema in both restore modes ([`roundtrip`]), every failure
//! path ending in a named error with nothing half-done ([`failures`]), credentials from a
//! Secrets Manager secret ([`secrets`]), SQL checks' queries held read-only ([`checks`]), a database shaped like production restored by its
//! non-superuser owner ([`production`]), a server that only speaks TLS ([`tls`]), the targets
//! of one backup written concurrently into its one manifest ([`backup_parts`]) and the progress
//! bar ([`cli_progress`]).

#[path = "../support/mod.rs"]
mod support;

mod backup_parts;
mod checks;
mod cli_progress;
mod failures;
mod production;
mod roundtrip;
mod secrets;
mod tls;
