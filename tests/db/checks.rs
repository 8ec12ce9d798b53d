//! SQL checks' query against a real server, as Backstop's own session runs it: one statement,
//! in a read-only transaction under a statement timeout, rolled back; what it refuses is named
//! by SQLSTATE alone, never with the server's message (which can quote data).

use std::time::Duration;

use backstop_core::db::session::{QueryRefused, Session};
use backstop_core::db::target::DbTarget;

use crate::support::{Bed, SHOP_SCHEMA};

#[test]
fn a_checks_query_reads_one_value_and_can_change_nothing() {
    let bed = Bed::new().database("shop", SHOP_SCHEMA).build();
    let target = DbTarget::from_url(&bed.pg().url("shop")).unwrap();
    let orders = bed
        .pg()
        .psql("shop", "SELECT count(*) FROM orders")
        .unwrap();
    bed.rt.block_on(async {
        let session = Session::connect(&target).await.unwrap();
        let read = |sql: &'static str, timeout: u64| {
            let session = &session;
            async move {
                session
                    .read_only_value(sql, Duration::from_secs(timeout))
                    .await
            }
        };
        assert_eq!(
            read("SELECT count(*) FROM orders", 30).await,
            Ok(Some(orders.clone()))
        );
        assert_eq!(read("SELECT NULL", 30).await, Ok(None));
        assert_eq!(read("SELECT 1 WHERE false", 30).await, Ok(None));
        // What a read-only transaction still allows (a large object) is rolled back.
        assert!(matches!(read("SELECT lo_create(0)", 30).await, Ok(Some(_))));
        for (sql, refused) in [
            // Several statements: the second would run outside the check's rules.
            (
                "SELECT 1; DELETE FROM orders",
                QueryRefused::Server("42601".into()),
            ),
            // A write, whatever shape it takes: refused by the read-only transaction.
            (
                "DELETE FROM orders RETURNING id",
                QueryRefused::Server("25006".into()),
            ),
            (
                "WITH gone AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM gone",
                QueryRefused::Server("25006".into()),
            ),
            // No columns: not a query.
            ("CREATE TEMP TABLE t (x int)", QueryRefused::NoColumns),
            ("LISTEN x", QueryRefused::NoColumns),
            // A value the server would quote in its message (22P02 says which text).
            (
                "SELECT (SELECT note FROM orders LIMIT 1)::int",
                QueryRefused::Server("22P02".into()),
            ),
        ] {
            assert_eq!(read(sql, 30).await, Err(refused), "{sql}");
        }
        // A slow query ends at the check's statement timeout.
        assert_eq!(
            read("SELECT pg_sleep(5)", 1).await,
            Err(QueryRefused::Server("57014".into()))
        );
        // The session is usable afterwards, and nothing changed.
        assert_eq!(
            read("SELECT count(*) FROM orders", 30).await,
            Ok(Some(orders.clone()))
        );
    });
    assert_eq!(
        bed.pg()
            .psql("shop", "SELECT count(*) FROM pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
}
