//! What phaseloop's objects carry and what its caches keep of them: the one field manager of
//! every write, the fingerprint of what was applied, and the lean metadata (managed fields cut to
//! what the drift check needs). A leaf module: the caches (`children`, `caches`), status writes
//! (`status`), the watches (`watch`), the retry policy (`retry`) and the latency bookkeeping
//! (`latency`) all build on it, and it on none of them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::{Resource, ResourceExt, api::ObjectMeta, core::PartialObjectMeta};
use serde::Serialize;

/// The single field manager of every phaseloop write.
pub const FIELD_MANAGER: &str = "phaseloop";

/// Annotation with the hash of the object as phaseloop last applied it.
pub const FINGERPRINT: &str = "phaseloop.dev/fingerprint";

/// Metadata of `K` children, cached.
pub type Meta<K> = PartialObjectMeta<K>;

/// FNV-1a (64 bit) of the object's JSON, stable across builds and platforms: it is persisted in
/// annotations, so a hash that changed with the compiler would re-apply everything after an
/// upgrade. Not a security boundary; collisions only cost a skipped re-apply of an equal-hash object.
pub fn fingerprint<K: Serialize>(obj: &K) -> String {
    format!("{:016x}", fnv1a(&serde_json::to_vec(obj).unwrap_or_default()))
}

/// Sets [`FINGERPRINT`] on `obj`, computed without it. Returns the fingerprint.
pub fn stamp<K: Resource + Serialize>(obj: &mut K) -> String {
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove(FINGERPRINT);
    }
    let fp = fingerprint(obj);
    obj.annotations_mut().insert(FINGERPRINT.into(), fp.clone());
    fp
}

/// Whether a field manager other than phaseloop owns fields of `meta`'s object outside
/// `metadata` and `status` (status writers, like the Deployment controller, do not count).
pub fn changed_by_others(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(foreign)
}

fn foreign(e: &ManagedFieldsEntry) -> bool {
    e.manager.as_deref() != Some(FIELD_MANAGER)
        && e.subresource.as_deref() != Some("status")
        && e.fields_v1
            .as_ref()
            .and_then(|f| f.0.as_object())
            .is_some_and(|f| f.keys().any(|k| k != "f:metadata" && k != "f:status"))
}

/// The managed fields a cache keeps of a child: the entries [`changed_by_others`] counts, each
/// reduced to its manager, subresource and top-level field names (a few bytes instead of the
/// kilobytes of the full field sets).
pub fn lean_fields(meta: &mut ObjectMeta) {
    let kept: Vec<_> = (meta.managed_fields.take().into_iter().flatten())
        .filter(foreign)
        .map(|e| ManagedFieldsEntry {
            manager: e.manager,
            subresource: e.subresource,
            fields_v1: e.fields_v1.map(|f| {
                let tops = f.0.as_object().map(|o| o.keys().map(|k| (k.clone(), serde_json::json!({}))).collect());
                FieldsV1(serde_json::Value::Object(tops.unwrap_or_default()))
            }),
            ..Default::default()
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
}

/// FNV-1a (64 bit): small and stable across builds and platforms, for values that are persisted
/// or must not change between runs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Drops what phaseloop never reads and a cache would otherwise keep: managed fields (often the
/// largest part of an object's metadata) and the last-applied annotation of `kubectl apply`. Of
/// phaseloop's children (stamped with a fingerprint) it keeps the bare names of what other field
/// managers changed: the drift signal of [`changed_by_others`].
pub fn lean<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    if meta.annotations.as_ref().is_some_and(|a| a.contains_key(FINGERPRINT)) {
        lean_fields(meta);
    } else {
        meta.managed_fields = None;
    }
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The key of an object in the per-object bookkeeping (latency, retries, reconciles):
/// `namespace/name` (`/name` for a cluster-scoped one).
pub fn key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// [`key`] of `obj`.
pub fn key_of(obj: &impl kube::Resource) -> String {
    let meta = obj.meta();
    key(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default())
}
