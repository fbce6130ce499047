//! `tally verify` on every backend: a projected history verifies, now and as of a position; a row
//! changed behind the projector's back is named.

use std::collections::HashMap;

use super::history::{Rng, seed};
use crate::Backend;
use crate::projector::Projector;
use crate::readmodel::{DayFigures, Delta, ProjectionUpdate, STORE_DAILY};
use crate::signals::Signals;
use crate::verify::{Options, verify};

pub async fn passes_on_a_history_and_names_an_altered_row(b: &Backend) {
    let log = seed(b, &mut Rng::new(0x20), 300).await;
    let head = log.last().map_or(0, |e| e.position);
    let mut projector = Projector::new(b.events.clone(), b.sink.clone(), Signals::default())
        .with_journal_interval(29)
        .with_batch_size(53);
    projector.catch_up().await.expect("catch up");

    let options = Options {
        as_of_position: Some(head / 2),
        page: 37,
    };
    let report = verify(b, options, |_, _| {}).await.expect("verify");
    assert!(
        report.ok(),
        "{:#?}",
        report.tables.iter().filter(|t| !t.ok()).collect::<Vec<_>>()
    );
    assert_eq!(report.events, head);
    assert_eq!(report.tables.len(), crate::verify::TABLES.len() + 3);
    for t in &report.tables {
        assert!(t.expected_rows > 0, "{} is compared on rows", t.table);
    }

    // One store day changed behind the projector's back (its checkpoint does not move).
    let day = log
        .iter()
        .find_map(|e| match e.decode().ok()? {
            tally_domain::Event::SaleRecorded(s) => Some((s.store_id.to_string(), s.business_date)),
            _ => None,
        })
        .expect("the history has a sale");
    let at = b.read.checkpoints().await.expect("checkpoints")[STORE_DAILY];
    let bump = DayFigures {
        transactions: 1,
        ..DayFigures::default()
    };
    b.sink
        .apply(vec![ProjectionUpdate {
            projection: STORE_DAILY.to_owned(),
            from: at,
            to: at,
            delta: Delta::StoreDaily(HashMap::from([(day.clone(), bump)])),
        }])
        .await
        .expect("an update behind the projector's back");
    let report = verify(b, Options::default(), |_, _| {})
        .await
        .expect("verify");
    assert!(!report.ok());
    let bad: Vec<_> = report.tables.iter().filter(|t| !t.ok()).collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].table, "rm_store_daily");
    assert_eq!(bad[0].differing, 1);
    let d = &bad[0].differences[0];
    assert_eq!(d.key, [day.0.clone(), day.1.to_string()]);
    let (stored, expected) = (d.stored.as_ref().unwrap(), d.expected.as_ref().unwrap());
    assert_eq!(stored.figures[0], expected.figures[0] + 1, "{d:?}");
}
