//! The `Release` kind: one version of one app, tested, gated, rolled out and operated.
// `printcolumn(...)` repeats `type_ = ...` by design; clippy mistakes that for a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{CustomResource, KubeSchema};

use serde::{Deserialize, Serialize};

use super::common::{Duration, duration_schema};

mod routing;
mod scaling;
mod status;
mod strategy;
pub use routing::*;
pub use scaling::*;
pub use status::*;
pub use strategy::*;

/// A Release ships one version of one app into its namespace: the version is tested, waits at the
/// gate, rolls out progressively with analysis, and is then operated (autoscaled) until a newer
/// Release of the same app supersedes it. `app`, `version` and `template` are immutable: a change is
/// a new Release.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "phaseloop.dev",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    shortname = "rel",
    category = "phaseloop",
    status = "ReleaseStatus",
    derive = "PartialEq",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.weight",
        description = "Share of the app's Ready serving pods that run this version, in percent"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.app"
)]
#[x_kube(
    validation = Rule::new("self.strategy.type == 'Canary' || !has(self.strategy.canary)")
        .message("strategy.canary is only allowed with strategy.type Canary")
        .field_path(".strategy.canary"),
    validation = Rule::new("self.strategy.type != 'Canary' || has(self.strategy.canary)")
        .message("strategy.type Canary needs strategy.canary.steps")
        .field_path(".strategy.canary"),
    validation = Rule::new("!has(self.strategy.canary) || !self.strategy.canary.steps.exists(s, has(s.analysis)) || has(self.strategy.analysis)")
        .message("a canary analysis step needs strategy.analysis.metrics")
        .field_path(".strategy.analysis"),
    validation = Rule::new("self.strategy.type == 'BlueGreen' || !has(self.strategy.blueGreen)")
        .message("strategy.blueGreen is only allowed with strategy.type BlueGreen")
        .field_path(".strategy.blueGreen"),
    validation = Rule::new("!has(self.strategy.blueGreen) || !has(self.strategy.blueGreen.previewHeader) || has(self.strategy.blueGreen.trafficRouting)")
        .message("strategy.blueGreen.previewHeader needs strategy.blueGreen.trafficRouting")
        .field_path(".strategy.blueGreen.previewHeader"),
    validation = Rule::new("self.strategy.type == 'Rolling' || !has(self.strategy.rolling)")
        .message("strategy.rolling is only allowed with strategy.type Rolling")
        .field_path(".strategy.rolling"),
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The app this Release belongs to. Releases of the same app in one namespace supersede each
    /// other; the Service `<app>` selects the serving pods. Immutable.
    #[schemars(length(min = 1, max = 50), regex(pattern = "^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("app is immutable: create a new Release"))]
    #[x_kube(validation = Rule::new("!self.endsWith('-preview') && !self.endsWith('-stable') && !self.endsWith('-canary')").message("app must not end in -preview, -stable or -canary: <app>-preview, <app>-stable and <app>-canary name Services of app <app>"))]
    pub app: String,

    /// The version shipped, e.g. `1.4.2` or a commit id. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("version is immutable: create a new Release"))]
    pub version: String,

    /// Pod template of the app's workload. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("template is immutable: create a new Release"))]
    pub template: PodTemplateSpec,

    /// Total replicas of the app when `scaling` is not set.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Ports of the Service `<app>` that phaseloop keeps selecting the app's serving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Test Jobs run against the candidate before it gets production traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tests: Vec<TestSpec>,

    /// Run `tests` in an ephemeral `test` Environment branched from this namespace's Environment,
    /// with the candidate deployed there; the Environment is deleted afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_environment: Option<TestEnvironment>,

    /// Approval gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// How the Release rolls out.
    #[serde(default)]
    pub strategy: Strategy,

    /// Autoscaling of the app's total replicas from a Prometheus query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

pub(super) fn default_replicas() -> i32 {
    1
}

/// The Service `<app>` kept in front of the app.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Ports exposed by the Service.
    #[schemars(length(min = 1, max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port"]))]
    pub ports: Vec<ServicePort>,
}

/// One port of the app's Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name (required when there are several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// Port the Service listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Container port traffic goes to; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(TCP|UDP|SCTP)$"))]
    pub protocol: Option<String>,
}

/// A test Job run against the candidate. The candidate's Service address is passed in the
/// environment variables `PHASELOOP_CANDIDATE_URL` and `PHASELOOP_CANDIDATE_HOST`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSpec {
    /// Test name, unique in the Release.
    #[schemars(length(min = 1, max = 40), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Pod template of the test Job.
    pub template: PodTemplateSpec,
    /// Time one attempt may take.
    #[serde(default = "default_test_timeout")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("timeout must be at least 1s"))]
    pub timeout: Duration,
    /// Attempts after the first failed one.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
}

fn default_test_timeout() -> Duration {
    std::time::Duration::from_secs(300).into()
}

/// Ephemeral test Environment settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestEnvironment {
    /// Lifetime of the test Environment, a safety net if the Release never finishes testing.
    #[serde(default = "default_test_env_ttl")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("ttl must be at least 1m: the test Environment must live long enough to be provisioned"))]
    pub ttl: Duration,
}

fn default_test_env_ttl() -> Duration {
    std::time::Duration::from_secs(30 * 60).into()
}

/// Approval gate of a Release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Wait in `AwaitingApproval` until approved (`kubectl phaseloop approve`). The target
    /// Environment's `promotion.requireApproval` forces it.
    #[serde(default)]
    pub required: bool,
}

impl Release {
    /// The namespace of the Release (the API server always sets it: the kind is namespaced).
    pub fn ns(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }
}
