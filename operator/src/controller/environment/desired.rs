//! Pure construction of the objects an Environment keeps in its namespace.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec},
        networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec},
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::api::{ContainerDefaults, Environment, PodSecurity, Quota, Seed, label};

/// Names of the objects phaseloop keeps in an Environment's namespace.
pub const QUOTA_NAME: &str = "phaseloop-quota";
pub const LIMIT_RANGE_NAME: &str = "phaseloop-defaults";
pub const NETWORK_POLICY_NAME: &str = "phaseloop-isolation";
pub const SEED_JOB_NAME: &str = "phaseloop-seed";
/// Label naming the infrastructure component an object belongs to.
pub const COMPONENT_LABEL: &str = "phaseloop.dev/component";

/// Labels on everything phaseloop creates for an Environment.
pub fn labels(env: &Environment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::MANAGED_BY.to_string(), label::MANAGER.to_string()),
        (label::ENVIRONMENT.to_string(), env.name_any()),
        (label::TIER.to_string(), env.spec.tier.as_str().to_string()),
    ])
}

fn meta(env: &Environment, name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(env)),
        owner_references: env.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// The namespace label Pod Security admission enforces, and the one it warns with.
pub const POD_SECURITY_LABELS: [&str; 2] = ["pod-security.kubernetes.io/enforce", "pod-security.kubernetes.io/warn"];

/// The Environment's namespace, enforcing the Pod Security Standard `level` (the effective spec's,
/// `restricted` unless it asked for a looser one the operator allows).
pub fn namespace(env: &Environment, name: &str, level: PodSecurity) -> Namespace {
    let mut metadata = meta(env, name, None);
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for key in POD_SECURITY_LABELS {
        labels.insert(key.to_string(), level.as_str().to_string());
    }
    // Its Releases must belong to the same install (an admission policy reads this label).
    if let Some(instance) = env.labels().get(label::INSTANCE) {
        labels.insert(label::INSTANCE.to_string(), instance.clone());
    }
    Namespace { metadata, ..Default::default() }
}

pub fn resource_quota(env: &Environment, ns: &str, quota: &Quota) -> ResourceQuota {
    let mut hard = BTreeMap::new();
    if let Some(cpu) = &quota.cpu {
        hard.insert("requests.cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &quota.memory {
        hard.insert("requests.memory".to_string(), memory.clone());
    }
    if let Some(pods) = quota.pods {
        hard.insert("pods".to_string(), Quantity(pods.to_string()));
    }
    ResourceQuota {
        metadata: meta(env, QUOTA_NAME, Some(ns)),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
        ..Default::default()
    }
}

pub fn limit_range(env: &Environment, ns: &str, defaults: &ContainerDefaults) -> LimitRange {
    let to_map = |r: &Option<crate::api::Resources>| {
        r.as_ref().map(|r| {
            let mut m = BTreeMap::new();
            if let Some(cpu) = &r.cpu {
                m.insert("cpu".to_string(), cpu.clone());
            }
            if let Some(memory) = &r.memory {
                m.insert("memory".to_string(), memory.clone());
            }
            m
        })
    };
    LimitRange {
        metadata: meta(env, LIMIT_RANGE_NAME, Some(ns)),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default_request: to_map(&defaults.requests),
                default: to_map(&defaults.limits),
                ..Default::default()
            }],
        }),
    }
}

/// Ingress allowed from the namespace itself and the monitoring namespace; all other denied.
pub fn network_policy(env: &Environment, ns: &str, monitoring_namespace: &str) -> NetworkPolicy {
    let from_namespace = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(env, NETWORK_POLICY_NAME, Some(ns)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![from_namespace(ns), from_namespace(monitoring_namespace)]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The seed Job, run once; `backoffLimit` carries the retries.
pub fn seed_job(env: &Environment, ns: &str, seed: &Seed) -> Job {
    let mut template = seed.template.clone();
    let pod_spec = template.spec.get_or_insert_with(Default::default);
    if pod_spec.restart_policy.is_none() {
        pod_spec.restart_policy = Some("Never".into());
    }
    Job {
        metadata: meta(env, SEED_JOB_NAME, Some(ns)),
        spec: Some(JobSpec { backoff_limit: Some(seed.retries), template, ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvironmentSpec, Resources, Tier};

    fn env(spec: EnvironmentSpec) -> Environment {
        let mut e = crate::fixtures::env("shop-staging", serde_json::to_value(spec).unwrap());
        e.metadata.uid = Some("uid-1".into());
        e
    }

    #[test]
    fn children_are_labelled_and_owned() {
        let e = env(EnvironmentSpec { tier: Tier::Staging, ..Default::default() });
        let ns = namespace(&e, "shop-staging", PodSecurity::Restricted);
        let l = ns.metadata.labels.unwrap();
        assert_eq!(l[label::ENVIRONMENT], "shop-staging");
        assert_eq!(l["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(l[label::TIER], "staging");
        assert_eq!(l[label::MANAGED_BY], "phaseloop");
        let owner = &ns.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Environment", "uid-1", Some(true)));
    }

    #[test]
    fn quota_maps_to_request_limits() {
        let q = Quota { cpu: Some(Quantity("4".into())), memory: Some(Quantity("8Gi".into())), pods: Some(20) };
        let rq = resource_quota(&env(Default::default()), "ns", &q);
        let hard = rq.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"], Quantity("4".into()));
        assert_eq!(hard["requests.memory"], Quantity("8Gi".into()));
        assert_eq!(hard["pods"], Quantity("20".into()));
    }

    #[test]
    fn defaults_map_to_a_container_limit_range() {
        let d = ContainerDefaults {
            requests: Some(Resources { cpu: Some(Quantity("100m".into())), memory: None }),
            limits: Some(Resources { cpu: None, memory: Some(Quantity("256Mi".into())) }),
        };
        let item = &limit_range(&env(Default::default()), "ns", &d).spec.unwrap().limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"], Quantity("100m".into()));
        assert_eq!(item.default.as_ref().unwrap()["memory"], Quantity("256Mi".into()));
    }

    #[test]
    fn isolation_admits_own_and_monitoring_namespaces_only() {
        let np = network_policy(&env(Default::default()), "shop", "monitoring");
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), vec!["Ingress"]);
        let peers = &spec.ingress.unwrap()[0].from.clone().unwrap();
        let names: Vec<_> = peers
            .iter()
            .map(|p| {
                p.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"]
                    .clone()
            })
            .collect();
        assert_eq!(names, ["shop", "monitoring"]);
    }

    #[test]
    fn the_seed_job_never_restarts_pods_in_place() {
        let seed = Seed { template: Default::default(), retries: 2 };
        let job = seed_job(&env(Default::default()), "ns", &seed);
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.template.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }
}
