//! The `Release` kind: one version of one app, tested, gated, rolled out and operated.
// `printcolumn(...)` repeats `type_ = ...` by design; clippy mistakes that for a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::{
        apis::meta::v1::{Condition, Time},
        util::intstr::IntOrString,
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, conditions_schema, duration_schema};

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
    #[x_kube(validation = Rule::new("!self.endsWith('-preview')").message("app must not end in -preview: <app>-preview names the preview Service of app <app>"))]
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

fn default_replicas() -> i32 {
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
pub struct Canary {
    /// Steps run in order; after the last one the candidate is promoted to 100%.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()")
        .message("canary setWeight values must not decrease from one step to the next"))]
    pub steps: Vec<CanaryStep>,
}

/// One canary step: exactly one of `setWeight`, `pause`, `analysis`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) == 1")
    .message("a canary step sets exactly one of setWeight, pause, analysis"))]
pub struct CanaryStep {
    /// Candidate share of the app's total replicas, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
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
    #[schemars(schema_with = "super::common::optional_duration_schema")]
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
    /// PromQL query returning one number. `{{app}}`, `{{version}}`, `{{namespace}}` and
    /// `{{stableVersion}}` are replaced before it runs.
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

/// Autoscaling of an app's total replicas (HPA algorithm, load from Prometheus).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("scaling.minReplicas must not be above scaling.maxReplicas"))]
pub struct Scaling {
    /// Fewest replicas. Zero (scale to zero) is not allowed in a production Environment.
    #[serde(default = "default_replicas")]
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
    #[schemars(schema_with = "super::common::optional_duration_schema")]
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

/// Observed state of a Release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// Where the Release is in the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReleasePhase>,
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Human-readable summary of what the Release is doing or waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Position in the app's deploy queue while `Pending`/`Queued` (1 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Index of the canary step being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// When the current step started (for timed pauses and step analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Share of the app's Ready serving pods (the endpoints of the Service `<app>`) that run this
    /// version, in percent: what serves, not what the step asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Candidate share of the app's total replicas the current step asks for, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// Total replicas of the app (candidate + stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas of this Release's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_replicas: Option<i32>,
    /// Replicas of the previous Release's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_replicas: Option<i32>,
    /// The Release this one replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_release: Option<String>,
    /// Who approved the Release and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
    /// Who let the rollout go on past a failed analysis or a missed deadline (with
    /// `autoRollback: false`), when, and what was overridden.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<OverrideRecord>,
    /// Outcome of each test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tests: Vec<TestResult>,
    /// Running tally of each analysis metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub analysis: Vec<AnalysisResult>,
    /// State of the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// When the previous version stops being kept warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_window_ends_at: Option<Time>,
    /// When each phase was entered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub phase_times: BTreeMap<String, Time>,
    /// Standard conditions: `Ready` (Live: the app serves from this Release), `Tested`,
    /// `Approved`, `Progressing`, `Available`, `RevertReady`, `Degraded`, `Deleting`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Phase of a Release.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReleasePhase {
    Pending,
    Testing,
    AwaitingApproval,
    Progressing,
    Paused,
    Live,
    Superseded,
    Reverted,
    RolledBack,
    Failed,
}

impl ReleasePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Testing => "Testing",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Live => "Live",
            Self::Superseded => "Superseded",
            Self::Reverted => "Reverted",
            Self::RolledBack => "RolledBack",
            Self::Failed => "Failed",
        }
    }
    /// Phases a Release never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Superseded | Self::Reverted | Self::RolledBack | Self::Failed)
    }
}

/// Who approved a Release, and when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    #[schemars(length(max = 253))]
    pub approved_by: String,
    pub approved_at: Time,
}

/// An override of a failed verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideRecord {
    #[schemars(length(max = 253))]
    pub by: String,
    pub at: Time,
    /// The verdict that was overridden.
    #[schemars(length(max = 1024))]
    pub verdict: String,
}

/// Outcome of one test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub name: String,
    /// `Running`, `Succeeded` or `Failed`.
    pub phase: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Job of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Running tally of one analysis metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    pub name: String,
    /// Last measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// `Successful`, `Failed` or `Inconclusive`: the verdict of the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    pub successes: i32,
    pub failures: i32,
    pub inconclusive: i32,
    /// Successful measurements since the current step started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_successes: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// State of the autoscaler of a Release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Last value read from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<f64>,
    /// Total replicas the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the last decision was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Consecutive failed queries.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// When the load was last read (successfully or not): the next decision is due `interval` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// Recent raw recommendations, kept as long as the longest stabilization window: the
    /// autoscaler's memory lives in status, so a restarted operator decides exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub recommendations: Vec<ScalingRecommendation>,
    /// Recent changes of the replica count, kept as long as the longest rate-limit period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub scale_events: Vec<ScaleEvent>,
}

/// One raw recommendation of the autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRecommendation {
    pub time: Time,
    pub replicas: i32,
}

/// One change of the replica count made by the autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    pub time: Time,
    pub from: i32,
    pub to: i32,
}

impl super::Reported for ReleaseStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn set_message(&mut self, message: String) {
        self.message = Some(message);
    }
}

impl Release {
    /// The namespace of the Release (the API server always sets it: the kind is namespaced).
    pub fn ns(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }
}
