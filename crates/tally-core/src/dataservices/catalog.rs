//! The queries being served, and their reload: a new set is read from its declarations and checked
//! against the backend as a whole; only a set that passes replaces the one serving, at once (a
//! request holds the set it started with). A refused set changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{DataServices, QuerySet, QuerySpec};

/// Where the declarations come from (the configuration file and the queries directory).
#[async_trait]
pub trait Declarations: Send + Sync + 'static {
    /// Every declaration, or every problem reading them (a file that does not parse, an unknown
    /// key), each naming its file and line.
    async fn read(&self) -> Result<Vec<QuerySpec>, Vec<String>>;
}

/// No declarations: a server configured without queries.
pub struct NoDeclarations;

#[async_trait]
impl Declarations for NoDeclarations {
    async fn read(&self) -> Result<Vec<QuerySpec>, Vec<String>> {
        Ok(Vec::new())
    }
}

/// The serving set, its source and the backend that checks and runs it.
pub struct Catalog {
    current: RwLock<Arc<QuerySet>>,
    /// Grows with every set installed: what the OpenAPI document is cached by.
    generation: AtomicU64,
    source: Arc<dyn Declarations>,
    backend: Arc<dyn DataServices>,
    /// One reload at a time: two at once must not install their sets in the wrong order.
    reloading: tokio::sync::Mutex<()>,
}

/// Reads and checks every declaration; the set, or every problem found.
pub async fn load(
    source: &dyn Declarations,
    backend: &dyn DataServices,
) -> Result<QuerySet, Vec<String>> {
    let specs = source.read().await?;
    QuerySet::check(specs, backend)
        .await
        .map_err(|refusals| refusals.iter().map(ToString::to_string).collect())
}

impl Catalog {
    /// Loads the first set; the problems when it does not pass (a server must not start with a
    /// configuration it refuses).
    pub async fn open(
        source: Arc<dyn Declarations>,
        backend: Arc<dyn DataServices>,
    ) -> Result<Self, Vec<String>> {
        let set = load(source.as_ref(), backend.as_ref()).await?;
        Ok(Self::with(set, source, backend))
    }

    /// A catalog serving `set`.
    pub fn with(
        set: QuerySet,
        source: Arc<dyn Declarations>,
        backend: Arc<dyn DataServices>,
    ) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
            generation: AtomicU64::new(1),
            source,
            backend,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// A catalog of no queries, never reloading any.
    pub fn empty(backend: Arc<dyn DataServices>) -> Self {
        Self::with(QuerySet::default(), Arc::new(NoDeclarations), backend)
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<QuerySet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn backend(&self) -> &dyn DataServices {
        self.backend.as_ref()
    }

    /// Reads and checks the declarations again; installs the new set when it passes and returns
    /// how many queries it holds, else returns the problems and keeps the old set serving.
    pub async fn reload(&self) -> Result<usize, Vec<String>> {
        let _one = self.reloading.lock().await;
        let set = load(self.source.as_ref(), self.backend.as_ref()).await?;
        let n = set.len();
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(n)
    }
}
