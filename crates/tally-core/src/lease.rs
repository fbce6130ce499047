//! Leases: roles that exactly one process may hold at a time across every process sharing a backend
//! (the projector), taken by whoever asks first and lost when the holder dies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::Result;

/// Takes named leases. A PostgreSQL backend holds them as session advisory locks, which the server
/// releases when the holder's connection ends (process killed, machine gone); a single-process backend
/// holds them in memory.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Takes `name` if nobody holds it: `None` when someone does. The lease is kept until the returned
    /// guard is dropped or [`Lease::lost`] resolves.
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>>;
}

/// A held lease; dropping it gives it up.
#[async_trait]
pub trait Lease: Send + 'static {
    /// Resolves once the lease can no longer be vouched for (its connection broke): the holder must
    /// stop acting on it at once. Pending for as long as it is held.
    async fn lost(&mut self);
}

/// Leases among the tasks of one process (the embedded backend serves one process).
#[derive(Debug, Default, Clone)]
pub struct LocalLeases {
    held: Arc<Mutex<HashSet<String>>>,
}

struct LocalLease {
    name: String,
    held: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl Leases for LocalLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(name.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(LocalLease {
            name: name.to_owned(),
            held: self.held.clone(),
        })))
    }
}

#[async_trait]
impl Lease for LocalLease {
    async fn lost(&mut self) {
        std::future::pending::<()>().await
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_lease_is_held_once_and_freed_on_drop() {
        let leases = LocalLeases::default();
        let first = leases.try_acquire("projector").await.expect("acquire");
        assert!(first.is_some());
        assert!(
            leases
                .try_acquire("projector")
                .await
                .expect("acquire")
                .is_none()
        );
        assert!(
            leases
                .try_acquire("other")
                .await
                .expect("acquire")
                .is_some()
        );
        drop(first);
        assert!(
            leases
                .try_acquire("projector")
                .await
                .expect("acquire")
                .is_some()
        );
    }
}
