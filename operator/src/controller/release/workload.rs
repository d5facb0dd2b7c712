//! Pure construction of a Release's Deployment and of the app's Services.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Service, ServicePort as KubeServicePort, ServiceSpec as KubeServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::api::{Release, ServiceSpec, label};

/// Label naming the Release that owns a pod.
pub const RELEASE_LABEL: &str = "phaseloop.dev/release";

/// `1.4.0-rc.1+abc` → `1-4-0-rc-1-abc`: a version as a DNS-label fragment.
pub fn slug(version: &str) -> String {
    let mut out = String::with_capacity(version.len());
    for c in version.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Name of a Release's Deployment: `<app>-<version slug>`, cut to 120 characters (with a hash of
/// the whole, so two long versions never share one).
pub fn deployment_name(app: &str, version: &str) -> String {
    generated_name(&format!("{app}-{}", slug(version)), 120, false)
}

/// A name phaseloop generates from `base`, of at most `max` characters and valid whatever `base`
/// holds: a DNS label (`label`: lowercase letters, digits and `-`) or a subdomain (dots too).
/// `base` itself when it already is one; otherwise what is left after cutting and replacing, plus
/// `-` and eight hex digits of a hash of `base`, so two bases never give the same name (`a.b` and
/// `a-b` as labels, or two long names that share their first `max` characters).
pub fn generated_name(base: &str, max: usize, label: bool) -> String {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.');
    let valid = |s: &str| {
        s.len() <= max
            && s.chars().all(allowed)
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if valid(base) {
        return base.to_string();
    }
    let mut clean = String::with_capacity(base.len());
    for c in base.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if allowed(c) && c != '-' { c } else { '-' };
        if !(c == '-' && clean.ends_with('-')) {
            clean.push(c);
        }
    }
    let hash = format!("{:08x}", crate::controller::fields::fnv1a(base.as_bytes()) as u32);
    let head: String = clean.trim_matches(|c| c == '-' || c == '.').chars().take(max.saturating_sub(9)).collect();
    let head = head.trim_end_matches(['-', '.']);
    if head.is_empty() { hash } else { format!("{head}-{hash}") }
}

/// Labels selecting one Release's pods.
pub fn selector(rel: &Release) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_string(), rel.spec.app.clone()),
        (label::VERSION.to_string(), rel.spec.version.clone()),
        (label::MANAGED_BY.to_string(), label::MANAGER.to_string()),
    ])
}

/// Labels selecting every serving pod of an app (all its Releases).
pub fn app_selector(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_string(), app.to_string()),
        (label::MANAGED_BY.to_string(), label::MANAGER.to_string()),
    ])
}

/// The Deployment of `rel` at `replicas`, owned by the Release.
pub fn deployment(rel: &Release, replicas: i32) -> Deployment {
    let mut labels = selector(rel);
    labels.insert(RELEASE_LABEL.to_string(), rel.name_any());
    let mut template = rel.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).extend(labels.clone());
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&rel.spec.app, &rel.spec.version)),
            namespace: rel.namespace(),
            labels: Some(labels),
            owner_references: rel.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector(rel)), ..Default::default() },
            template,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A Service `name` selecting `selector` with the Release's ports, owned by `owners` (the first one
/// controls it): every Release whose pods it selects, so deleting one of them never takes the
/// Service away from the others.
pub fn service(owners: &[&Release], name: &str, ports: &ServiceSpec, selector: BTreeMap<String, String>) -> Service {
    let owner = owners[0];
    let ports = ports
        .ports
        .iter()
        .map(|p| KubeServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port: Some(IntOrString::Int(p.target_port.unwrap_or(p.port))),
            protocol: p.protocol.clone(),
            ..Default::default()
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: owner.namespace(),
            labels: Some(app_selector(&owner.spec.app)),
            owner_references: Some(
                owners
                    .iter()
                    .enumerate()
                    .filter_map(|(i, o)| {
                        let mut r = o.controller_owner_ref(&())?;
                        r.controller = Some(i == 0);
                        Some(r)
                    })
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(KubeServiceSpec { selector: Some(selector), ports: Some(ports), ..Default::default() }),
        ..Default::default()
    }
}

/// Whose the Service described by `meta` is when it is not app `app`'s: phaseloop's Services of an
/// app are labelled as that app's and controlled by one of its Releases. A Service of another app,
/// an Environment's infrastructure component (labelled as the app's or not) or anyone else's is
/// never adopted.
pub fn service_of_another(meta: &ObjectMeta, app: &str) -> Option<String> {
    let labels = meta.labels.clone().unwrap_or_default();
    let named = labels.get(crate::api::label::NAME).map(String::as_str);
    let ours = labels.get(crate::api::label::MANAGED_BY).map(String::as_str) == Some(crate::api::label::MANAGER);
    let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    let by_release = controller.is_some_and(|o| o.kind == "Release" && o.api_version.starts_with("phaseloop.dev/"));
    match (named, controller) {
        (Some(a), _) if a == app && ours && by_release => None,
        (Some(other), _) if ours && by_release => Some(format!("app {other}")),
        (_, Some(o)) if ours => Some(format!("{} {} (not a Release of app {app})", o.kind, o.name)),
        _ => Some("someone else (not phaseloop)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServicePort;

    fn release() -> Release {
        let mut r = crate::fixtures::release(
            "shop-1-4-0",
            serde_json::json!({"version": "1.4.0-RC.1_build.7",
            "template": {"metadata": {"labels": {"team": "web"}}, "spec": {"containers": [{"name": "app", "image": "shop"}]}}}),
        );
        r.metadata.uid = Some("uid".into());
        r
    }

    #[test]
    fn slugs_are_dns_fragments() {
        assert_eq!(slug("1.4.0-RC.1+build_7"), "1-4-0-rc-1-build-7");
        assert_eq!(slug("..v2.."), "v2");
        assert_eq!(deployment_name("shop", "1.4.0"), "shop-1-4-0");
        assert!(deployment_name("a", &"9".repeat(200)).len() <= 120);
    }

    #[test]
    fn generated_names_are_valid_and_unique_whatever_they_are_made_of() {
        assert_eq!(generated_name("shop-shop-v2-test", 63, true), "shop-shop-v2-test", "valid names stay");
        let dotted = generated_name("shop-shop.v2-test", 63, true);
        let dashed = generated_name("shop-shop-v2-test", 63, true);
        assert_ne!(dotted, dashed, "two Release names that map to one label");
        assert!(dotted.starts_with("shop-shop-v2-test-") && dotted.len() <= 63, "{dotted}");
        assert_eq!(generated_name("web.v2-test-smoke-1", 63, false), "web.v2-test-smoke-1", "dots in subdomains");
        let long = |tail: &str| generated_name(&format!("{}{tail}", "a".repeat(80)), 63, true);
        assert_ne!(long("x"), long("y"), "a shared beginning longer than the limit");
        for n in [long("x"), generated_name("--A_B--", 63, true), generated_name("...", 63, false)] {
            assert!(n.len() <= 63 && !n.starts_with('-') && !n.ends_with('-') && !n.is_empty(), "{n}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
        }
        assert_eq!(generated_name("a", 63, true), generated_name("a", 63, true), "deterministic");
    }

    #[test]
    fn the_deployment_selects_only_its_version_and_keeps_the_users_labels() {
        let d = deployment(&release(), 3);
        assert_eq!(d.metadata.name.as_deref(), Some("shop-1-4-0-rc-1-build-7"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let sel = spec.selector.match_labels.unwrap();
        assert_eq!(sel[label::VERSION], "1.4.0-RC.1_build.7");
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels["team"], "web");
        assert!(sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "the selector matches the pods");
        assert_eq!(d.metadata.owner_references.unwrap()[0].kind, "Release");
    }

    #[test]
    fn the_app_service_selects_every_release_of_the_app() {
        let ports =
            ServiceSpec { ports: vec![ServicePort { name: None, port: 80, target_port: Some(8080), protocol: None }] };
        let s = service(&[&release()], "shop", &ports, app_selector("shop"));
        let spec = s.spec.unwrap();
        assert!(!spec.selector.as_ref().unwrap().contains_key(label::VERSION));
        assert_eq!(spec.ports.unwrap()[0].target_port, Some(IntOrString::Int(8080)));
    }

    #[test]
    fn only_a_releases_service_of_the_app_is_the_apps() {
        let r = release();
        let ports =
            ServiceSpec { ports: vec![ServicePort { name: None, port: 80, target_port: None, protocol: None }] };
        let ours = service(&[&r], "shop", &ports, selector(&r)).metadata;
        assert_eq!(service_of_another(&ours, "shop"), None);
        assert_eq!(service_of_another(&ours, "cart").as_deref(), Some("app shop"));
        // An Environment's component labelled as the app's: owned by the Environment, never adopted.
        let mut component = ours.clone();
        component.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "phaseloop.dev/v1alpha1".into(),
            kind: "Environment".into(),
            name: "staging".into(),
            uid: "e".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(
            service_of_another(&component, "shop").as_deref(),
            Some("Environment staging (not a Release of app shop)")
        );
        let foreign = ObjectMeta { name: Some("shop".into()), ..Default::default() };
        assert_eq!(service_of_another(&foreign, "shop").as_deref(), Some("someone else (not phaseloop)"));
    }
}
