//! How a Release's app is autoscaled: the HPA algorithm on a load read from Prometheus.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{Duration, duration_schema};

/// Autoscaling of an app's total replicas (HPA algorithm, load from Prometheus).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("scaling.minReplicas must not be above scaling.maxReplicas"))]
pub struct Scaling {
    /// Fewest replicas. Zero (scale to zero) is not allowed in a production Environment.
    #[serde(default = "super::default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// The load signal.
    pub metric: ScalingMetric,
    /// Time between decisions (at least 1s).
    #[serde(default = "default_scaling_interval")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("scaling interval must be at least 1s"))]
    pub interval: Duration,
    /// Relative deviation from the target ignored, to avoid flapping (HPA default 0.1).
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
    /// Stabilization windows and rate limits (HPA `behavior` semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<ScalingBehavior>,
    /// What to hold when the query keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

fn default_scaling_interval() -> Duration {
    std::time::Duration::from_secs(15).into()
}

fn default_tolerance() -> f64 {
    0.1
}

/// The load signal of the autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.targetPerReplica > 0.0").message("targetPerReplica must be positive"))]
pub struct ScalingMetric {
    /// PromQL query returning the app's total load (same placeholders as analysis queries).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Load one replica should carry.
    pub target_per_replica: f64,
}

/// Scale-up and scale-down rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Scale-up rules (default: no stabilization; double or +4 pods per 15s, whichever is more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Scale-down rules (default: 300s stabilization; up to 100% per 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// Rules for one direction of scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Recommendations of this long are considered; the most conservative wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::optional_duration_schema")]
    pub stabilization_window: Option<Duration>,
    /// Which policy limits when several apply: `Max` (default), `Min`, or `Disabled` (no scaling in
    /// this direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub policies: Vec<ScalingPolicy>,
}

/// Which policy applies when several do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// A rate limit: at most `value` pods or percent per `period`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: ScalingPolicyType,
    /// Pods or percent.
    #[schemars(range(min = 1, max = 10000))]
    pub value: i32,
    /// Period of the limit.
    #[schemars(schema_with = "duration_schema")]
    pub period: Duration,
}

/// Unit of a scaling policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScalingPolicyType {
    Pods,
    Percent,
}

/// Replicas held when the load query fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failed queries before the fallback applies.
    #[serde(default = "default_fallback_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub after_failures: i32,
    /// Replicas to hold; without it the current count is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
}

fn default_fallback_failures() -> i32 {
    3
}
