//! The Gateway API router: a Release's HTTPRoutes carry the step's exact weights and its header
//! route. For each route it steers, phaseloop sets the `backendRefs` of the named rules to
//! `<app>-stable` (the rest) and `<app>-canary` (the step's weight), and adds a rule of its own per
//! steered rule for a header route (the rule's matches with the header added, its filters, all to
//! `<app>-canary`), named `phaseloop-header-<n>`.
//!
//! Gateway API declares `spec.rules` an atomic list, so no field manager can own one rule's
//! `backendRefs` alone: phaseloop writes the whole list as it read it with only its part changed,
//! guarded by the route's resourceVersion (a JSON patch whose first operation tests it), so an
//! edit made meanwhile by the route's owner is never overwritten: the write fails and the next
//! reconcile starts from the edit. An owner that re-applies its own version of the route takes
//! phaseloop's part away; phaseloop writes it again after a backoff that grows with each such
//! rewrite, and says so (`TrafficRouted=False`/`RouteConflict`).
//!
//! A route counts as carrying a step once its spec is what phaseloop wants and its Gateway has
//! accepted that generation (`status.parents[].conditions[Accepted].observedGeneration`): the
//! rollout waits at its step until then, and a rollback moves the route first and the pods second.
//!
//! Pure but for [`write()`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
};
use serde_json::{Value, json};

use super::Exposure;
use crate::{
    api::{HeaderRoute, RouteRef},
    controller::{Context, Error, fields::FIELD_MANAGER},
};

/// Prefix of the names of the rules phaseloop adds for header routes.
pub const HEADER_RULE: &str = "phaseloop-header-";

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// A route as phaseloop reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSeen {
    pub resource_version: String,
    pub generation: i64,
    /// `spec.rules` as stored.
    pub rules: Vec<Value>,
    /// The oldest generation its Gateways have accepted (`None`: none has said yet).
    pub accepted: Option<i64>,
    /// The field manager that last wrote `spec.rules`.
    pub rules_writer: Option<String>,
}

impl RouteSeen {
    /// From a route object.
    pub fn of(route: &DynamicObject) -> RouteSeen {
        let rules = route.data.pointer("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
        let parents = route.data.pointer("/status/parents").and_then(Value::as_array).cloned().unwrap_or_default();
        let accepted = parents
            .iter()
            .map(|p| {
                let conditions = p.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                conditions
                    .iter()
                    .find(|c| c.get("type") == Some(&json!("Accepted")) && c.get("status") == Some(&json!("True")))
                    .and_then(|c| c.get("observedGeneration").and_then(Value::as_i64))
            })
            .collect::<Option<Vec<i64>>>()
            .and_then(|gens| gens.into_iter().min());
        // `rules` is an atomic list: whoever changed it last owns it alone (phaseloop among others
        // only when they wrote the same rules). Timestamps have seconds only: no tie-break by time.
        let owners: Vec<&str> = rules_owners(&route.metadata).collect();
        let writer = if owners.contains(&FIELD_MANAGER) { Some(FIELD_MANAGER) } else { owners.first().copied() };
        RouteSeen {
            resource_version: route.metadata.resource_version.clone().unwrap_or_default(),
            generation: route.metadata.generation.unwrap_or_default(),
            rules,
            accepted,
            rules_writer: writer.map(str::to_string),
        }
    }
}

/// The managers that own a route's `spec.rules`.
fn rules_owners(meta: &ObjectMeta) -> impl Iterator<Item = &str> {
    (meta.managed_fields.iter().flatten())
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:rules").is_some()))
        .filter_map(|m| m.manager.as_deref())
}

/// What the routes cache keeps of a route: the general [`lean`](crate::controller::fields::lean)
/// would drop every managed field, but who owns `spec.rules` tells a rewrite by another writer
/// from a route that just lags phaseloop's own write.
pub fn lean_route(route: &mut DynamicObject) {
    let owners: Vec<String> = rules_owners(&route.metadata).map(str::to_string).collect();
    crate::controller::fields::lean(route);
    let entry = |manager| ManagedFieldsEntry {
        manager: Some(manager),
        fields_v1: Some(FieldsV1(json!({"f:spec": {"f:rules": {}}}))),
        ..Default::default()
    };
    route.metadata.managed_fields = (!owners.is_empty()).then(|| owners.into_iter().map(entry).collect());
}

/// The Services a route sends the app's traffic to.
pub fn stable_service(app: &str) -> String {
    format!("{app}-stable")
}

pub fn canary_service(app: &str) -> String {
    format!("{app}-canary")
}

/// The rules `route` should have for `exposure`; `Err` says what is missing (a named rule).
pub fn desired_rules(
    route: &RouteSeen,
    steer: &RouteRef,
    exposure: &Exposure,
    app: &str,
    port: i32,
) -> Result<Vec<Value>, String> {
    let selected = |rule: &Value| {
        steer.rules.is_empty()
            || rule.get("name").and_then(Value::as_str).is_some_and(|n| steer.rules.iter().any(|r| r == n))
    };
    let theirs: Vec<&Value> = route.rules.iter().filter(|r| !is_ours(r)).collect();
    for wanted in &steer.rules {
        if !theirs.iter().any(|r| r.get("name").and_then(Value::as_str) == Some(wanted)) {
            return Err(format!("HTTPRoute {} has no rule named {wanted}", steer.name));
        }
    }
    let weight = exposure.canary_weight().clamp(0, 100);
    let backends = |rule: &Value, stable: i32, canary: i32| {
        let port = rule.pointer("/backendRefs/0/port").and_then(Value::as_i64).map_or(port as i64, |p| p);
        json!([
            {"group": "", "kind": "Service", "name": stable_service(app), "port": port, "weight": stable},
            {"group": "", "kind": "Service", "name": canary_service(app), "port": port, "weight": canary},
        ])
    };
    let mut rules: Vec<Value> = Vec::new();
    let mut headers = Vec::new();
    for (i, rule) in theirs.iter().enumerate() {
        let mut rule = (*rule).clone();
        if selected(&rule) {
            if let (Some(h), Some(_)) = (&exposure.header, &exposure.candidate) {
                headers.push(header_rule(&rule, h, i, backends(&rule, 0, 1)));
            }
            rule["backendRefs"] = backends(&rule, 100 - weight, weight);
        }
        rules.push(rule);
    }
    rules.extend(headers);
    Ok(rules)
}

/// One of the rules phaseloop adds.
fn is_ours(rule: &Value) -> bool {
    rule.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(HEADER_RULE))
}

/// `rule` for the requests with header `h`: each of its matches (or, without any, every path)
/// with the header added, its filters kept, every request to the candidate.
fn header_rule(rule: &Value, h: &HeaderRoute, i: usize, backends: Value) -> Value {
    let header = match (&h.exact, &h.regex) {
        (Some(v), _) => json!({"type": "Exact", "name": h.name, "value": v}),
        (None, Some(r)) => json!({"type": "RegularExpression", "name": h.name, "value": r}),
        (None, None) => json!({"type": "Exact", "name": h.name, "value": ""}),
    };
    let matches = rule.get("matches").and_then(Value::as_array).cloned().filter(|m| !m.is_empty());
    let matches = matches.unwrap_or_else(|| vec![json!({"path": {"type": "PathPrefix", "value": "/"}})]);
    let matches: Vec<Value> = matches
        .into_iter()
        .map(|mut m| {
            let headers = m.get("headers").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut headers: Vec<Value> = headers.into_iter().filter(|x| x.get("name") != header.get("name")).collect();
            headers.push(header.clone());
            m["headers"] = Value::Array(headers);
            m
        })
        .collect();
    let mut out = json!({"name": format!("{HEADER_RULE}{i}"), "matches": matches, "backendRefs": backends});
    if let Some(filters) = rule.get("filters") {
        out["filters"] = filters.clone();
    }
    out
}

/// The candidate's weight `rules` carry, in percent (of the first steered rule).
pub fn carried_weight(rules: &[Value], app: &str) -> Option<i32> {
    let canary = canary_service(app);
    rules.iter().filter(|r| !is_ours(r)).find_map(|r| {
        let refs = r.get("backendRefs")?.as_array()?;
        let weight = |b: &Value| b.get("weight").and_then(Value::as_i64).unwrap_or(1);
        let total: i64 = refs.iter().map(weight).sum();
        let ours: i64 = refs.iter().filter(|b| b.get("name") == Some(&json!(canary))).map(weight).sum();
        (refs.iter().any(|b| b.get("name") == Some(&json!(canary))) && total > 0).then(|| (ours * 100 / total) as i32)
    })
}

/// What phaseloop writes to a route: its rules, if it still is at `resource_version`.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutePatch {
    pub route: String,
    pub resource_version: String,
    pub rules: Vec<Value>,
}

/// Writes `patch` to its route in namespace `ns`; a route changed meanwhile is left as it is (the
/// test operation fails, and the next reconcile starts from the change).
pub async fn write(ctx: &Context, ns: &str, patch: &RoutePatch) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &api_resource());
    let ops = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": patch.resource_version},
        {"op": "replace", "path": "/spec/rules", "value": patch.rules},
    ]);
    let ops: json_patch::Patch = serde_json::from_value(ops).map_err(|e| Error::Internal(e.to_string()))?;
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
    match api.patch(&patch.route, &params, &Patch::<()>::Json(ops)).await {
        Ok(_) => Ok(()),
        // Changed meanwhile (the test failed) or gone: the watch brings the change.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 || e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
