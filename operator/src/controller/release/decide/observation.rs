//! What a reconcile observed, the whole input of [`super::decide`]: gathered by
//! `reconcile/observe.rs` from the caches, the API server and Prometheus, before anything is
//! written.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{Promotion, Release, ReleaseStatus, RouteRef, TestPhase, Tier},
    controller::release::{handover::Side, queue::Role, traffic::gateway::RouteSeen},
};

/// A version's workload as observed, before this reconcile applies anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deployed {
    /// Replicas its spec asks for.
    pub replicas: i32,
    /// Pods available (Ready) now.
    pub available: i32,
    /// The workload's controller has acted on its latest spec (`observedGeneration`).
    pub settled: bool,
}

impl Deployed {
    /// At least `want` pods available for the latest spec.
    pub fn ready(&self, want: i32) -> bool {
        self.settled && self.available >= want
    }

    pub(crate) fn side(&self) -> Side {
        Side { replicas: self.replicas, available: self.available }
    }
}

/// Where the tests of a Release run.
#[derive(Clone, Debug, PartialEq)]
pub enum TestGround {
    /// The tests cannot run, and why: `testEnvironment` is set but the namespace has no Environment
    /// to branch from, or a name the tests need is taken by something else.
    Refused(String),
    /// The ephemeral test Environment does not exist yet.
    Missing,
    Provisioning,
    /// Ready in this namespace.
    Ready(String),
}

/// What the Test phase observed.
#[derive(Clone, Debug, PartialEq)]
pub struct TestsObserved {
    pub ground: TestGround,
    /// The one-replica candidate the tests run against is Ready.
    pub candidate_ready: bool,
    /// Outcome of each test's latest attempt (`None`: no Job yet), by test name.
    pub jobs: BTreeMap<String, Option<TestPhase>>,
}

/// What the autoscaler observed (only the owner of the app's total reads the load).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalingObserved {
    /// The namespace's Environment sleeps: the app is held at zero.
    pub sleeping: bool,
    /// Another autoscaler (an HPA, KEDA's) targets one of the app's workloads, in words.
    pub conflict: Option<String>,
    /// The load read from Prometheus, when a reading was due (`Err`: the read failed).
    pub reading: Option<Result<f64, String>>,
}

/// Everything [`super::decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub rel: &'a Release,
    pub now: Time,
    /// The tier of the namespace's Environment, when there is one.
    pub tier: Option<Tier>,
    pub role: Role,
    /// The app's Releases in the namespace, this one included.
    pub siblings: &'a [Release],
    /// The Live Release an active one replaces.
    pub stable: Option<&'a Release>,
    /// The namespace Environment's promotion rules.
    pub promotion: Option<&'a Promotion>,
    /// This Release's workload.
    pub own: Deployed,
    /// The other version's workload: the stable one (active), or the previous one (Live).
    pub other: Deployed,
    /// Workloads of the app's other versions that still have pods (neither this one nor `other`),
    /// by Release name.
    pub others_up: Vec<(String, Deployed)>,
    /// The Test phase, when this Release still has tests to pass.
    pub tests: Option<TestsObserved>,
    /// Analysis values read this reconcile (`None` when no reading was due), by metric name.
    pub measurements: Option<Vec<(String, Option<f64>)>>,
    /// The upstream Environment's Releases, for `promotion.from` (`None`: it does not exist).
    pub upstream: Option<&'a [Release]>,
    pub scaling: ScalingObserved,
    /// The HTTPRoutes the Release steers (`trafficRouting.gatewayAPI`), each as read (`None`: it
    /// does not exist); empty when it steers none.
    pub routes: Vec<(RouteRef, Option<RouteSeen>)>,
    /// Why routes cannot be read at all (the operator runs without Gateway API routing).
    pub routing_off: Option<String>,
    /// Ready endpoints of the candidate's pods behind `<app>-canary`, what a Gateway sends the
    /// canary's share to (read for a routed Release that rolls out; 0 otherwise).
    pub canary_endpoints: i32,
    /// A generated name held by something that is not this Release's, in words.
    pub clash: Option<String>,
    /// The namespace is being deleted (looked at only for a deleted Release holding its finalizer).
    pub namespace_terminating: bool,
}

impl Observation<'_> {
    /// The status the decision starts from: the stored one, or a new Release's empty one.
    pub fn stored(&self) -> ReleaseStatus {
        self.rel.status.clone().unwrap_or_default()
    }
}
