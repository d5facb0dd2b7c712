//! Owned children: metadata-only caches of what phaseloop created, and applies that are skipped
//! when the child already is what phaseloop would write.
//!
//! Every child phaseloop applies carries [`FINGERPRINT`], a hash of the object as phaseloop built
//! it. The metadata caches hold that annotation (and the generation) of every child, so a
//! reconcile that would write the same object again writes nothing: a resync of a thousand Live
//! Releases costs no request, and a restart's re-list neither. The caches are fed by
//! metadata-only watches (no spec, no status, of the managed fields only other managers' field
//! names): a few hundred bytes a child.
//!
//! Drift: what someone else changes in a child is undone at the owner's next reconcile, which
//! the child's watch event triggers. Two signals, both in the metadata the caches hold:
//! - the version phaseloop's last apply produced (the generation, or for kinds without one the
//!   resourceVersion), remembered per child: a different cached generation means a spec change;
//! - the managed fields: another field manager owning fields outside `metadata` and `status`
//!   (a `kubectl edit`, `kubectl set image`, `kubectl scale`). This one needs no memory, so a
//!   change made while phaseloop was down is undone at the first reconcile after its start; the
//!   caches keep only such entries, and of each only its top-level field names ([`super::fields::lean_fields`]).
//!
//! Infrastructure components, of any kind, have no cache: they are read back (a GET, not a write)
//! and compared the same way.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt::Debug,
    sync::Mutex,
};

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams},
    runtime::{
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::fields::{FIELD_MANAGER, FINGERPRINT, Meta, changed_by_others, stamp};

/// The metadata caches and the generations phaseloop's applies produced.
#[derive(Default)]
pub struct Children {
    /// `Store<Meta<K>>` by `TypeId` of `K`: one for each kind a watch fills (see `caches`).
    stores: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    /// kind/namespace/name → version returned by phaseloop's last apply, of cached children and
    /// of infrastructure components alike (the key names the object, whichever path applied it).
    applied: Mutex<HashMap<String, Version>>,
}

impl Children {
    /// A cache for `K` children; the writer goes to the one watch that fills it.
    pub fn cache<K>(&mut self) -> Writer<Meta<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store::<Meta<K>>();
        self.stores.insert(TypeId::of::<K>(), Box::new(store));
        writer
    }

    /// Waits (up to 30s) until the `K` cache has completed its first list, when there is one.
    /// Reconciles start once the owner's cache is synced, which can be before the children's: an
    /// apply decided on a partial cache would write what is already there.
    pub async fn synced<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static>(&self) {
        if let Some(store) = self.stores.get(&TypeId::of::<K>()).and_then(|s| s.downcast_ref::<Store<Meta<K>>>()) {
            super::wait_synced(store).await;
        }
    }

    fn store<K: Resource<DynamicType = ()> + Clone + 'static>(&self) -> Option<&Store<Meta<K>>> {
        let store = self.stores.get(&TypeId::of::<K>())?.downcast_ref::<Store<Meta<K>>>()?;
        // Before the first list completes the cache is partial: it knows nothing.
        super::is_synced(store).then_some(store)
    }

    /// Whether the cached `K` named like `desired` still is what phaseloop applied as `desired`
    /// (see [`still_applied`]). `false` when unsure (no cache, not synced, absent).
    pub fn unchanged<K>(&self, desired: &K) -> bool
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let Some(store) = self.store::<K>() else { return false };
        let mut key = ObjectRef::<Meta<K>>::new(&desired.name_any());
        if let Some(ns) = desired.namespace() {
            key = key.within(&ns);
        }
        let Some(cached) = store.get(&key) else { return false };
        still_applied(desired.meta(), &cached.metadata, self.remembered(&id(desired)).as_ref())
    }

    /// [`Self::unchanged`] for an object of a kind without a cache (an infrastructure component),
    /// read back as `current`; `desired` is stamped.
    pub fn unchanged_dynamic(&self, desired: &DynamicObject, kind: &str, current: &DynamicObject) -> bool {
        still_applied(&desired.metadata, &current.metadata, self.remembered(&id_of(kind, desired)).as_ref())
    }

    /// [`Self::record`] for an object of a kind without a cache.
    pub fn record_dynamic(&self, applied: &DynamicObject, kind: &str) {
        self.remember(id_of(kind, applied), &applied.metadata);
    }

    /// Forgets what was applied in namespaces other than `live` (and cluster-scoped objects other than
    /// those namespaces themselves): their objects went with them.
    pub fn retain_namespaces(&self, live: &std::collections::HashSet<String>) {
        if let Ok(mut a) = self.applied.lock() {
            a.retain(|id, _| {
                let mut parts = id.splitn(3, '/');
                let (_kind, ns, name) =
                    (parts.next(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                live.contains(if ns.is_empty() { name } else { ns })
            });
        }
    }

    pub fn applied_len(&self) -> usize {
        self.applied.lock().map(|a| a.len()).unwrap_or_default()
    }

    fn remembered(&self, id: &str) -> Option<Version> {
        self.applied.lock().ok()?.get(id).cloned()
    }

    fn remember(&self, id: String, applied: &ObjectMeta) {
        if let (Some(v), Ok(mut a)) = (version(applied), self.applied.lock()) {
            a.insert(id, v);
        }
    }

    /// Whether the `K` named `name` in `namespace` is known not to exist (cache synced, no entry).
    /// The caches hold phaseloop's children only (a label selector): "absent" means "none of ours".
    pub fn absent<K>(&self, namespace: Option<&str>, name: &str) -> bool
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let Some(store) = self.store::<K>() else { return false };
        let mut key = ObjectRef::<Meta<K>>::new(name);
        if let Some(ns) = namespace {
            key = key.within(ns);
        }
        store.get(&key).is_none()
    }

    /// The cached metadata of the `K` named `name` in `namespace`, when the cache is synced.
    /// `Ok(None)`: known absent; `Err(())`: unknown.
    #[allow(clippy::result_unit_err)]
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Result<Option<std::sync::Arc<Meta<K>>>, ()>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let store = self.store::<K>().ok_or(())?;
        let mut key = ObjectRef::<Meta<K>>::new(name);
        if let Some(ns) = namespace {
            key = key.within(ns);
        }
        Ok(store.get(&key))
    }

    /// Remembers the version an apply of phaseloop produced.
    pub fn record<K: Resource<DynamicType = ()>>(&self, applied: &K) {
        self.remember(id(applied), applied.meta());
    }

    /// Forgets a deleted child.
    pub fn forget<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>, name: &str) {
        if let Ok(mut a) = self.applied.lock() {
            a.remove(&id_parts(&K::kind(&()), namespace, name));
        }
    }
}

impl Children {
    /// Server-side apply of `obj`, stamped with its fingerprint, unless the cache shows the child
    /// already is that object. Returns what the API server returned; `None` when skipped.
    pub async fn apply<K>(&self, api: &Api<K>, mut obj: K) -> Result<Option<K>, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        stamp(&mut obj);
        self.synced::<K>().await;
        if self.unchanged(&obj) {
            return Ok(None);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api.patch(&obj.name_any(), &params, &Patch::Apply(&obj)).await?;
        self.record(&applied);
        Ok(Some(applied))
    }

    /// Deletes the `K` named `name` unless the cache knows there is none of phaseloop's.
    pub async fn delete<K>(&self, api: &Api<K>, namespace: Option<&str>, name: &str) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.synced::<K>().await;
        if self.absent::<K>(namespace, name) {
            return Ok(());
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.forget::<K>(namespace, name);
        Ok(())
    }
}

/// The metadata event of a full-object watch event, for a children cache fed by a full watch.
pub fn metadata_event<K: Resource + Clone>(event: &watcher::Event<K>) -> watcher::Event<Meta<K>> {
    use watcher::Event::*;
    let meta = |o: &K| Meta { types: None, metadata: o.meta().clone(), _phantom: Default::default() };
    match event {
        Apply(o) => Apply(meta(o)),
        Delete(o) => Delete(meta(o)),
        Init => Init,
        InitApply(o) => InitApply(meta(o)),
        InitDone => InitDone,
    }
}

fn id<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    id_of(&K::kind(&()), obj)
}

/// kind/namespace/name, the key of what phaseloop's applies produced.
fn id_of(kind: &str, obj: &impl Resource) -> String {
    id_parts(kind, obj.meta().namespace.as_deref(), &obj.name_any())
}

fn id_parts(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind}/{}/{name}", namespace.unwrap_or_default())
}

/// What phaseloop's apply of an object produced: its generation, or for kinds without one
/// (Services, ConfigMaps, ResourceQuotas) its resourceVersion, which status writes move too.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    Generation(i64),
    Resource(String),
}

fn version(meta: &ObjectMeta) -> Option<Version> {
    meta.generation.map(Version::Generation).or_else(|| meta.resource_version.clone().map(Version::Resource))
}

/// Whether `current` still is what phaseloop applied as `desired` (both stamped), given the
/// version phaseloop's last apply produced, when this process remembers it.
fn still_applied(desired: &ObjectMeta, current: &ObjectMeta, remembered: Option<&Version>) -> bool {
    let fingerprint = |m: &ObjectMeta| m.annotations.as_ref().and_then(|a| a.get(FINGERPRINT).cloned());
    let Some(ours) = fingerprint(desired) else { return false };
    if fingerprint(current).as_ref() != Some(&ours) {
        return false;
    }
    match (remembered, version(current)) {
        (Some(applied), Some(now)) if *applied == now => true,
        // The spec changed since our apply.
        (Some(Version::Generation(_)), _) => false,
        // Nothing remembered (a restart), or a resourceVersion that moved (a status write, or an
        // edit): another manager's fields tell.
        _ => !changed_by_others(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fields::fingerprint;
    use k8s_openapi::{
        api::apps::v1::Deployment,
        apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry},
    };
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-v1", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
        }))
        .unwrap()
    }

    fn cached(d: &Deployment, generation: i64) -> Meta<Deployment> {
        let mut meta = d.metadata.clone();
        meta.generation = Some(generation);
        Meta { types: None, metadata: meta, _phantom: Default::default() }
    }

    #[test]
    fn fingerprints_are_stable_and_change_with_the_object() {
        let (mut a, mut b) = (deployment(2), deployment(2));
        assert_eq!(stamp(&mut a), stamp(&mut b));
        // Stamping twice gives the same value: the annotation is not part of its own hash.
        assert_eq!(stamp(&mut a.clone()), stamp(&mut a));
        assert_ne!(stamp(&mut deployment(3)), stamp(&mut a));
        // Pinned: the value is persisted in clusters, so it must not change between builds.
        // FNV-1a 64 of `{"a":1}`, computed independently (Python).
        assert_eq!(fingerprint(&serde_json::json!({"a": 1})), "9c3e82dd6fcae8b1");
    }

    #[test]
    fn an_apply_is_skipped_only_when_the_synced_cache_has_the_same_unchanged_object() {
        let mut children = Children::default();
        let mut writer = children.cache::<Deployment>();
        let mut desired = deployment(2);
        stamp(&mut desired);
        assert!(!children.unchanged(&desired), "not synced: unsure");
        assert!(!children.absent::<Deployment>(Some("shop"), "web-v1"), "not synced: unsure");
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        assert!(!children.unchanged(&desired), "absent");
        assert!(children.absent::<Deployment>(Some("shop"), "web-v1"));

        writer.apply_watcher_event(&Event::Apply(cached(&desired, 4)));
        assert!(children.unchanged(&desired));
        let mut scaled = deployment(3);
        stamp(&mut scaled);
        assert!(!children.unchanged(&scaled), "a different object");

        // Our apply produced generation 4; someone else's spec change makes it 5.
        let mut ours = desired.clone();
        ours.metadata.generation = Some(4);
        children.record(&ours);
        assert!(children.unchanged(&desired));
        writer.apply_watcher_event(&Event::Apply(cached(&desired, 5)));
        assert!(!children.unchanged(&desired), "changed by someone else since our apply");
    }

    #[test]
    fn a_component_is_reapplied_when_changed_by_someone_else_since_our_apply() {
        let children = Children::default();
        let object = |data: &str, rv: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "db-config", "namespace": "pr-1", "resourceVersion": rv}, "data": {"k": data}}))
            .unwrap()
        };
        let mut desired = object("v", "");
        stamp(&mut desired);
        let mut ours = desired.clone();
        ours.metadata.resource_version = Some("7".into());
        assert!(!children.unchanged_dynamic(&desired, "ConfigMap", &object("v", "7")), "not ours: no fingerprint");
        // After a restart nothing is remembered: the fingerprint and the managed fields decide.
        assert!(children.unchanged_dynamic(&desired, "ConfigMap", &ours));
        children.record_dynamic(&ours, "ConfigMap");
        assert!(children.unchanged_dynamic(&desired, "ConfigMap", &ours));
        // A ConfigMap has no generation: an edit shows as another resourceVersion, and as the
        // editor's fields.
        let mut edited = ours.clone();
        edited.data["data"]["k"] = "edited".into();
        edited.metadata.resource_version = Some("8".into());
        edited.metadata.managed_fields = Some(vec![entry("kubectl-edit", None, json!({"f:data": {"f:k": {}}}))]);
        assert!(!children.unchanged_dynamic(&desired, "ConfigMap", &edited));
        // Another resourceVersion alone (a label added by someone) is not drift.
        let mut labelled = ours.clone();
        labelled.metadata.resource_version = Some("9".into());
        labelled.metadata.managed_fields =
            Some(vec![entry("kubectl-label", None, json!({"f:metadata": {"f:labels": {"f:team": {}}}}))]);
        assert!(children.unchanged_dynamic(&desired, "ConfigMap", &labelled));
        let mut changed = object("w", "");
        stamp(&mut changed);
        assert!(!children.unchanged_dynamic(&changed, "ConfigMap", &ours), "a different desired object");
    }

    fn entry(manager: &str, subresource: Option<&str>, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            subresource: subresource.map(str::to_string),
            fields_v1: Some(FieldsV1(fields)),
            time: None,
            ..Default::default()
        }
    }

    #[test]
    fn after_a_restart_a_child_changed_by_another_manager_is_applied_again() {
        let mut children = Children::default();
        let mut writer = children.cache::<Deployment>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let mut desired = deployment(2);
        stamp(&mut desired);
        // What the watch delivers, lean as the caches keep it.
        let deliver = |writer: &mut Writer<Meta<Deployment>>, entries: Vec<ManagedFieldsEntry>| {
            let mut meta = cached(&desired, 7);
            meta.metadata.managed_fields = Some(entries);
            crate::controller::fields::lean(&mut meta);
            writer.apply_watcher_event(&Event::Apply(meta));
        };
        let ours = entry(FIELD_MANAGER, None, json!({"f:metadata": {}, "f:spec": {"f:replicas": {}}}));
        let controller_status =
            entry("kube-controller-manager", Some("status"), json!({"f:status": {"f:replicas": {}}}));
        let revision = entry("kube-controller-manager", None, json!({"f:metadata": {"f:annotations": {}}}));
        deliver(&mut writer, vec![ours.clone(), controller_status.clone(), revision.clone()]);
        assert!(children.unchanged(&desired), "only phaseloop and status writers: nothing to undo");

        let set_image = entry("kubectl-set", None, json!({"f:spec": {"f:template": {"f:spec": {}}}}));
        deliver(&mut writer, vec![ours.clone(), controller_status, set_image]);
        assert!(!children.unchanged(&desired), "kubectl set image while phaseloop was down");
        let scaled = entry("kubectl", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
        deliver(&mut writer, vec![ours, scaled]);
        assert!(!children.unchanged(&desired), "kubectl scale");
    }

    #[test]
    fn caches_keep_only_the_names_of_what_other_managers_own() {
        let mut d = deployment(2);
        stamp(&mut d);
        let big =
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}}});
        d.metadata.managed_fields = Some(vec![
            entry(FIELD_MANAGER, None, json!({"f:spec": {"f:replicas": {}}})),
            entry("kube-controller-manager", Some("status"), json!({"f:status": {}})),
            entry("kubectl-edit", None, big),
        ]);
        crate::controller::fields::lean(&mut d);
        assert_eq!(
            d.metadata.managed_fields,
            Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl-edit".into()),
                fields_v1: Some(FieldsV1(json!({"f:spec": {}}))),
                ..Default::default()
            }])
        );
        let mut plain = deployment(2);
        plain.metadata.managed_fields = Some(vec![entry("kubectl-edit", None, json!({"f:spec": {}}))]);
        crate::controller::fields::lean(&mut plain);
        assert_eq!(plain.metadata.managed_fields, None, "not a child of phaseloop: nothing kept");
    }
}
