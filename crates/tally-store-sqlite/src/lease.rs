//! Leases over a data dir: a lease is an exclusive lock (`flock`) on a file of the data dir named
//! after it, so two processes opened on the same files (a server and `tally rebuild`, or two servers
//! by mistake) never both hold the projector's lease. The operating system releases the lock when
//! its holder exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use async_trait::async_trait;
use tally_core::ports::{Error, Result};
use tally_core::{Lease, Leases};

#[derive(Debug, Clone)]
pub struct FileLeases {
    dir: PathBuf,
}

impl FileLeases {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

/// Holds its file's lock until dropped.
struct FileLease {
    _file: File,
}

#[async_trait]
impl Leases for FileLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Corrupt(format!("invalid lease name {name:?}")));
        }
        let path = self.dir.join(format!("{name}.lease"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Unavailable(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLease { _file: file }))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::Unavailable(format!(
                "locking {}: {e}",
                path.display()
            ))),
        }
    }
}

#[async_trait]
impl Lease for FileLease {
    async fn lost(&mut self) {
        // A lock on a local file is not lost while its holder lives.
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_across_opens_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (
            FileLeases::new(dir.path().into()),
            FileLeases::new(dir.path().into()),
        );
        let held = a.try_acquire("projector").await.expect("acquire");
        assert!(held.is_some());
        assert!(b.try_acquire("projector").await.expect("second").is_none());
        assert!(
            a.try_acquire("projector")
                .await
                .expect("same leases")
                .is_none()
        );
        assert!(b.try_acquire("other").await.expect("other").is_some());
        drop(held);
        assert!(
            b.try_acquire("projector")
                .await
                .expect("after drop")
                .is_some()
        );
        assert!(a.try_acquire("../x").await.is_err());
    }
}
