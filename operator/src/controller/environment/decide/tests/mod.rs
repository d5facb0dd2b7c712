//! The Environment's decision, one row per behaviour: each builds what a reconcile would observe
//! and checks the decision, and the transitions it made (every phase change is checked against
//! the transition table, `Transition::from`). One file per concern.

mod branching;
mod infrastructure;
mod promotion;
mod protection;
mod provisioning;
mod sleep;
mod ttl;

use std::time::Duration;

use k8s_openapi::{api::batch::v1::Job, apimachinery::pkg::apis::meta::v1::Condition};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

pub(super) use super::*;
pub(super) use crate::{
    api::{BranchStatus, ComponentStatus, Environment, EnvironmentPhase, EnvironmentStatus, Reason, condition},
    controller::{Config, environment::FINALIZER},
    fixtures,
};

/// Environment `name` as the controller sees it once its finalizer is on: `spec` over the
/// defaults, created at `fixtures::time(0)`.
fn env(name: &str, spec: Value) -> Environment {
    let mut e = fixtures::env(name, spec);
    e.metadata.finalizers = Some(vec![FINALIZER.into()]);
    e
}

fn with_status(mut e: Environment, f: impl FnOnce(&mut EnvironmentStatus)) -> Environment {
    let mut s = e.status.take().unwrap_or_default();
    f(&mut s);
    e.status = Some(s);
    e
}

fn annotate(mut e: Environment, key: &str, value: &str) -> Environment {
    e.metadata.annotations.get_or_insert_with(Default::default).insert(key.into(), value.into());
    e
}

/// The kinds the rows use, as discovery would find them.
fn kinds() -> Kinds {
    let kind = |group: &str, version: &str, kind: &str, plural: &str, namespaced: bool| {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        (gvk, Ok(KindSeen { resource, namespaced }))
    };
    Kinds::from([
        kind("", "v1", "ConfigMap", "configmaps", true),
        kind("", "v1", "Service", "services", true),
        kind("apps", "v1", "Deployment", "deployments", true),
        kind("batch", "v1", "Job", "jobs", true),
        kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false),
        kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true),
        kind("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    ])
}

/// One reconcile's observation, owned; [`Case::decide`] lends it to the decision.
struct Case {
    env: Environment,
    /// Seconds after `fixtures::time(0)`, when the Environment was created.
    now: i64,
    /// This operator's clock minus the API server's, in seconds (`None`: not measured).
    skew: Option<i64>,
    config: Config,
    chain: Chain,
    namespace: NamespaceSeen,
    releases: Vec<crate::api::Release>,
    parent_releases: Vec<crate::api::Release>,
    upstream_releases: Option<Vec<crate::api::Release>>,
    kinds: Kinds,
    objects: Objects,
    seed_job: Option<Job>,
}

impl Case {
    fn new(env: Environment) -> Self {
        Case {
            env,
            now: 10,
            skew: Some(0),
            config: Config::default(),
            chain: Chain::default(),
            namespace: NamespaceSeen::Ours { deleting: false },
            releases: vec![],
            parent_releases: vec![],
            upstream_releases: None,
            kinds: kinds(),
            objects: Objects::new(),
            seed_job: None,
        }
    }

    /// A branch, its chain of parents as the cache has them.
    fn branch(env: Environment, above: &[&Environment]) -> Self {
        let all: Vec<Environment> = above.iter().map(|e| (*e).clone()).collect();
        let chain = walk(&env, |name| all.iter().find(|e| kube::ResourceExt::name_any(*e) == name).cloned());
        Case { chain, ..Case::new(env) }
    }

    fn decide(&self) -> Outcome {
        let o = Observation {
            env: &self.env,
            now: fixtures::time(self.now),
            skew: self.skew.map(jiff::SignedDuration::from_secs),
            config: &self.config,
            chain: self.chain.clone(),
            namespace: self.namespace,
            releases: &self.releases,
            parent_releases: &self.parent_releases,
            upstream_releases: self.upstream_releases.as_deref(),
            kinds: &self.kinds,
            objects: &self.objects,
            seed_job: self.seed_job.as_ref(),
        };
        decide(&o)
    }

    /// The next reconcile after `out`: the Environment as the decision left it.
    fn after(&mut self, out: &Outcome) {
        if let Some(status) = &out.status {
            self.env.status = Some(status.clone());
        }
    }

    /// `object` as it is in the namespace.
    fn exists(&mut self, object: Value) {
        let o: DynamicObject = serde_json::from_value(object).unwrap();
        let kind = o.types.as_ref().unwrap().kind.clone();
        self.objects.insert((kind, o.metadata.name.clone().unwrap()), o);
    }
}

fn status(out: &Outcome) -> &EnvironmentStatus {
    out.status.as_ref().expect("a status")
}

fn phase(out: &Outcome) -> Option<EnvironmentPhase> {
    status(out).phase
}

fn condition<'a>(out: &'a Outcome, type_: &str) -> &'a Condition {
    let s = status(out);
    crate::controller::conditions::find(&s.conditions, type_).unwrap_or_else(|| panic!("no {type_} in {s:?}"))
}

/// A condition as (status, reason).
fn cond(out: &Outcome, type_: &str) -> (String, String) {
    let c = condition(out, type_);
    (c.status.clone(), c.reason.clone())
}

fn is(status: &str, reason: Reason) -> (String, String) {
    (status.to_string(), reason.as_str().to_string())
}

/// The names of the component objects applied, as `Kind/name`.
fn applied(out: &Outcome) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply { object, .. } => {
                Some(format!("{}/{}", object.types.as_ref().unwrap().kind, object.metadata.name.clone().unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn pruned(out: &Outcome) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Prune { resource, name, .. } => Some(format!("{}/{name}", resource.kind)),
            _ => None,
        })
        .collect()
}

/// Whether anything in the namespace is written (the namespace itself included).
fn provisions(out: &Outcome) -> bool {
    out.effects.iter().any(|e| matches!(e, Effect::Namespace(_)))
}

fn component(name: &str, objects: Vec<Value>) -> Value {
    json!({"name": name, "objects": objects})
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

const HOUR: i64 = 3600;
const RECHECK: Option<Duration> = Some(Duration::from_secs(30));
