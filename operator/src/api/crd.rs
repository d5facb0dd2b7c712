//! Generation of the CRD manifests in `crds/`.
//!
//! The derived schemas embed `PodTemplateSpec` up to three times. With upstream descriptions that is
//! well over the 256 KiB a client-side `kubectl apply` can store in its last-applied annotation, so
//! descriptions inside embedded Kubernetes types are stripped (what Argo Rollouts does): users have
//! `kubectl explain pod.spec` for those, and our own fields keep their docs.

use k8s_openapi::{
    api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{Environment, Release};

/// Schema paths (from `openAPIV3Schema`) of embedded Kubernetes types whose descriptions are
/// stripped. `[]` steps into list items.
const EMBEDDED_KUBERNETES_TYPES: &[(&str, &[&str])] = &[
    ("Release", &["spec", "template"]),
    ("Release", &["spec", "tests", "[]", "template"]),
    ("Environment", &["spec", "seed", "template"]),
];

/// Every CRD of the API, ready to apply: schemas post-processed for size.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![finish(Environment::crd()), finish(Release::crd())]
}

fn finish(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let kind = crd.spec.names.kind.clone();
    let mut value = serde_json::to_value(&crd).expect("CRD serializes");
    for version in value["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let root = &mut version["schema"]["openAPIV3Schema"];
        // kube-derive documents the root as "Auto-generated derived type..."; users want ours.
        root["description"] = root["properties"]["spec"]["description"].clone();
        shorten_quantity_docs(root);
        for (_, path) in EMBEDDED_KUBERNETES_TYPES.iter().filter(|(k, _)| *k == kind) {
            let node = walk(root, path).unwrap_or_else(|| panic!("{kind}: schema path {path:?} missing"));
            for child in node.get_mut("properties").and_then(Value::as_object_mut).into_iter().flatten() {
                strip_descriptions(child.1);
            }
        }
    }
    serde_json::from_value(value).expect("CRD deserializes")
}

/// Upstream's `Quantity` doc is 2 KB of grammar, repeated for every quantity field.
fn shorten_quantity_docs(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string").is_some()
                && map.get("description").and_then(Value::as_str).is_some_and(|d| d.starts_with("Quantity is"))
            {
                map.insert("description".into(), "A Kubernetes quantity, e.g. `500m`, `2`, `512Mi`, `2Gi`.".into());
            }
            map.values_mut().for_each(shorten_quantity_docs);
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_quantity_docs),
        _ => {}
    }
}

fn walk<'a>(mut node: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    for step in path {
        node = if *step == "[]" { node.get_mut("items")? } else { node.get_mut("properties")?.get_mut(*step)? };
    }
    Some(node)
}

fn strip_descriptions(node: &mut Value) {
    match node {
        Value::Object(map) => {
            map.remove("description");
            // Property names are data, not keywords: a property called "description" must stay.
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    for prop in child.as_object_mut().into_iter().flatten() {
                        strip_descriptions(prop.1);
                    }
                } else {
                    strip_descriptions(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// Name of the admission policy protecting production Environments.
pub const PROTECT_PRODUCTION: &str = "phaseloop.dev-protect-production";

/// A ValidatingAdmissionPolicy (and its binding) protecting production: deleting a `production`
/// Environment, or the namespace it owns, is refused unless the object carries
/// `phaseloop.dev/allow-delete: "true"`, and the namespace's tier label cannot be removed. Shipped in
/// `crds/` so that `kubectl apply -f crds/` installs the protection with the kinds. (The tier of a
/// production Environment cannot change: a CEL rule of the CRD.)
pub fn protect_production() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let allowed = |obj: &str| {
        format!(
            "(has({obj}.metadata.annotations) && '{a}' in {obj}.metadata.annotations && \
             {obj}.metadata.annotations['{a}'] == 'true')",
            a = super::annotation::ALLOW_DELETE
        )
    };
    let production_ns = |obj: &str| {
        format!(
            "(has({obj}.metadata.labels) && '{t}' in {obj}.metadata.labels && {obj}.metadata.labels['{t}'] == 'production')",
            t = super::label::TIER
        )
    };
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PROTECT_PRODUCTION},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [super::GROUP], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["environments"]},
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE", "UPDATE"], "resources": ["namespaces"]},
            ]},
            "validations": [
                {
                    "expression": format!(
                        "request.resource.resource != 'environments' || !has(oldObject.spec.tier) || \
                         oldObject.spec.tier != 'production' || {}",
                        allowed("oldObject")
                    ),
                    "message": format!(
                        "production Environments are protected: set the annotation {}: \"true\" to delete one",
                        super::annotation::ALLOW_DELETE
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "request.resource.resource != 'namespaces' || request.operation != 'DELETE' || !{} || {}",
                        production_ns("oldObject"),
                        allowed("oldObject")
                    ),
                    "message": format!(
                        "this namespace belongs to a production Environment and is protected: delete the Environment \
                         (with the annotation {}: \"true\"), which deletes its namespace",
                        super::annotation::ALLOW_DELETE
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "request.resource.resource != 'namespaces' || request.operation != 'UPDATE' || !{} || {}",
                        production_ns("oldObject"),
                        production_ns("object")
                    ),
                    "message": format!("the label {} of a production Environment's namespace cannot be changed", super::label::TIER),
                    "reason": "Forbidden",
                },
            ],
        },
    }))
    .expect("valid policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": PROTECT_PRODUCTION},
        "spec": {"policyName": PROTECT_PRODUCTION, "validationActions": ["Deny"]},
    }))
    .expect("valid binding");
    (policy, binding)
}

/// Name of the admission policy guarding approvals.
pub const APPROVALS: &str = "phaseloop.dev-approvals";
/// The verb that lets a person approve a Release (`kubectl auth can-i approve releases`).
pub const APPROVE_VERB: &str = "approve";

/// A ValidatingAdmissionPolicy (and its binding) that makes approving a permission of its own:
/// setting, changing or removing the annotation `phaseloop.dev/approved-by` on a Release needs the
/// verb `approve` on that Release (checked with the CEL `authorizer`, the way `bind` and
/// `escalate` work for RBAC), and the annotation must name the requester
/// (`request.userInfo.username`), so nobody approves under another's name.
pub fn approvals() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let a = super::annotation::APPROVED_BY;
    let value = |obj: &str| {
        format!(
            "{obj} == null || !has({obj}.metadata.annotations) || !('{a}' in {obj}.metadata.annotations) ? '' : {obj}.metadata.annotations['{a}']"
        )
    };
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": APPROVALS},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [super::GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["releases"]},
            ]},
            "variables": [
                {"name": "before", "expression": value("oldObject")},
                {"name": "after", "expression": value("object")},
            ],
            "validations": [
                {
                    "expression": format!(
                        "variables.after == variables.before || authorizer.group('{}').resource('releases')\
                         .namespace(object.metadata.namespace).name(object.metadata.name).check('{APPROVE_VERB}').allowed()",
                        super::GROUP
                    ),
                    "messageExpression": format!(
                        "'approving a Release needs the verb {APPROVE_VERB} on releases (the ClusterRole phaseloop-approver): ' + \
                         request.userInfo.username + ' may not set {a}'"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": "variables.after == variables.before || variables.after == '' || variables.after == request.userInfo.username",
                    "messageExpression": format!(
                        "'{a} must name the approver making the request: ' + request.userInfo.username + \
                         ' (kubectl phaseloop approve sets it)'"
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
    }))
    .expect("valid policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": APPROVALS},
        "spec": {"policyName": APPROVALS, "validationActions": ["Deny"]},
    }))
    .expect("valid binding");
    (policy, binding)
}

/// Every generated file of `crds/`: its name and its objects, in order (`crdgen` writes them as
/// YAML documents).
pub fn files() -> Vec<(String, Vec<Value>)> {
    let json = |o: &dyn erased::Serialize| o.to_json();
    let mut files: Vec<(String, Vec<Value>)> = all().iter().map(|c| (file_name(c), vec![json(c)])).collect();
    for (suffix, (policy, binding)) in [("protect-production", protect_production()), ("approvals", approvals())] {
        files.push((format!("{}_{suffix}.yaml", super::GROUP), vec![json(&policy), json(&binding)]));
    }
    files
}

/// File name of a CRD in `crds/`, e.g. `phaseloop.dev_releases.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

mod erased {
    /// Any serializable object, as JSON.
    pub trait Serialize {
        fn to_json(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Serialize for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("generated objects serialize")
        }
    }
}
