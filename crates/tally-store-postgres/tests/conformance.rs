//! The port conformance suites from `tally_core::conformance`, unchanged, against PostgreSQL: each
//! check runs in its own fresh schema. Needs `--features postgres` and a server (see `support`).
#![cfg(feature = "postgres")]

mod support;

use std::future::Future;
use std::pin::Pin;

use tally_core::conformance::{Factory, Fresh};

struct PostgresFactory;

impl Factory for PostgresFactory {
    fn make(&self) -> Pin<Box<dyn Future<Output = Fresh> + Send + '_>> {
        Box::pin(async {
            let scratch = support::Scratch::new();
            let pg = scratch.open().await;
            Fresh {
                backend: pg.backend(),
                guard: Box::new((scratch, pg)),
            }
        })
    }
}

tally_core::conformance_tests!(PostgresFactory);
