//! Infrastructure components: each component's objects checked (the allow-list, the namespace, the
//! names of the apps, the objects' owners) and applied, or the whole component refused with the
//! reason, each on its own: a refused component never stops the others, and what was applied of
//! it before stays as it is (it may be serving). Objects no longer declared are deleted, and so
//! are those of components removed from the spec.

use super::{Draft, Effect, KindSeen};
use crate::{
    api::{AppliedObject, Component, ComponentStatus, EnvironmentSpec, Reason},
    controller::{
        environment::{
            allow_list,
            infrastructure::{self, Prepared},
        },
        fields,
    },
};

/// The components' statuses and those refused (with the reason).
pub struct Verdict {
    pub statuses: Vec<ComponentStatus>,
    pub refused: Vec<(String, String)>,
}

/// Decides every component of `spec` (the effective spec) in namespace `ns`; `sleeping` applies
/// Deployments and StatefulSets at zero replicas.
pub(super) fn decide(d: &mut Draft<'_>, spec: &EnvironmentSpec, ns: &str, sleeping: bool) -> Verdict {
    let old = d.status.components.clone();
    let mut verdict = Verdict { statuses: vec![], refused: vec![] };
    for component in &spec.infrastructure {
        let previous = old.iter().find(|c| c.name == component.name).map(|c| c.objects.clone()).unwrap_or_default();
        match checked(d, ns, component).and_then(|objects| apply(d, &component.name, objects, &previous, sleeping)) {
            Ok(status) => verdict.statuses.push(status),
            Err(why) => {
                let was = old.iter().find(|c| c.name == component.name).and_then(|c| c.message.as_ref());
                if was != Some(&why) {
                    d.event(true, Reason::ComponentRefused, format!("component {}: refused: {why}", component.name));
                }
                verdict.statuses.push(refused(&component.name, &why, previous));
                verdict.refused.push((component.name.clone(), why));
            }
        }
    }
    for removed in old.iter().filter(|c| !spec.infrastructure.iter().any(|s| s.name == c.name)) {
        for o in &removed.objects {
            prune(d, None, o);
        }
    }
    verdict
}

/// A refused component's status: what was applied of it before is kept (and not pruned).
pub(super) fn refused(name: &str, why: &str, previous: Vec<AppliedObject>) -> ComponentStatus {
    ComponentStatus { name: name.to_string(), ready: false, message: Some(why.to_string()), objects: previous }
}

/// The component's objects, prepared and checked, each with its kind; `Err`: why the whole
/// component is refused (nothing of it is applied).
fn checked(d: &Draft<'_>, ns: &str, component: &Component) -> Result<Vec<(Prepared, KindSeen)>, String> {
    let prepared = infrastructure::prepare(d.o.env, ns, component)?;
    let mut resolved = Vec::new();
    for p in prepared {
        let kind = match d.o.kinds.get(&p.gvk) {
            Some(Ok(kind)) => kind.clone(),
            Some(Err(why)) => return Err(why.clone()),
            None => return Err(format!("unknown kind {}/{} {}", p.gvk.group, p.gvk.version, p.gvk.kind)),
        };
        if !kind.namespaced {
            return Err(format!("{} is cluster-scoped; infrastructure may only hold namespaced objects", p.gvk.kind));
        }
        let r = &kind.resource;
        allow_list::allowed(&d.o.config.infrastructure_kinds, &r.group, &r.plural, &p.gvk.kind)?;
        resolved.push((p, kind));
    }
    let prepared: Vec<Prepared> = resolved.iter().map(|(p, _)| p.clone()).collect();
    if let Some(why) = infrastructure::clash_with_apps(&prepared, d.o.releases) {
        return Err(why);
    }
    // One owner per name: an object of that name must be this Environment's, never a Release's
    // nor anyone else's.
    for (p, _) in &resolved {
        let name = p.object.metadata.name.clone().unwrap_or_default();
        if let Some(other) = d.o.object(&p.gvk.kind, &name).and_then(|l| infrastructure::owned_by_another(l, d.o.env)) {
            return Err(format!(
                "{} {name} exists and belongs to {other}: an Environment never takes over an object it did not create",
                p.gvk.kind
            ));
        }
    }
    Ok(resolved)
}

/// Applies a checked component's objects and prunes those it no longer declares; its status, with
/// readiness judged on the objects as observed: an object that is not (yet) as declared is not
/// ready if its kind has a readiness of its own (Deployments, StatefulSets, Jobs), and ready once
/// applied otherwise. `Err`: an object failed for good (a Job): the component is refused, what was
/// applied stays.
fn apply(
    d: &mut Draft<'_>,
    component: &str,
    objects: Vec<(Prepared, KindSeen)>,
    previous: &[AppliedObject],
    sleeping: bool,
) -> Result<ComponentStatus, String> {
    let mut applied = Vec::new();
    let mut waiting = Vec::new();
    for (mut p, kind) in objects {
        if sleeping && matches!(p.gvk.kind.as_str(), "Deployment" | "StatefulSet") {
            p.object.data["spec"]["replicas"] = serde_json::json!(0);
        }
        fields::stamp(&mut p.object);
        let name = p.object.metadata.name.clone().unwrap_or_default();
        let live = d.o.object(&p.gvk.kind, &name).filter(|l| same_fingerprint(&p.object, l));
        let ready = match live {
            Some(live) => infrastructure::readiness(&p.gvk.kind, live),
            None => Ok(!matches!(p.gvk.kind.as_str(), "Deployment" | "StatefulSet" | "Job")),
        };
        applied.push(p.applied());
        d.effects.push(Effect::Apply {
            component: component.to_string(),
            resource: kind.resource,
            object: Box::new(p.object),
        });
        if !ready? {
            waiting.push(format!("{} {name}", p.gvk.kind));
        }
    }
    applied.sort();
    for gone in previous.iter().filter(|o| !applied.contains(o)) {
        prune(d, Some(component), gone);
    }
    Ok(ComponentStatus {
        name: component.to_string(),
        ready: waiting.is_empty(),
        message: (!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join(", "))),
        objects: applied,
    })
}

/// Deletes an object phaseloop applied, when its kind is known (else it is left alone).
fn prune(d: &mut Draft<'_>, component: Option<&str>, o: &AppliedObject) {
    let types = kube::api::TypeMeta { api_version: o.api_version.clone(), kind: o.kind.clone() };
    let Ok(gvk) = kube::api::GroupVersionKind::try_from(&types) else { return };
    if let Some(Ok(kind)) = d.o.kinds.get(&gvk) {
        d.effects.push(Effect::Prune {
            component: component.map(str::to_string),
            resource: kind.resource.clone(),
            name: o.name.clone(),
        });
    }
}

/// Whether `live` carries the fingerprint of `desired` (both as phaseloop stamps them): the object
/// is what phaseloop would apply, whatever was edited since (which the apply undoes).
fn same_fingerprint(desired: &kube::api::DynamicObject, live: &kube::api::DynamicObject) -> bool {
    let print = |o: &kube::api::DynamicObject| {
        o.metadata.annotations.as_ref().and_then(|a| a.get(fields::FINGERPRINT).cloned())
    };
    print(desired).is_some() && print(desired) == print(live)
}
