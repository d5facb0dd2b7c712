//! Writing status: server-side apply with phaseloop's one field manager, and only on change.

use std::{
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

/// The single field manager of every phaseloop write.
pub const FIELD_MANAGER: &str = "phaseloop";

/// Applies `desired` as the status of `obj` unless it equals `current`. Returns whether it wrote.
///
/// Skipping equal statuses is what makes a no-op reconcile write nothing: an unconditional apply
/// would still cost a request and, with timestamps, a new resourceVersion and a watch event.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    written: &Written,
    obj: &K,
    current: Option<&S>,
    desired: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch)).await?;
    written.record(obj, &after);
    Ok(true)
}

/// Status writes of this process that the watch cache may not have delivered yet.
///
/// A reconcile triggered right after a status write (by a child's watch event, say) would
/// otherwise see the object as it was before the write and act on that again: decide a scaling
/// step twice, publish a phase Event twice, count a deployment twice. Only resourceVersion
/// equality is used (resourceVersions are opaque): a cached object still at the version our write
/// replaced is stale, and our written object stands in for it.
#[derive(Default)]
pub struct Written {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    replaced: String,
    object: serde_json::Value,
    at: Instant,
}

/// How long a write is remembered at most (a watch event arrives long before).
const REMEMBER: Duration = Duration::from_secs(120);

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Written {
    /// `obj`, or this process's later write of it when the cache has not caught up yet.
    pub fn freshest<K>(&self, obj: Arc<K>) -> Arc<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let Ok(mut entries) = self.entries.lock() else { return obj };
        let k = key(&*obj);
        match entries.get(&k) {
            Some(e) if obj.resource_version().as_deref() == Some(e.replaced.as_str()) => {
                serde_json::from_value(e.object.clone()).map(Arc::new).unwrap_or(obj)
            }
            Some(_) => {
                entries.remove(&k);
                obj
            }
            None => obj,
        }
    }

    fn record<K>(&self, before: &K, after: &K)
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        // Without managed fields, as the caches hold objects: what is remembered is what matters.
        let mut lean = serde_json::to_value(after).ok();
        if let Some(meta) = lean.as_mut().and_then(|o| o.get_mut("metadata")).and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
        let (Some(replaced), Some(object)) = (before.resource_version(), lean) else { return };
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.at.elapsed() < REMEMBER);
            entries.insert(key(before), Entry { replaced, object, at: Instant::now() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Release, ReleasePhase, ReleaseSpec, ReleaseStatus};

    fn release(rv: &str, phase: ReleasePhase) -> Release {
        let spec: ReleaseSpec = serde_json::from_value(serde_json::json!({"app": "web", "version": "1",
            "template": {"spec": {"containers": [{"name": "app", "image": "web"}]}}}))
        .unwrap();
        let mut r = Release::new("web-1", spec);
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
        written.record(&before, &release("11", ReleasePhase::Live));
        let seen = written.freshest(Arc::new(before.clone()));
        assert_eq!((seen.resource_version().as_deref(), phase(&seen)), (Some("11"), Some(ReleasePhase::Live)));
        // Once the cache has caught up (or someone else wrote since), the cached object is used and
        // the entry forgotten.
        let later = release("12", ReleasePhase::Live);
        assert_eq!(written.freshest(Arc::new(later)).resource_version().as_deref(), Some("12"));
        assert_eq!(written.freshest(Arc::new(before)).resource_version().as_deref(), Some("10"));
    }
}
