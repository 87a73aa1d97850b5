//! Stores a process makes or registers, by `scheme://authority`: the named in-memory stores and
//! any store a user registers (another cloud, a wrapper that counts or delays requests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::memory::InMemory;
use object_store::ObjectStore;

type Map = HashMap<String, Arc<dyn ObjectStore>>;

fn registered() -> &'static Mutex<Map> {
    static R: OnceLock<Mutex<Map>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn memories() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static M: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

/// Serves every location under `root` (`scheme://authority`, such as `mem2://bench`) from
/// `store`, in this process, replacing an earlier registration of the same root. The prefix after
/// the root becomes the path inside `store`.
pub fn register_store(root: &str, store: Arc<dyn ObjectStore>) {
    registered()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(root.trim_end_matches('/').to_string(), store);
}

pub(crate) fn lookup(root: &str) -> Option<Arc<dyn ObjectStore>> {
    registered()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(root)
        .cloned()
}

/// The process-wide in-memory store `name` (`memory://name/...`), made on first use.
pub(crate) fn memory(name: &str) -> Arc<InMemory> {
    memories()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}
