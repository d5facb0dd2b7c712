//! Objects the tests create, and small reads and writes of them, in one place.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use phaseloop::api::Release;
use serde_json::{Value, json};

/// Pod annotations that make kwok turn a pod Ready after 1 to 3 seconds (see
/// `e2e/manifests/kwok-stages.yaml`): readiness comes pod by pod over seconds, as on a real node.
pub fn delayed_readiness() -> Value {
    json!({"e2e.phaseloop.dev/ready-after": "1s", "e2e.phaseloop.dev/ready-jitter": "3s"})
}

/// Pod annotations of a broken image: the pod runs and never turns Ready.
pub fn never_ready() -> Value {
    json!({"e2e.phaseloop.dev/never-ready": "true"})
}

/// The user the tests act as (the admin kubeconfig of `e2e/scripts/start-cluster.sh`): control
/// annotations (promote, abort, revert, override, approved-by) must name the requester.
pub const ADMIN: &str = "phaseloop-e2e-admin";

/// `pod_spec` with the settings the `restricted` Pod Security Standard requires (an Environment's
/// namespace enforces it): not root, no privilege escalation, no capabilities, the runtime's
/// seccomp profile. kwok does not run the containers; the API server admits the pods, or not, by
/// their spec.
pub fn restricted(mut pod_spec: Value) -> Value {
    pod_spec["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}});
    for c in pod_spec["containers"].as_array_mut().into_iter().flatten() {
        c["securityContext"] = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    }
    pod_spec
}

/// The name of the Release of `app` at `version`: `<app>-<version with dots as dashes>`.
pub fn release_name(app: &str, version: &str) -> String {
    format!("{app}-{}", version.replace('.', "-"))
}

/// A Release of `app` at `version` with `replicas`, the Service port 80 → 8080 and `strategy`,
/// whose pods become Ready over a few seconds ([`delayed_readiness`]).
pub fn release(ns: &str, app: &str, version: &str, replicas: i32, strategy: Value) -> Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": release_name(app, version), "namespace": ns},
        "spec": {"app": app, "version": version, "replicas": replicas,
                 "template": {"metadata": {"annotations": delayed_readiness()},
                              "spec": restricted(json!({"containers": [{"name": "app", "image": format!("{app}:{version}")}]}))},
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]},
                 "strategy": strategy}})
}

/// The same Release with pods that never become Ready (a broken image).
pub fn broken(mut release: Value) -> Value {
    release["spec"]["template"]["metadata"]["annotations"] = never_ready();
    release
}

/// `release` with `fields` laid over its spec: objects merge key by key, anything else replaces.
pub fn with_spec(mut release: Value, fields: Value) -> Value {
    merge(&mut release["spec"], fields);
    release
}

/// `release` under another name.
pub fn named(mut release: Value, name: &str) -> Value {
    release["metadata"]["name"] = json!(name);
    release
}

/// `release` with pods Ready as soon as they run (kwok's default), for tests about something other
/// than readiness over time.
pub fn ready_at_once(mut release: Value) -> Value {
    if let Some(metadata) = release["spec"]["template"]["metadata"].as_object_mut() {
        metadata.remove("annotations");
    }
    release
}

/// `release` with a smoke test Job (see `e2e/manifests/kwok-stages.yaml`: it succeeds, or fails
/// when `fail`).
pub fn with_test(mut release: Value, fail: bool) -> Value {
    let annotations = if fail { json!({"e2e.phaseloop.dev/fail": "true"}) } else { json!({}) };
    release["spec"]["tests"] = json!([{"name": "smoke", "retries": 1, "timeout": "1m",
        "template": {"metadata": {"annotations": annotations},
                     "spec": restricted(json!({"containers": [{"name": "smoke", "image": "curl"}]}))}}]);
    release
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Replicas the Deployment `name` asks for.
pub async fn replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()?.spec.replicas
}

/// The version the Service `name` selects (`None`: every version of the app).
pub async fn service_selects(client: &Client, ns: &str, name: &str) -> Option<String> {
    let svc: Service = Api::namespaced(client.clone(), ns).get(name).await.unwrap();
    svc.spec?.selector?.get("app.kubernetes.io/version").cloned()
}

/// Sets an annotation on a Release; returns the Release's new resourceVersion.
pub async fn annotate(api: &Api<Release>, name: &str, key: &str, value: &str) -> String {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let r = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    r.metadata.resource_version.unwrap_or_default()
}

/// The Event with `reason` about object `name` in `ns`, once it exists (its note).
pub async fn event_about(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    use k8s_openapi::api::core::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    crate::eventually(&format!("a {reason} Event about {name}"), std::time::Duration::from_secs(90), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
                .then(|| e.message.unwrap_or_default())
        })
    })
    .await
    .unwrap()
}

/// The condition `type_` of a Release, as stored.
pub fn condition<'a>(
    r: &'a Release,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    r.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}
