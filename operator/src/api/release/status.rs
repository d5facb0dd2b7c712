//! What a Release reports: its phase, the records of who decided what, what was measured, and
//! the conditions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::conditions_schema;

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
    /// Candidate share of the app's traffic the current step asks for, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<i32>,
    /// The candidate's share of both versions' Ready pods, in percent, during a rollout. Without a
    /// route it is what serves (`weight`); with one, the weight is the route's and the pods only
    /// follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_share: Option<i32>,
    /// Traffic through Gateway API routes (`trafficRouting`): what phaseloop last wrote and how
    /// often someone else rewrote it since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStatus>,
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
    /// Why a `Paused` rollout waits for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseRecord>,
    /// A rollback: in progress while `Progressing`, and once `RolledBack` the record of why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// A revert in progress on a `Live` Release: the previous version is starting and takes all
    /// traffic once it is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverting: Option<RevertProgress>,
    /// The last request of each kind (`promote`, `abort`, `revert`, `override`) and what came of
    /// it: carried out or refused, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["annotation"]))]
    pub requests: Vec<RequestRecord>,
    /// The Release's resourceVersion when phaseloop first saw it: for a Release not edited before,
    /// that of its creation. It orders the app's Releases created within the same second in the
    /// deploy queue (creation times are whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub created_revision: Option<String>,
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

/// The state of a Release's routes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatus {
    /// The candidate's weight the routes carry, as last read, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// When phaseloop last wrote a route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<Time>,
    /// Times another writer changed phaseloop's part of a route since phaseloop last wrote it
    /// (a fight): phaseloop writes again after a backoff that grows with it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewrites: i32,
}

/// Why a rollout is `Paused`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PauseReason {
    /// A pause step without a duration: `kubectl phaseloop promote` goes on.
    PauseStep,
    /// The analysis is inconclusive (too many inconclusive results, or too few successful
    /// measurements before a step that needs them): promote goes on, abort rolls back.
    AnalysisInconclusive,
    /// The analysis failed with `autoRollback: false`: only an override goes on.
    AnalysisFailed,
    /// The candidate missed the progress deadline with `autoRollback: false`: only an override
    /// goes on.
    ProgressDeadlineExceeded,
}

impl PauseReason {
    /// Whether the pause holds a failure (only an override goes past it).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::AnalysisFailed | Self::ProgressDeadlineExceeded)
    }
}

/// Why a rollout is paused, in words.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseRecord {
    pub reason: PauseReason,
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// What started a rollback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RollbackCause {
    /// The analysis failed (with `autoRollback`).
    AnalysisFailed,
    /// The candidate missed the progress deadline (with `autoRollback`).
    ProgressDeadlineExceeded,
    /// A person aborted the rollout (`kubectl phaseloop abort`).
    Aborted,
    /// The Release was deleted while it rolled out: the stable version takes the app back first.
    Deleted,
}

/// A rollback and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    pub cause: RollbackCause,
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// A revert under way: the previous version starting.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertProgress {
    /// The Release reverted to.
    #[schemars(length(max = 253))]
    pub to: String,
    /// When the revert was requested: it must finish within the progress deadline.
    pub since: Time,
}

/// What came of a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RequestOutcome {
    /// Carried out (or under way, for a revert).
    Done,
    /// Refused; the message says why.
    Refused,
}

/// The last request of one kind, as an annotation, and what came of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// The annotation (`phaseloop.dev/promote`, ...).
    #[schemars(length(max = 63))]
    pub annotation: String,
    /// Its value: who asked (the plugin writes the requester's user name).
    #[schemars(length(max = 253))]
    pub by: String,
    /// When it was handled.
    pub at: Time,
    pub outcome: RequestOutcome,
    #[schemars(length(max = 1024))]
    pub message: String,
    /// The annotation is still on the Release: seen again, it is the same request (already
    /// handled), removed rather than acted upon twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Where a test stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TestPhase {
    #[default]
    Running,
    Succeeded,
    Failed,
}

impl TestPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// Verdict of one analysis measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Measurement {
    Successful,
    Failed,
    /// A query error or an empty result: never a failure.
    Inconclusive,
}

impl Measurement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Inconclusive => "Inconclusive",
        }
    }
}

/// Outcome of one test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub name: String,
    pub phase: TestPhase,
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
    /// The verdict of the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<Measurement>,
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

impl crate::api::Reported for ReleaseStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn set_message(&mut self, message: String) {
        self.message = Some(message);
    }
}
