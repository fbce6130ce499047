//! [`KeyStore`](crate::KeyStore) checks: keys are found by the hash of their secret until revoked.

use super::support::ts;
use crate::Backend;
use crate::model::{ApiKey, Role};

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
