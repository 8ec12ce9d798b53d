//! Keys of odd database names and servers: readable, and never shared by two names.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::store::memory::MemoryStore;

#[test]
fn odd_names_get_their_own_readable_keys() {
    let catalog = Catalog::new(Arc::new(MemoryStore::new("b")), "backstop").unwrap();
    let key = |server: &str, db: &str| catalog.dump_key("shop", "id-1", server, db);
    assert_eq!(
        key("db.example.com:5432", "orders_2"),
        "backstop/shop/id-1/db/db.example.com%3A5432/orders_2.dump"
    );
    assert_eq!(
        key("[::1]:5432", "my db"),
        "backstop/shop/id-1/db/%5B%3A%3A1%5D%3A5432/my%20db.dump"
    );
    let names = [
        "app",
        "App",
        "APP",
        "my db",
        "my_db",
        "my%20db",
        "it's \"quoted\"",
        "-leading-dash",
        "caf\u{e9}",   // NFC
        "cafe\u{301}", // NFD: looks the same, another name to PostgreSQL
        "a/b",
        "a\\b",
        "..",
        ".",
        "\u{1F600}",
    ];
    let servers = ["prod-eu:5432", "prod-us:5432", "prod-eu:5433"];
    let mut keys = BTreeSet::new();
    for server in servers {
        for name in names {
            let k = key(server, name);
            let file = k.rsplit('/').next().unwrap();
            assert!(
                file.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.%".contains(c)),
                "{k}"
            );
            assert_eq!(k.matches('/').count(), 5, "{k}: one segment per name");
            assert!(keys.insert(k.clone()), "{k} is shared");
        }
    }
    assert_eq!(key_segment(".."), "%2E%2E");
}
