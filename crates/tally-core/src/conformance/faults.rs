//! Poison events' faults on every backend: recorded and listed in order, replaced by projection and
//! position, and cleared with an update applied in the same transaction (or not at all).

use std::collections::HashMap;

use jiff::Timestamp;

use crate::Backend;
use crate::ports::Error;
use crate::projector::poison::{Fault, FaultState};
use crate::readmodel::{Delta, INVENTORY, ProjectionUpdate, TILL_DAILY};

fn fault(projection: &str, position: u64, state: FaultState) -> Fault {
    Fault {
        projection: projection.to_owned(),
        position,
        state,
        reason: format!("{projection} cannot fold {position}"),
        at: Timestamp::from_second(1_770_000_000).expect("a time"),
    }
}

fn stock(from: u64, to: u64, on_hand: i64) -> ProjectionUpdate {
    ProjectionUpdate {
        projection: INVENTORY.to_owned(),
        from,
        to,
        delta: Delta::Inventory(HashMap::from([(("s1".into(), "i1".into()), on_hand)])),
    }
}

pub async fn are_recorded_replaced_and_cleared_with_their_update(b: &Backend) {
    assert!(b.sink.faults().await.expect("faults").is_empty());
    b.sink
        .record_fault(fault(TILL_DAILY, 9, FaultState::Stopped))
        .await
        .expect("record");
    b.sink
        .record_fault(fault(INVENTORY, 12, FaultState::Parked))
        .await
        .expect("record");
    b.sink
        .record_fault(fault(INVENTORY, 4, FaultState::Parked))
        .await
        .expect("record");
    let listed = b.sink.faults().await.expect("faults");
    let keys: Vec<(&str, u64)> = listed
        .iter()
        .map(|f| (f.projection.as_str(), f.position))
        .collect();
    assert_eq!(keys, [(INVENTORY, 4), (INVENTORY, 12), (TILL_DAILY, 9)]);
    assert_eq!(listed[2], fault(TILL_DAILY, 9, FaultState::Stopped));

    // A stopped fault skipped becomes parked: the same row, replaced.
    let skipped = Fault {
        reason: "skipped".into(),
        ..fault(TILL_DAILY, 9, FaultState::Parked)
    };
    b.sink.record_fault(skipped.clone()).await.expect("replace");
    let listed = b.sink.faults().await.expect("faults");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2], skipped);

    // Cleared with its update: both or neither.
    b.sink.apply(vec![stock(0, 20, 5)]).await.expect("apply");
    let moved = b
        .sink
        .clear_fault(INVENTORY, 12, Some(stock(19, 19, 1)))
        .await;
    assert!(
        matches!(moved, Err(Error::CheckpointMoved { .. })),
        "{moved:?}"
    );
    assert_eq!(
        b.sink.faults().await.expect("faults").len(),
        3,
        "nothing cleared"
    );
    let s1 = tally_domain::values::StoreId::parse("s1").expect("id");
    let i1 = tally_domain::values::ItemId::parse("i1").expect("id");
    assert_eq!(
        b.read.inventory_item(&s1, &i1).await.expect("stock").rows,
        5
    );
    assert!(
        b.sink
            .clear_fault(INVENTORY, 12, Some(stock(20, 20, 1)))
            .await
            .expect("clear")
    );
    assert_eq!(
        b.read.inventory_item(&s1, &i1).await.expect("stock").rows,
        6
    );
    assert_eq!(
        b.read
            .checkpoints()
            .await
            .expect("checkpoints")
            .get(INVENTORY),
        Some(&20)
    );
    assert!(
        !b.sink
            .clear_fault(INVENTORY, 12, Some(stock(20, 20, 1)))
            .await
            .expect("clear again"),
        "no such fault: nothing applied"
    );
    assert_eq!(
        b.read.inventory_item(&s1, &i1).await.expect("stock").rows,
        6
    );
    assert!(b.sink.clear_fault(INVENTORY, 4, None).await.expect("clear"));
    assert_eq!(b.sink.faults().await.expect("faults"), vec![skipped]);
}
