//! Pure handling of infrastructure components: turning the objects a user wrote into objects to
//! apply (or a refusal that says why), and judging readiness from what the cluster reports.

use kube::api::{DynamicObject, GroupVersionKind, TypeMeta};
use serde_json::Value;

use super::desired::COMPONENT_LABEL;
use crate::api::{AppliedObject, Component, Environment};

/// An object ready for server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub gvk: GroupVersionKind,
    pub object: DynamicObject,
}

impl Prepared {
    pub fn applied(&self) -> AppliedObject {
        AppliedObject {
            api_version: self.object.types.as_ref().map(|t| t.api_version.clone()).unwrap_or_default(),
            kind: self.gvk.kind.clone(),
            name: self.object.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// Checks every object of `component` and prepares it for `namespace`: namespace set, labels and
/// owner reference added. Any problem refuses the whole component (and only it).
pub fn prepare(env: &Environment, namespace: &str, component: &Component) -> Result<Vec<Prepared>, String> {
    component
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| prepare_one(env, namespace, &component.name, &o.0).map_err(|e| format!("objects[{i}]: {e}")))
        .collect()
}

fn prepare_one(env: &Environment, namespace: &str, component: &str, raw: &Value) -> Result<Prepared, String> {
    let mut object: DynamicObject =
        serde_json::from_value(raw.clone()).map_err(|e| format!("not a Kubernetes object: {e}"))?;
    let types: TypeMeta = object.types.clone().ok_or("apiVersion and kind are required")?;
    let well_formed =
        !types.api_version.is_empty() && types.api_version.matches('/').count() <= 1 && !types.kind.is_empty();
    if !well_formed {
        return Err(format!("bad apiVersion {:?} or kind {:?}", types.api_version, types.kind));
    }
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| format!("bad apiVersion {:?}: {e}", types.api_version))?;
    let name = object.metadata.name.clone().filter(|n| !n.is_empty()).ok_or("metadata.name is required")?;
    if let Some(ns) = object.metadata.namespace.as_deref()
        && ns != namespace
    {
        return Err(format!(
            "{} {name} names namespace {ns:?}; infrastructure may only target {namespace:?}",
            gvk.kind
        ));
    }
    if let Some(why) = forbidden(&gvk, &object.data) {
        return Err(format!("{} {name}: {why}", gvk.kind));
    }
    object.metadata.namespace = Some(namespace.to_string());
    let labels = object.metadata.labels.get_or_insert_with(Default::default);
    labels.extend(super::desired::labels(env));
    labels.insert(COMPONENT_LABEL.to_string(), component.to_string());
    object.metadata.owner_references = kube::Resource::controller_owner_ref(env, &()).map(|r| vec![r]);
    // Server-assigned fields cannot be applied.
    object.metadata.resource_version = None;
    object.metadata.uid = None;
    object.metadata.managed_fields = None;
    object.metadata.creation_timestamp = None;
    if let Some(map) = object.data.as_object_mut() {
        map.remove("status");
    }
    Ok(Prepared { gvk, object })
}

/// What no Environment may hold, whatever the allow-list says (the admission policy
/// `phaseloop.dev-infrastructure` refuses the same at the Environment's creation; checked here too
/// for what was stored before it): a Service with `externalIPs` intercepts those addresses for the
/// whole cluster, a claim naming a PersistentVolume takes someone else's data, and a Secret's data
/// would sit in a cluster-scoped object anyone who may read Environments reads.
fn forbidden(gvk: &GroupVersionKind, data: &Value) -> Option<&'static str> {
    if !gvk.group.is_empty() {
        return None;
    }
    let set = |v: &Value| !v.is_null();
    match gvk.kind.as_str() {
        "Service" if set(&data["spec"]["externalIPs"]) => Some("spec.externalIPs is not allowed in infrastructure"),
        "PersistentVolumeClaim" if set(&data["spec"]["volumeName"]) => {
            Some("spec.volumeName is not allowed in infrastructure: a claim binds by storage class and size")
        }
        "Secret" if set(&data["data"]) || set(&data["stringData"]) => {
            Some("a Secret in infrastructure carries no data: write its data into the namespace instead")
        }
        _ => None,
    }
}

/// The first object of `prepared` named like an object the Release controller generates for an
/// app of the namespace (its Service `<app>` or `<app>-preview`, a Deployment `<app>-<version>`):
/// one owner per name, so the component is refused rather than the app's object taken over (or
/// later adopted by a Release).
pub fn clash_with_apps(prepared: &[Prepared], releases: &[crate::api::Release]) -> Option<String> {
    use crate::controller::release::workload::deployment_name;
    for p in prepared.iter().filter(|p| p.gvk.group.is_empty() || p.gvk.group == "apps") {
        let name = p.object.metadata.name.as_deref().unwrap_or_default();
        let app = releases.iter().find(|r| match p.gvk.kind.as_str() {
            "Service" => name == r.spec.app || name == format!("{}-preview", r.spec.app),
            "Deployment" => name == deployment_name(&r.spec.app, &r.spec.version),
            _ => false,
        });
        if let Some(r) = app {
            return Some(format!(
                "{} {name} is a name the Release controller uses for app {} (Release {}): one owner per name; \
                 rename the component's object",
                p.gvk.kind,
                r.spec.app,
                kube::ResourceExt::name_any(r)
            ));
        }
    }
    None
}

/// Who owns `live` when it is not `env`: an object of another controller (a Release's Service)
/// or of nobody phaseloop knows. `None` when `env` owns it.
pub fn owned_by_another(live: &DynamicObject, env: &Environment) -> Option<String> {
    let owners = live.metadata.owner_references.as_deref().unwrap_or_default();
    if owners.iter().any(|o| Some(&o.uid) == env.metadata.uid.as_ref()) {
        return None;
    }
    Some(match owners.iter().find(|o| o.controller == Some(true)).or(owners.first()) {
        Some(o) => format!("{} {}", o.kind, o.name),
        None => "someone else (not this Environment)".into(),
    })
}

/// Readiness of an applied object: `Ok(true)` ready, `Ok(false)` not yet, `Err` failed for good.
/// Deployments and StatefulSets must have every replica available for their latest generation,
/// Jobs must have succeeded; anything else is ready once applied.
pub fn readiness(kind: &str, live: &DynamicObject) -> Result<bool, String> {
    let status = &live.data["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = live.metadata.generation.unwrap_or(0);
    let observed = int(&status["observedGeneration"]) >= generation;
    match kind {
        "Deployment" => {
            let want = live.data["spec"]["replicas"].as_i64().unwrap_or(1);
            Ok(observed && int(&status["availableReplicas"]) >= want && int(&status["updatedReplicas"]) >= want)
        }
        "StatefulSet" => {
            let want = live.data["spec"]["replicas"].as_i64().unwrap_or(1);
            Ok(observed && int(&status["readyReplicas"]) >= want && int(&status["updatedReplicas"]) >= want)
        }
        "Job" => {
            let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            let has = |t: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == "True");
            if has("Failed") {
                Err(format!("Job {} failed", live.metadata.name.as_deref().unwrap_or("")))
            } else {
                Ok(has("Complete") || int(&status["succeeded"]) > 0)
            }
        }
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmbeddedObject;
    use serde_json::json;

    fn env() -> Environment {
        let mut e = crate::fixtures::env("pr-1", json!({}));
        e.metadata.uid = Some("u".into());
        e
    }

    fn component(objects: Vec<Value>) -> Component {
        Component { name: "db".into(), objects: objects.into_iter().map(EmbeddedObject).collect() }
    }

    fn live(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn objects_are_placed_labelled_and_owned() {
        let c = component(vec![json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "pg", "labels": {"app": "pg"}, "resourceVersion": "9"}, "spec": {}, "status": {"x": 1}})]);
        let p = prepare(&env(), "pr-1", &c).unwrap().remove(0);
        assert_eq!((p.gvk.group.as_str(), p.gvk.kind.as_str()), ("apps", "Deployment"));
        let m = &p.object.metadata;
        assert_eq!(m.namespace.as_deref(), Some("pr-1"));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!((labels["app"].as_str(), labels[COMPONENT_LABEL].as_str()), ("pg", "db"));
        assert_eq!(labels["phaseloop.dev/environment"], "pr-1");
        assert_eq!(m.owner_references.as_ref().unwrap()[0].uid, "u");
        assert!(m.resource_version.is_none() && p.object.data.get("status").is_none());
        assert_eq!(
            p.applied(),
            AppliedObject { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "pg".into() }
        );
    }

    #[test]
    fn another_namespace_is_refused_with_the_reason() {
        let c = component(vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "kube-system"}}),
        ]);
        let err = prepare(&env(), "pr-1", &c).unwrap_err();
        assert!(err.contains("kube-system") && err.contains("objects[0]"), "{err}");
        // The component's own namespace, written out, is fine.
        let c = component(vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "pr-1"}}),
        ]);
        assert!(prepare(&env(), "pr-1", &c).is_ok());
    }

    #[test]
    fn malformed_objects_are_refused() {
        for (obj, why) in [
            (json!({"kind": "ConfigMap", "metadata": {"name": "a"}}), "apiVersion and kind are required"),
            (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}), "metadata.name is required"),
            (json!({"apiVersion": "a/b/c", "kind": "X", "metadata": {"name": "a"}}), "bad apiVersion"),
            (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}}), "not a Kubernetes object"),
        ] {
            let err = prepare(&env(), "ns", &component(vec![obj.clone()])).unwrap_err();
            assert!(err.contains(why), "{obj}: {err}");
        }
    }

    #[test]
    fn objects_that_reach_beyond_the_namespace_are_refused() {
        for (obj, why) in [
            (
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mitm"},
                "spec": {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}}),
                "externalIPs",
            ),
            (
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "steal"},
                "spec": {"volumeName": "admin-data"}}),
                "volumeName",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"p": "x"}}),
                "no data",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"p": "eA=="}}),
                "no data",
            ),
        ] {
            let err = prepare(&env(), "ns", &component(vec![obj.clone()])).unwrap_err();
            assert!(err.contains(why), "{obj}: {err}");
        }
        // The same kinds without those fields are fine, as is a group's own kind of the same name.
        for obj in [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque"}),
            json!({"apiVersion": "example.com/v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"p": "x"}}),
        ] {
            assert!(prepare(&env(), "ns", &component(vec![obj.clone()])).is_ok(), "{obj}");
        }
    }

    #[test]
    fn a_component_named_like_an_apps_objects_clashes() {
        let shop = crate::fixtures::release("shop-2", json!({"app": "shop", "version": "2.0"}));
        let objects = |kind: &str, name: &str| {
            let api = if kind == "Deployment" { "apps/v1" } else { "v1" };
            prepare(
                &env(),
                "ns",
                &component(vec![json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}})]),
            )
            .unwrap()
        };
        for (kind, name) in [("Service", "shop"), ("Service", "shop-preview"), ("Deployment", "shop-2-0")] {
            let why = clash_with_apps(&objects(kind, name), std::slice::from_ref(&shop)).unwrap();
            assert!(why.contains("app shop") && why.contains(name), "{why}");
        }
        assert_eq!(clash_with_apps(&objects("Service", "postgres"), std::slice::from_ref(&shop)), None);
        assert_eq!(clash_with_apps(&objects("ConfigMap", "shop"), std::slice::from_ref(&shop)), None);
    }

    #[test]
    fn deployments_are_ready_when_all_replicas_are_available() {
        let d = |avail: i64, generation: i64, obs: i64| {
            live(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pg", "generation": generation},
                "spec": {"replicas": 2}, "status": {"observedGeneration": obs, "availableReplicas": avail, "updatedReplicas": avail}}),
            )
        };
        assert_eq!(readiness("Deployment", &d(2, 1, 1)), Ok(true));
        assert_eq!(readiness("Deployment", &d(1, 1, 1)), Ok(false));
        assert_eq!(readiness("Deployment", &d(2, 2, 1)), Ok(false), "status of an older generation");
    }

    #[test]
    fn jobs_are_ready_when_complete_and_failed_for_good_when_failed() {
        let j = |t: &str| {
            live(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
                "status": {"conditions": [{"type": t, "status": "True"}]}}))
        };
        assert_eq!(readiness("Job", &j("Complete")), Ok(true));
        assert!(readiness("Job", &j("Failed")).unwrap_err().contains("migrate"));
        assert_eq!(readiness("Job", &j("Suspended")), Ok(false));
        assert_eq!(readiness("ConfigMap", &j("x")), Ok(true));
    }
}
