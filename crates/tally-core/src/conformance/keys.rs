//! [`KeyStore`](crate::KeyStore) checks: keys are found by the hash of their secret until revoked.

use super::support::ts;
use crate::Backend;
use crate::model::{ApiKey, KeyUsage, Role};

fn key(key_id: &str, role: Role, scope: Option<&str>, rate: Option<u32>) -> ApiKey {
    ApiKey {
        key_id: key_id.to_owned(),
        role,
        scope: scope.map(str::to_owned),
        rate_per_second: rate,
        created_at: ts("2026-03-14T09:00:00.250001Z"),
        revoked_at: None,
    }
}

fn by_id(mut keys: Vec<ApiKey>) -> Vec<ApiKey> {
    keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    keys
}

pub async fn create_find_and_list(b: &Backend) {
    assert_eq!(b.keys.list().await, Ok(Vec::new()));
    let till = key("till-s1", Role::Store, Some("s1"), Some(50));
    let admin = key("admin-1", Role::Admin, None, None);
    b.keys.create(till.clone(), [1; 32]).await.expect("create");
    b.keys.create(admin.clone(), [2; 32]).await.expect("create");

    assert_eq!(b.keys.find([1; 32]).await, Ok(Some(till.clone())));
    assert_eq!(b.keys.find([2; 32]).await, Ok(Some(admin.clone())));
    assert_eq!(b.keys.find([3; 32]).await, Ok(None));
    let listed = by_id(b.keys.list().await.expect("list"));
    assert_eq!(listed, vec![admin, till]);
}

pub async fn revoke_hides_a_key_once(b: &Backend) {
    let till = key("till-s1", Role::Store, Some("s1"), Some(50));
    let auditor = key("audit-1", Role::Auditor, None, Some(5));
    b.keys.create(till.clone(), [1; 32]).await.expect("create");
    b.keys
        .create(auditor.clone(), [2; 32])
        .await
        .expect("create");

    let at = ts("2026-03-15T12:00:00.000002Z");
    assert_eq!(b.keys.revoke("till-s1", at).await, Ok(true));
    assert_eq!(
        b.keys.find([1; 32]).await,
        Ok(None),
        "a revoked key is not found"
    );
    assert_eq!(b.keys.find([2; 32]).await, Ok(Some(auditor.clone())));
    assert_eq!(
        b.keys.revoke("till-s1", at).await,
        Ok(false),
        "already revoked"
    );
    assert_eq!(b.keys.revoke("nobody", at).await, Ok(false));

    // Listing a revoked key is optional; if listed, it shows when it was revoked.
    let listed = b.keys.list().await.expect("list");
    assert!(
        listed.contains(&auditor),
        "live keys are listed: {listed:?}"
    );
    for k in listed.iter().filter(|k| k.key_id == "till-s1") {
        assert_eq!(k.revoked_at, Some(at));
    }
    assert!(listed.len() <= 2, "no key listed twice: {listed:?}");
}

fn usage(key_id: &str, requests: u64, rejections: u64, last: Option<&str>) -> KeyUsage {
    KeyUsage {
        key_id: key_id.to_owned(),
        requests,
        rejections,
        last_used_at: last.map(ts),
    }
}

fn usage_by_id(mut usage: Vec<KeyUsage>) -> Vec<KeyUsage> {
    usage.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    usage
}

pub async fn usage_adds_up_and_never_goes_back_in_time(b: &Backend) {
    let till = key("till-s1", Role::Store, Some("s1"), Some(50));
    let admin = key("admin-1", Role::Admin, None, None);
    b.keys.create(till, [1; 32]).await.expect("create");
    b.keys.create(admin, [2; 32]).await.expect("create");
    assert_eq!(
        usage_by_id(b.keys.usage().await.expect("usage")),
        vec![usage("admin-1", 0, 0, None), usage("till-s1", 0, 0, None)],
        "keys never used have zero counts"
    );

    let t1 = "2026-03-15T12:00:00.000001Z";
    let t2 = "2026-03-15T12:00:05.123456Z";
    b.keys
        .record_usage(&[
            usage("till-s1", 3, 1, Some(t1)),
            usage("admin-1", 2, 0, Some(t2)),
        ])
        .await
        .expect("record");
    assert_eq!(
        usage_by_id(b.keys.usage().await.expect("usage")),
        vec![
            usage("admin-1", 2, 0, Some(t2)),
            usage("till-s1", 3, 1, Some(t1))
        ]
    );

    // Deltas add up; an earlier time (another process's older flush) does not move last_used_at
    // back; one call may name a key twice; unknown keys are ignored; an empty call is fine.
    let t0 = "2026-03-15T11:59:59.000000Z";
    let t3 = "2026-03-15T12:01:00.000002Z";
    b.keys
        .record_usage(&[
            usage("till-s1", 2, 2, Some(t0)),
            usage("nobody", 9, 9, Some(t3)),
            usage("admin-1", 1, 1, Some(t3)),
            usage("admin-1", 4, 0, Some(t1)),
        ])
        .await
        .expect("record");
    b.keys.record_usage(&[]).await.expect("record nothing");
    assert_eq!(
        usage_by_id(b.keys.usage().await.expect("usage")),
        vec![
            usage("admin-1", 7, 1, Some(t3)),
            usage("till-s1", 5, 3, Some(t1))
        ]
    );

    // A revoked key keeps its usage and is still counted (requests in flight when it was revoked).
    assert_eq!(b.keys.revoke("till-s1", ts(t3)).await, Ok(true));
    b.keys
        .record_usage(&[usage("till-s1", 1, 1, Some(t3))])
        .await
        .expect("record");
    let after = usage_by_id(b.keys.usage().await.expect("usage"));
    assert_eq!(after[1], usage("till-s1", 6, 4, Some(t3)));
    assert_eq!(
        b.keys.find([2; 32]).await.expect("find").map(|k| k.key_id),
        Some("admin-1".to_owned()),
        "recording usage leaves the key as it was"
    );
}
