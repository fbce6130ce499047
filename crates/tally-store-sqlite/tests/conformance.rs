//! The port conformance suites from `tally_core::conformance`, run against the SQLite backend: each
//! check opens its own database in a fresh temporary directory.

use std::future::Future;
use std::pin::Pin;

use tally_core::conformance::{Factory, Fresh};
use tally_store_sqlite::Sqlite;

struct SqliteFactory;

impl Factory for SqliteFactory {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>> {
        Box::pin(async {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = Sqlite::open(dir.path()).expect("open sqlite backend");
            Fresh {
                backend: store.backend(),
                guard: Box::new(dir),
            }
        })
    }
}

tally_core::conformance_tests!(SqliteFactory);
