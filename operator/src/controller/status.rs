//! Writing status: server-side apply with phaseloop's one field manager, and only on change.

use std::fmt::Debug;

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
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, desired: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
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
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch)).await?;
    Ok(true)
}
