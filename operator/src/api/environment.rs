//! The `Environment` kind: a namespace and everything in it that is not the app itself.
// `printcolumn(...)` repeats `type_ = ...` by design; clippy mistakes that for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::{
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, conditions_schema, embedded_object_schema, optional_duration_schema};

/// An Environment declares a namespace and everything in it that is not the app itself: quota,
/// default requests, network isolation, infrastructure components and seed data. It may be branched
/// from a parent Environment and may expire or sleep when idle.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "phaseloop.dev",
    version = "v1alpha1",
    kind = "Environment",
    shortname = "env",
    category = "phaseloop",
    status = "EnvironmentStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters): it names the namespace by default"),
)]
#[x_kube(
    validation = Rule::new("!has(self.ttl) || self.tier != 'production'")
        .message("ttl is not allowed on a production Environment")
        .field_path(".ttl"),
    validation = Rule::new("!has(self.sleepAfter) || self.tier != 'production'")
        .message("sleepAfter is not allowed on a production Environment")
        .field_path(".sleepAfter"),
    validation = Rule::new("has(self.__namespace__) == has(oldSelf.__namespace__) && (!has(self.__namespace__) || self.__namespace__ == oldSelf.__namespace__)")
        .message("namespace is immutable")
        .field_path(".namespace"),
    validation = Rule::new("oldSelf.tier != 'production' || self.tier == 'production'")
        .message("tier production cannot be changed: a production Environment stays protected (delete it with the annotation phaseloop.dev/allow-delete: \"true\")")
        .field_path(".tier"),
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// What the Environment is for. `production` is protected: no `ttl`, no `sleepAfter`, the tier
    /// cannot be changed, and deleting it (or its namespace) needs the annotation
    /// `phaseloop.dev/allow-delete: "true"`.
    #[serde(default)]
    pub tier: Tier,

    /// Namespace the Environment owns. Defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,

    /// Parent Environment to branch from: the branch inherits the parent's infrastructure, quota,
    /// defaults and isolation (its own fields win) and gets the parent's live app versions deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub from: Option<String>,

    /// With `from`: keep following later changes of the parent. Off by default, so a branch is a
    /// stable snapshot of its parent at branch time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_parent: bool,

    /// Lifetime, e.g. `4h` (at least `10s`). The Environment deletes itself at
    /// `creationTimestamp + ttl` (`status.expiresAt`). Not allowed on `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("ttl must be at least 10s: an Environment must live long enough to be provisioned"))]
    pub ttl: Option<Duration>,

    /// Scale phaseloop-managed workloads to zero after this long without Release activity (at least
    /// `10s`). A new Release or the annotation `phaseloop.dev/wake` wakes them. Not allowed on
    /// `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("sleepAfter must be at least 10s"))]
    pub sleep_after: Option<Duration>,

    /// Resource quota of the namespace (a ResourceQuota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// Default container requests and limits in the namespace (a LimitRange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ContainerDefaults>,

    /// Network isolation of the namespace.
    #[serde(default)]
    pub isolation: Isolation,

    /// Named components applied into the namespace with server-side apply: a test database, a
    /// cache, ConfigMaps. Only namespaced objects aimed at this namespace are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub infrastructure: Vec<Component>,

    /// A Job run once after the infrastructure is ready, to load seed data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,

    /// Rules a Release must meet before it rolls out in this Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,

    /// Pod Security Standard the namespace enforces (`pod-security.kubernetes.io/enforce`):
    /// `restricted` by default. A looser level (`baseline`, `privileged`) only where the
    /// operator's configuration allows it (`--max-pod-security`, chart value
    /// `environments.maxPodSecurity`); asking for more is refused. A branch inherits its parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurity>,
}

/// A Pod Security Standard level, from the strictest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PodSecurity {
    /// Not root, no privilege escalation, no added capabilities, the runtime's seccomp profile.
    #[default]
    Restricted,
    /// No known privilege escalation: no privileged containers, host namespaces or host paths.
    Baseline,
    /// Anything, including root on the node.
    Privileged,
}

impl PodSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Restricted => "restricted",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Privileged => "privileged",
        }
    }
}

impl std::str::FromStr for PodSecurity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restricted" => Ok(PodSecurity::Restricted),
            "baseline" => Ok(PodSecurity::Baseline),
            "privileged" => Ok(PodSecurity::Privileged),
            other => Err(format!("{other:?} is not a Pod Security Standard level (restricted, baseline, privileged)")),
        }
    }
}

/// What an Environment is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    Production,
    Staging,
    Test,
    Preview,
    #[default]
    Development,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Production => "production",
            Tier::Staging => "staging",
            Tier::Test => "test",
            Tier::Preview => "preview",
            Tier::Development => "development",
        }
    }
}

/// Resource quota of an Environment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Total CPU requests allowed, e.g. `4` or `2500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory requests allowed, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Maximum number of pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub pods: Option<i32>,
}

/// Default resources of containers that do not set their own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefaults {
    /// Default requests (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Resources>,
    /// Default limits (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
}

/// CPU and memory amounts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Network isolation of a namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Isolation {
    /// No NetworkPolicies.
    #[default]
    None,
    /// Allow ingress from the same namespace and the monitoring namespace; deny other ingress.
    Namespace,
}

/// A named group of namespaced objects applied into the Environment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// Component name, unique in the Environment.
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Kubernetes objects of the component (each with `apiVersion`, `kind`, `metadata.name`).
    /// Ready when its Deployments and StatefulSets are available and its Jobs succeeded.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(o, has(o.apiVersion) && has(o.kind) && has(o.metadata) && has(o.metadata.name))")
        .message("every object needs apiVersion, kind and metadata.name"))]
    pub objects: Vec<EmbeddedObject>,
}

/// A Kubernetes object embedded in a spec, kept as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(transparent)]
#[schemars(schema_with = "embedded_object_schema")]
pub struct EmbeddedObject(pub serde_json::Value);

/// Seed data: a Job run once after the infrastructure is ready.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.template.spec) || !has(self.template.spec.restartPolicy) || self.template.spec.restartPolicy in ['Never', 'OnFailure']")
    .message("seed.template.spec.restartPolicy must be Never or OnFailure: the seed runs as a Job")
    .field_path(".template.spec.restartPolicy"))]
pub struct Seed {
    /// Pod template of the seed Job.
    pub template: PodTemplateSpec,
    /// Retries before the seed is reported failed.
    #[serde(default = "default_seed_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
}

fn default_seed_retries() -> i32 {
    2
}

/// Promotion rules of an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'Automatic' || has(self.from)")
    .message("promotion.mode Automatic needs promotion.from: the Environment whose Live versions are requested here"))]
pub struct Promotion {
    /// Environment where the same app version must be Live first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub from: Option<String>,
    /// Every Release here needs an explicit approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// Minimum time the version must have been Live in `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_duration_schema")]
    pub soak: Option<Duration>,
    /// No new rollouts start while set (running ones finish).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze: bool,
    /// Separation of duties: a Release's approval counts only when the approver is not its author
    /// (`phaseloop.dev/created-by`, recorded by the API server when the Release was created).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub separation_of_duties: bool,
    /// `Manual` (the default): Releases here are created by people. `Automatic`: once a version
    /// of an app has been Live in `from` for `soak`, phaseloop opens the Release for it here (a
    /// promotion request), which then goes through this Environment's rules like any other:
    /// approval, freeze, the deploy queue.
    #[serde(default, skip_serializing_if = "PromotionMode::is_manual")]
    pub mode: PromotionMode,
    /// What a promotion request changes in the upstream Release's spec for this Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<PromotionOverlay>,
}

/// Who creates the Releases of an Environment with `promotion.from`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PromotionMode {
    #[default]
    Manual,
    Automatic,
}

impl PromotionMode {
    pub fn is_manual(&self) -> bool {
        *self == PromotionMode::Manual
    }
}

/// Per-Environment changes to a promoted Release: the rest (app, version, pod template, Service,
/// strategy, analysis) is the upstream Release's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionOverlay {
    /// `spec.replicas` of the promoted Release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<i32>,
    /// Resources set on every container of the promoted Release's pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

/// A promotion request this Environment opened: the version of an app last requested from
/// `promotion.from`. One per app; a version is requested once, whatever became of its Release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRequest {
    /// The app (`spec.app` of its Releases).
    pub app: String,
    /// The version requested.
    pub version: String,
    /// The Release opened for it here.
    pub release: String,
    /// The upstream Release it was promoted from.
    pub from_release: String,
    /// When the request was opened.
    pub opened_at: Time,
}

/// Observed state of an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// Where the Environment is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EnvironmentPhase>,
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The namespace owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When a `ttl` Environment deletes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Readiness of each infrastructure component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentStatus>,
    /// The seed Job succeeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seeded: bool,
    /// App versions live in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["app"]))]
    pub apps: Vec<LiveApp>,
    /// With `promotion.mode: Automatic`: the version of each app last requested from upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["app"]))]
    pub promotions: Vec<PromotionRequest>,
    /// The last wake: `sleepAfter` counts from the latest of it, the creation of the Environment
    /// and of the newest Release in its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// The parent a branch was made from, and the parent's inheritable spec at branch time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchStatus>,
    /// When the workloads were put to sleep (phase `Sleeping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slept_at: Option<Time>,
    /// Standard conditions: `Ready`, `InfrastructureReady`, `Seeded`, `Degraded`, and with a `ttl`
    /// `Expiring`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Where a branch came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    /// The parent Environment.
    pub parent: String,
    /// The parent's `metadata.generation` the snapshot was taken from.
    pub parent_generation: i64,
    /// The parent's quota, defaults, isolation, infrastructure and seed at branch time (or, with
    /// `followParent`, at the parent's latest generation). Kept schemaless: it was validated as
    /// the parent's spec.
    #[schemars(schema_with = "super::common::preserved_object_schema")]
    pub snapshot: EnvironmentSpec,
}

/// Phase of an Environment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EnvironmentPhase {
    Provisioning,
    Ready,
    Sleeping,
    Expiring,
    Terminating,
    Failed,
}

impl EnvironmentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "Provisioning",
            Self::Ready => "Ready",
            Self::Sleeping => "Sleeping",
            Self::Expiring => "Expiring",
            Self::Terminating => "Terminating",
            Self::Failed => "Failed",
        }
    }
}

/// Readiness of one infrastructure component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub name: String,
    pub ready: bool,
    /// Why it is not ready, or why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Objects applied for the component, so they can be pruned when it changes or goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub objects: Vec<AppliedObject>,
}

/// An object applied into an Environment's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// An app version live in an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveApp {
    pub app: String,
    pub version: String,
    /// The Release serving it.
    pub release: String,
}

impl super::Reported for EnvironmentStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}
