//! Old and new versions of the same facts read the same (issue 19): a history stored partly in the
//! version 1 forms of its sales, voids and returns, as a build before discounts wrote them, gives
//! every read model, as of every position, what the same facts give in the current version.

use tally_domain::Event;
use tally_domain::event::v1;

use super::dataservices::views_hold;
use super::history::{Books, Rng, Seeding, seed_with};
use crate::Backend;
use crate::projector::Projector;
use crate::signals::Signals;
use crate::timetravel::TimeTravel;

/// The version 1 form of an event whose type has one and whose facts fit it (no discount, no
/// till): `(1, payload)` as a build before version 2 wrote it. `None` for anything else.
pub fn as_version_1(event: &Event) -> Option<(u32, String)> {
    fn lines(lines: &[tally_domain::event::SoldLine]) -> Option<Vec<v1::SoldLine>> {
        lines
            .iter()
            .map(|l| {
                (l.discount_cents.get() == 0).then(|| v1::SoldLine {
                    item_id: l.item_id.clone(),
                    supplier_id: l.supplier_id.clone(),
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
            })
            .collect()
    }
    let json = match event {
        Event::SaleRecorded(e) if e.till_id.is_none() => serde_json::to_string(&v1::SaleRecorded {
            sale_id: e.sale_id.clone(),
            store_id: e.store_id.clone(),
            business_date: e.business_date,
            lines: lines(&e.lines)?,
        }),
        Event::SaleVoided(e) if e.till_id.is_none() => serde_json::to_string(&v1::SaleVoided {
            sale_id: e.sale_id.clone(),
            store_id: e.store_id.clone(),
            reason: e.reason.clone(),
            sale_business_date: e.sale_business_date,
            lines: lines(&e.lines)?,
        }),
        Event::ReturnRecorded(e) => serde_json::to_string(&v1::ReturnRecorded {
            return_id: e.return_id.clone(),
            sale_id: e.sale_id.clone(),
            store_id: e.store_id.clone(),
            business_date: e.business_date,
            lines: lines(&e.lines)?,
        }),
        _ => return None,
    };
    Some((1, json.expect("version 1 payloads serialize")))
}

pub async fn old_and_new_versions_of_the_same_facts_read_the_same(b: &Backend) {
    let seeding = Seeding {
        discounts: false,
        old_percent: 50,
    };
    let (log, decided) = seed_with(b, &mut Rng::new(0x19), 300, seeding).await;
    let versions = |v: u32| {
        log.iter()
            .filter(|e| e.event_type == "SaleRecorded" && e.schema_version == v)
            .count()
    };
    assert!(
        versions(1) > 20 && versions(2) > 20,
        "a mix of versions: {} old, {} new sales",
        versions(1),
        versions(2)
    );
    // What the facts give in the current version, folded without the store's decoding.
    let mut books = Books::default();
    decided.iter().for_each(|e| books.fold(e));
    // Every stored event reads as the event decided.
    for (stored, event) in log.iter().zip(&decided) {
        assert_eq!(
            &stored.decode().expect("decodes"),
            event,
            "{}",
            stored.position
        );
    }
    let mut projector =
        Projector::new(b.events.clone(), b.sink.clone(), Signals::default()).with_batch_size(61);
    projector.catch_up().await.expect("catch up");
    views_hold(b, &log, &books).await;
    // As of the head, time travel (from the log and from the journal) answers the same too.
    let travel = TimeTravel::new(b.events.clone(), b.journal.clone());
    let head = log.last().map_or(0, |e| e.position);
    for (store, _) in super::history::STORES {
        let store = tally_domain::values::StoreId::parse(store).expect("a store id");
        let days = travel
            .store_daily(&store, crate::rows::DateRange::default(), head)
            .await
            .expect("store daily as of the head");
        let now = b
            .read
            .store_daily(&store, crate::rows::DateRange::default())
            .await
            .expect("store daily");
        assert_eq!(days.rows, now.rows, "{store}");
    }
}
