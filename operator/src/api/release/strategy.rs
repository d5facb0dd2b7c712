//! How a Release rolls out: the strategy, its steps, and the analysis that judges it.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{Duration, duration_schema};

/// Rollout strategy of a Release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// `Rolling` (default): the candidate replaces the previous version as it becomes ready.
    /// `Canary`: `canary.steps` shift the replica share step by step. `BlueGreen`: the candidate
    /// comes up fully behind `<app>-preview`, then the Service switches at once.
    #[serde(default, rename = "type")]
    pub type_: StrategyType,

    /// Canary steps (with `type: Canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,

    /// Blue-green settings (with `type: BlueGreen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<super::BlueGreen>,

    /// Background analysis during the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,

    /// How a rolling update hands over (with `type: Rolling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling: Option<RollingUpdate>,

    /// Time the candidate has to become ready; missing it fails (and rolls back) the Release.
    #[serde(default = "default_progress_deadline")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("progressDeadline must be at least 10s: pods need time to start"))]
    pub progress_deadline: Duration,

    /// After promotion the previous version is kept warm this long; `kubectl phaseloop revert`
    /// restores it at once within the window.
    #[serde(default = "default_revert_window")]
    #[schemars(schema_with = "duration_schema")]
    pub revert_window: Duration,

    /// Ready pods the previous version keeps during the revert window, out of the Service: a count,
    /// or a percentage of the app's total (rounded up). `100%` (the default) lets a revert take all
    /// traffic at once; `0` keeps no pods (a revert then waits for the previous version to start).
    /// The Release goes Live once the previous version has them. With `revertWindow: 0s` none
    /// are kept.
    #[serde(default = "default_warm_replicas")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub warm_replicas: IntOrString,

    /// Return 100% to the previous version on failed analysis or a missed deadline.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            type_: StrategyType::default(),
            canary: None,
            blue_green: None,
            analysis: None,
            rolling: None,
            progress_deadline: default_progress_deadline(),
            revert_window: default_revert_window(),
            warm_replicas: default_warm_replicas(),
            auto_rollback: true,
        }
    }
}

fn default_warm_replicas() -> IntOrString {
    IntOrString::String("100%".into())
}

fn default_quarter() -> IntOrString {
    IntOrString::String("25%".into())
}

/// Schema of a count-or-percentage field (`3` or `"25%"`), bounded.
fn int_or_percent_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // `string(self)` reads either form (CEL's `type()` is not available to the offline validator
    // the tests use); a count may be written as a number or a numeric string.
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "string(self).matches('^[0-9]{1,4}$') ? int(string(self)) <= 1000 : string(self).matches('^(100|[1-9]?[0-9])%$')",
            "message": "a count from 0 to 1000, or a percentage from 0% to 100%",
        }],
    })
}

/// How a rolling update hands the app over, with the meaning and defaults of a Deployment's
/// `rollingUpdate`: the previous version gives up pods only as the candidate's become Ready.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])")
    .message("maxSurge and maxUnavailable cannot both be zero"))]
pub struct RollingUpdate {
    /// Pods the app may run above its total during the handover: a count, or a percentage of the
    /// total rounded up. Default `25%`.
    #[serde(default = "default_quarter")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_surge: IntOrString,
    /// Ready pods the app may run below its total during the handover: a count, or a percentage of
    /// the total rounded down. Default `25%`.
    #[serde(default = "default_quarter")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_unavailable: IntOrString,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate { max_surge: default_quarter(), max_unavailable: default_quarter() }
    }
}

/// `value` (a count, or a percentage of `total`) as a count, rounded up or down.
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => (*n).max(0),
        IntOrString::String(s) if !s.ends_with('%') => s.parse::<i32>().unwrap_or(0).max(0),
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0).clamp(0, 100);
            let product = total.max(0) as i64 * percent;
            (if round_up { (product + 99) / 100 } else { product / 100 }) as i32
        }
    }
}

fn default_progress_deadline() -> Duration {
    std::time::Duration::from_secs(600).into()
}

fn default_revert_window() -> Duration {
    std::time::Duration::from_secs(1800).into()
}

fn default_true() -> bool {
    true
}

/// Rollout strategy type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum StrategyType {
    #[default]
    Rolling,
    Canary,
    BlueGreen,
}

/// Canary steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.trafficRouting) || !self.steps.exists(s, has(s.setHeaderRoute) || has(s.setCanaryScale))")
    .message("setHeaderRoute and setCanaryScale steps need canary.trafficRouting: without a route, a version's traffic follows its pods"))]
pub struct Canary {
    /// Steps run in order; after the last one the candidate is promoted to 100%.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()")
        .message("canary setWeight values must not decrease from one step to the next"))]
    pub steps: Vec<CanaryStep>,
    /// Steer requests through Gateway API routes: exact weights and header routes. Without it the
    /// weight is the candidate's share of the app's pods, and traffic follows the pod ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<super::TrafficRouting>,
}

/// One canary step: exactly one of `setWeight`, `pause`, `analysis`, `setHeaderRoute`,
/// `setCanaryScale`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) + (has(self.setHeaderRoute) ? 1 : 0) + (has(self.setCanaryScale) ? 1 : 0) == 1")
    .message("a canary step sets exactly one of setWeight, pause, analysis, setHeaderRoute, setCanaryScale"))]
pub struct CanaryStep {
    /// The candidate's share of the app's traffic, in percent: exactly, through a route
    /// (`trafficRouting`), else as its share of the app's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// From this step on, requests with this header reach the candidate whatever the weight
    /// (with `trafficRouting`); removed when the rollout ends, aborts or rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<super::HeaderRoute>,
    /// From this step on, the candidate's pods apart from its weight (with `trafficRouting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<super::CanaryScale>,
    /// Wait: for `duration`, or without one until `kubectl phaseloop promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Run the analysis in the foreground for `duration` before going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<StepAnalysis>,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to wait; without it, wait until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::optional_duration_schema")]
    pub duration: Option<Duration>,
}

/// A foreground analysis step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepAnalysis {
    /// How long the step measures; it passes when no metric failed in that time.
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("an analysis step must last at least 1s"))]
    pub duration: Duration,
}

/// Analysis run against Prometheus during the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Time between measurements (at least 1s).
    #[serde(default = "default_analysis_interval")]
    #[schemars(schema_with = "duration_schema")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("analysis interval must be at least 1s"))]
    pub interval: Duration,
    /// Metrics measured at every interval.
    #[schemars(length(min = 1, max = 10), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<AnalysisMetric>,
}

fn default_analysis_interval() -> Duration {
    std::time::Duration::from_secs(30).into()
}

/// One analysis metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.min) || has(self.max)")
    .message("an analysis metric needs a success condition: min, max or both"))]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
    .message("min must not be above max"))]
pub struct AnalysisMetric {
    /// Metric name, unique in the analysis.
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// PromQL query returning one number. `{{app}}`, `{{version}}`, `{{namespace}}`,
    /// `{{stableVersion}}`, `{{canaryService}}` and `{{stableService}}` (the Services of a routed
    /// rollout, each selecting one version's pods) are replaced before it runs.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The measurement succeeds when the value is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The measurement succeeds when the value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Failed measurements tolerated; one more fails the Release.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: i32,
    /// Inconclusive measurements (query errors, empty results) tolerated; one more pauses the
    /// rollout for a person to decide.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub inconclusive_limit: i32,
    /// Successful measurements needed before the rollout may finish, and during each analysis
    /// step before it may pass: with fewer (every query failing, say) the rollout pauses as
    /// inconclusive instead of promoting blind. `0` turns the requirement off.
    #[serde(default = "default_min_successful")]
    #[schemars(range(min = 0, max = 100))]
    pub min_successful: i32,
}

fn default_min_successful() -> i32 {
    1
}

fn default_inconclusive_limit() -> i32 {
    3
}
