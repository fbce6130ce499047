//! Shadow rebuilds on every backend: a shadow version is built beside the serving one without
//! touching it, swaps in whole and only when it is at least as far, and a rebuild beside a following
//! projector ends with read models equal to a fresh replay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::history::{Rng, seed};
use crate::Backend;
use crate::ports::Error;
use crate::projector::Projector;
use crate::projector::rebuild::Rebuilder;
use crate::readmodel::shadow;
use crate::readmodel::{
    DayFigures, Delta, INVENTORY, PROJECTIONS, ProjectionUpdate, STORE_DAILY, TILL_DAILY,
};
use crate::rows::DateRange;
use crate::signals::Signals;
use crate::verify::{Options, verify};
use tally_domain::values::StoreId;

async fn verified(b: &Backend) {
    let report = verify(b, Options::default(), |_, _| {})
        .await
        .expect("verify");
    assert!(
        report.ok(),
        "{:#?}",
        report.tables.iter().filter(|t| !t.ok()).collect::<Vec<_>>()
    );
}

async fn store_days(b: &Backend, store: &StoreId) -> (u64, Vec<String>) {
    let answer = b
        .read
        .store_daily(store, DateRange::default())
        .await
        .expect("store daily");
    let rows = answer.rows.iter().map(|d| format!("{d:?}")).collect();
    (answer.position, rows)
}

pub async fn shadow_versions_swap_in_whole_and_only_forward(b: &Backend) {
    let log = seed(b, &mut Rng::new(0x21), 250).await;
    let head = log.last().map_or(0, |e| e.position);
    let signals = Signals::default();
    let mut projector = Projector::new(b.events.clone(), b.sink.clone(), signals.clone());
    projector.catch_up().await.expect("catch up");
    let store = StoreId::parse("s1").expect("store id");

    // A serving row gone wrong behind the projector's back: a rebuild is what mends it.
    let (store_id, date) = log
        .iter()
        .find_map(|e| match e.decode().ok()? {
            tally_domain::Event::SaleRecorded(s) => Some((s.store_id, s.business_date)),
            _ => None,
        })
        .expect("the history has a sale");
    let bump = DayFigures {
        transactions: 7,
        ..DayFigures::default()
    };
    b.sink
        .apply(vec![ProjectionUpdate {
            projection: STORE_DAILY.to_owned(),
            from: head,
            to: head,
            delta: Delta::StoreDaily(HashMap::from([((store_id.to_string(), date), bump)])),
        }])
        .await
        .expect("an update behind the projector's back");
    let wrong = store_days(b, &store_id).await;

    // Started and part built: the serving version answers as before.
    b.sink.start_rebuild(STORE_DAILY).await.expect("start");
    let c = b.sink.checkpoints().await.expect("checkpoints");
    assert_eq!(c.get(&shadow::checkpoint_of(STORE_DAILY)), Some(&0));
    assert_eq!(c.get(STORE_DAILY), Some(&head));
    let rebuilder = Rebuilder::new(b.events.clone(), b.sink.clone(), signals.rebuilds().clone())
        .with_batch_size(41);
    assert_eq!(store_days(b, &store_id).await, wrong);

    // Too early to swap: the shadow is behind the serving version, and nothing moves.
    assert_eq!(b.sink.swap_rebuild(STORE_DAILY).await.expect("swap"), None);
    assert_eq!(store_days(b, &store_id).await, wrong);

    // Run to the end: swapped in at the head, the row mended, the shadow gone.
    let swapped = rebuilder.run_pending().await.expect("rebuild");
    assert_eq!(swapped, vec![STORE_DAILY]);
    let c = b.sink.checkpoints().await.expect("checkpoints");
    assert!(shadow::rebuilding(&c).is_empty(), "{c:?}");
    assert_eq!(c.get(STORE_DAILY), Some(&head));
    let mended = store_days(b, &store_id).await;
    assert_ne!(mended, wrong);
    assert_eq!(mended.0, head);
    verified(b).await;
    assert!(signals.rebuilds().holds.held().is_empty(), "holds released");
    assert!(signals.rebuilds().progress().is_empty(), "progress cleared");

    // Starting again replaces a half-built shadow; a cancel drops it, and then there is nothing
    // to swap.
    b.sink.start_rebuild(INVENTORY).await.expect("start");
    b.sink.start_rebuild(INVENTORY).await.expect("start again");
    let before = b.read.inventory(&store).await.expect("inventory");
    assert!(b.sink.cancel_rebuild(INVENTORY).await.expect("cancel"));
    assert!(
        !b.sink
            .cancel_rebuild(INVENTORY)
            .await
            .expect("cancel again")
    );
    assert!(matches!(
        b.sink.swap_rebuild(INVENTORY).await,
        Err(Error::Corrupt(_))
    ));
    assert_eq!(b.read.inventory(&store).await.expect("inventory"), before);
    assert!(matches!(
        b.sink.start_rebuild("no_such_projection").await,
        Err(Error::Corrupt(_))
    ));
}

pub async fn rebuilds_beside_a_following_projector_equal_a_replay(b: &Backend) {
    let log = seed(b, &mut Rng::new(0x22), 300).await;
    let head = log.last().map_or(0, |e| e.position);
    let signals = Signals::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projector =
        Projector::new(b.events.clone(), b.sink.clone(), signals.clone()).with_batch_size(37);
    let following = tokio::spawn(projector.run(stopped));

    // A new read model of this build (no checkpoint) beside ones that serve: back-filled.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut caught = b.sink.checkpoints().await.expect("checkpoints");
    // (Item daily sales are applied every couple of seconds when live.)
    while !PROJECTIONS.iter().all(|p| caught.get(*p) == Some(&head)) {
        assert!(
            tokio::time::Instant::now() < until,
            "the projector did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        caught = b.sink.checkpoints().await.expect("checkpoints");
    }
    // (A reset removes the checkpoint: the projection looks as a new build's would.)
    b.sink.reset(TILL_DAILY).await.expect("reset");
    let rebuilder = Arc::new(
        Rebuilder::new(b.events.clone(), b.sink.clone(), signals.rebuilds().clone())
            .with_batch_size(29),
    );
    let planned = rebuilder.plan_back_fills().await.expect("plan");
    assert_eq!(planned, vec![TILL_DAILY]);
    let c = b.sink.checkpoints().await.expect("checkpoints");
    assert!(shadow::back_filling(&c, TILL_DAILY), "{c:?}");
    // And every other one rebuilt at once, while the projector follows.
    for p in PROJECTIONS.into_iter().filter(|p| *p != TILL_DAILY) {
        b.sink.start_rebuild(p).await.expect("start");
    }
    let mut swapped = rebuilder.run_pending().await.expect("rebuild");
    swapped.sort_unstable();
    let mut all = PROJECTIONS.to_vec();
    all.sort_unstable();
    assert_eq!(swapped, all);
    let c = b.sink.checkpoints().await.expect("checkpoints");
    assert!(shadow::rebuilding(&c).is_empty(), "{c:?}");
    for p in PROJECTIONS {
        assert!(c.get(p).is_some_and(|at| *at >= head), "{p}: {c:?}");
    }
    let _ = stop.send(true);
    following.await.expect("projector task");
    verified(b).await;
}
