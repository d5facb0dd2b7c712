//! Generation of the CRD manifests in `crds/`.
//!
//! The derived schemas embed `PodTemplateSpec` up to three times. With upstream descriptions that is
//! well over the 256 KiB a client-side `kubectl apply` can store in its last-applied annotation, so
//! descriptions inside embedded Kubernetes types are stripped (what Argo Rollouts does): users have
//! `kubectl explain pod.spec` for those, and our own fields keep their docs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

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

/// Every generated file of `crds/`: its name and its objects, in order (`crdgen` writes them as
/// YAML documents).
pub fn files() -> Vec<(String, Vec<Value>)> {
    let json = |c: &CustomResourceDefinition| serde_json::to_value(c).expect("CRDs serialize");
    let mut files: Vec<(String, Vec<Value>)> = all().iter().map(|c| (file_name(c), vec![json(c)])).collect();
    for (suffix, [policy, binding]) in super::admission::files() {
        files.push((format!("{}_{suffix}.yaml", super::GROUP), vec![policy, binding]));
    }
    files
}

/// File name of a CRD in `crds/`, e.g. `phaseloop.dev_releases.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
