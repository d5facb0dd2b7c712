//! Writing status: server-side apply with phaseloop's one field manager, and only on change.

use super::fields::FIELD_MANAGER;
use std::{
    any::Any,
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

/// Applies `desired` as the status of `obj` unless it equals `current`. Returns whether it wrote.
///
/// Skipping equal statuses is what makes a no-op reconcile write nothing: an unconditional apply
/// would still cost a request and, with timestamps, a new resourceVersion and a watch event.
///
/// The write is conditional: it carries `obj`'s resourceVersion, which server-side apply takes as
/// a precondition, so a status decided from an object that has changed since (a new leader's
/// write, a person's annotation) is refused (409, retried from the latest) rather than written
/// over it. A request held up in a network partition cannot overwrite what a successor wrote.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    written: &Written,
    obj: &K,
    current: Option<&S>,
    desired: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    if let Some(version) = obj.resource_version() {
        patch["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch)).await?;
    written.record(obj, after);
    Ok(true)
}

/// Status writes of this process that the watch cache may not have delivered yet.
///
/// A reconcile triggered right after a status write (by a child's watch event, say) would
/// otherwise see the object as it was before the write and act on that again: decide a scaling
/// step twice, publish a phase Event twice, count a deployment twice. Only resourceVersion
/// equality is used (resourceVersions are opaque): a cached object still at the version our write
/// replaced is stale, and our written object stands in for it. An entry lives until the watch
/// delivers a newer version (`acknowledged`), so in a quiet fleet it holds nothing.
#[derive(Default)]
pub struct Written {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    replaced: String,
    /// An `Arc<K>` of the kind in the key.
    object: Arc<dyn Any + Send + Sync>,
    at: Instant,
}

/// How long a write is remembered at most, should its watch event never come (a watch that
/// restarted and re-listed, say): a watch event arrives long before.
const REMEMBER: Duration = Duration::from_secs(120);

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Written {
    /// `obj`, or this process's later write of it when the cache has not caught up yet.
    pub fn freshest<K>(&self, obj: Arc<K>) -> Arc<K>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let Ok(mut entries) = self.entries.lock() else { return obj };
        let k = key(&*obj);
        match entries.get(&k) {
            Some(e) if obj.resource_version().as_deref() == Some(e.replaced.as_str()) => {
                e.object.clone().downcast::<K>().unwrap_or(obj)
            }
            Some(_) => {
                entries.remove(&k);
                obj
            }
            None => obj,
        }
    }

    /// The watch delivered `obj`: a write it supersedes is forgotten.
    pub fn acknowledged<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.is_empty() {
            return;
        }
        let k = key(obj);
        if entries.get(&k).is_some_and(|e| obj.resource_version().as_deref() != Some(e.replaced.as_str())) {
            entries.remove(&k);
        }
    }

    fn record<K>(&self, before: &K, mut after: K)
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        // Lean, as the caches hold objects: what is remembered is what matters.
        super::fields::lean(&mut after);
        let Some(replaced) = before.resource_version() else { return };
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.at.elapsed() < REMEMBER);
            entries.insert(key(before), Entry { replaced, object: Arc::new(after), at: Instant::now() });
        }
    }

    /// Forgets writes older than [`REMEMBER`] whose watch event never came.
    pub fn expire(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.at.elapsed() < REMEMBER);
        }
    }

    pub fn entries(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Release, ReleasePhase, ReleaseStatus};

    fn release(rv: &str, phase: ReleasePhase) -> Release {
        let mut r = crate::fixtures::release("web-1", serde_json::json!({"app": "web"}));
        r.metadata.namespace = Some("shop".into());
        r.metadata.resource_version = Some(rv.into());
        r.status = Some(ReleaseStatus { phase: Some(phase), ..Default::default() });
        r
    }

    fn phase(r: &Release) -> Option<ReleasePhase> {
        r.status.as_ref().and_then(|s| s.phase)
    }

    #[test]
    fn a_cached_object_older_than_our_write_is_replaced_by_what_we_wrote() {
        let written = Written::default();
        let before = release("10", ReleasePhase::Progressing);
        written.record(&before, release("11", ReleasePhase::Live));
        let seen = written.freshest(Arc::new(before.clone()));
        assert_eq!((seen.resource_version().as_deref(), phase(&seen)), (Some("11"), Some(ReleasePhase::Live)));
        // Once the cache has caught up (or someone else wrote since), the cached object is used and
        // the entry forgotten.
        let later = release("12", ReleasePhase::Live);
        assert_eq!(written.freshest(Arc::new(later)).resource_version().as_deref(), Some("12"));
        assert_eq!(written.freshest(Arc::new(before)).resource_version().as_deref(), Some("10"));
    }

    #[test]
    fn the_watch_delivering_a_newer_version_forgets_the_write() {
        let written = Written::default();
        let before = release("10", ReleasePhase::Progressing);
        written.record(&before, release("11", ReleasePhase::Live));
        // The old version again (a re-list that raced the write) keeps it.
        written.acknowledged(&before);
        assert_eq!(written.entries(), 1);
        written.acknowledged(&release("11", ReleasePhase::Live));
        assert_eq!(written.entries(), 0);
        assert_eq!(written.freshest(Arc::new(before)).resource_version().as_deref(), Some("10"));
    }
}
