//! The decision, one row per behaviour: each builds what a reconcile would observe and checks the
//! decision, and the transitions it made (every phase change is checked against the transition
//! table, `Transition::from`). One file per part of the lifecycle.

mod approvals;
mod live;
mod ready;
mod requests;
mod rollback;
mod rollout;
mod routing;
mod waiting;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

pub(super) use super::*;
pub(super) use crate::{
    api::{
        Promotion, Reason, Release, ReleasePhase, ReleaseStatus, TestPhase,
        annotation::{ABORT, APPROVED_BY, OVERRIDE, PROMOTE, REVERT},
        condition,
    },
    controller::{
        conditions,
        release::{SERVING_FINALIZER, queue::Role, traffic::Serving},
    },
};

const NOW: i64 = 1_800_000_000;

fn t(s: i64) -> Time {
    Time(jiff::Timestamp::from_second(NOW + s).unwrap())
}

fn rel(name: &str, version: &str, strategy: Value, phase: Option<ReleasePhase>) -> Release {
    let mut r = crate::fixtures::release(
        name,
        json!({"version": version, "replicas": 4, "service": {"ports": [{"port": 80}]}, "strategy": strategy}),
    );
    r.metadata.creation_timestamp = Some(t(-1000));
    r.status = phase.map(|p| ReleaseStatus { phase: Some(p), ..Default::default() });
    r
}

fn annotate(mut r: Release, key: &str, value: &str) -> Release {
    r.metadata.annotations.get_or_insert_with(Default::default).insert(key.into(), value.into());
    r
}

fn with_status(mut r: Release, f: impl FnOnce(&mut ReleaseStatus)) -> Release {
    let mut s = r.status.take().unwrap_or_default();
    f(&mut s);
    r.status = Some(s);
    r
}

/// A rollout of `candidate` (already Progressing at `step`, started at t(0)) over the Live `stable`.
fn rolling_out(candidate: Release, step: i32) -> Release {
    with_status(candidate, |s| {
        s.phase = Some(ReleasePhase::Progressing);
        s.current_step = Some(step);
        s.step_started_at = Some(t(0));
        s.stable_release = Some("shop-1".into());
    })
}

fn live(name: &str, version: &str) -> Release {
    rel(name, version, json!({}), Some(ReleasePhase::Live))
}

fn deployed(replicas: i32, available: i32) -> Deployed {
    Deployed { replicas, available, settled: true }
}

struct Case {
    rel: Release,
    role: Role,
    siblings: Vec<Release>,
    stable: Option<Release>,
    own: Deployed,
    other: Deployed,
    others_up: Vec<(String, Deployed)>,
    now: i64,
    measurements: Option<Vec<(String, Option<f64>)>>,
    promotion: Option<Promotion>,
    upstream: Option<Vec<Release>>,
    tests: Option<TestsObserved>,
    namespace_terminating: bool,
    routes: Vec<(crate::api::RouteRef, Option<crate::controller::release::traffic::gateway::RouteSeen>)>,
    canary_endpoints: i32,
}

impl Case {
    fn active(rel: Release, stable: Release) -> Self {
        Case {
            siblings: vec![stable.clone(), rel.clone()],
            rel,
            role: Role::Active,
            stable: Some(stable),
            own: Deployed::default(),
            other: deployed(4, 4),
            others_up: vec![],
            now: 10,
            measurements: None,
            promotion: None,
            upstream: None,
            tests: None,
            namespace_terminating: false,
            routes: vec![],
            canary_endpoints: 0,
        }
    }

    fn stable(rel: Release, siblings: Vec<Release>) -> Self {
        Case {
            siblings,
            rel,
            role: Role::Stable,
            stable: None,
            own: deployed(4, 4),
            other: Deployed::default(),
            others_up: vec![],
            now: 10,
            measurements: None,
            promotion: None,
            upstream: None,
            tests: None,
            namespace_terminating: false,
            routes: vec![],
            canary_endpoints: 0,
        }
    }

    fn decide(&self) -> Outcome {
        let o = Observation {
            rel: &self.rel,
            now: t(self.now),
            tier: None,
            role: self.role.clone(),
            siblings: &self.siblings,
            stable: self.stable.as_ref(),
            promotion: self.promotion.as_ref(),
            own: self.own,
            other: self.other,
            others_up: self.others_up.clone(),
            tests: self.tests.clone(),
            measurements: self.measurements.clone(),
            upstream: self.upstream.as_deref(),
            scaling: Default::default(),
            clash: None,
            namespace_terminating: self.namespace_terminating,
            routes: self.routes.clone(),
            routing_off: None,
            canary_endpoints: self.canary_endpoints,
        };
        decide(&o)
    }

    /// The next reconcile after `out`: the Release as the decision left it, its workloads settled
    /// at what was asked (Ready at once).
    fn after(&mut self, out: &Outcome) {
        self.rel = super::chain::as_left(&self.rel, out);
        let name = self.rel.name_any();
        self.siblings =
            self.siblings.iter().map(|s| if s.name_any() == name { self.rel.clone() } else { s.clone() }).collect();
        let own = super::chain::scaled_by(self.own, &out.effects, &name);
        self.own = Deployed { available: own.replicas, settled: true, ..own };
    }
}

fn scales(out: &Outcome) -> BTreeMap<String, i32> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scale { release, replicas } => Some((release.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

fn serving(out: &Outcome) -> Option<Serving> {
    exposure(out).map(|x| x.serving)
}

fn exposure(out: &Outcome) -> Option<crate::controller::release::traffic::Exposure> {
    out.effects.iter().rev().find_map(|e| match e {
        Effect::Expose(x) => Some(x.clone()),
        _ => None,
    })
}

/// Both versions serve (whatever the weight asked).
fn both(out: &Outcome) -> bool {
    matches!(serving(out), Some(Serving::Both { .. }))
}

fn condition<'a>(out: &'a Outcome, type_: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::find(&out.status.conditions, type_).unwrap_or_else(|| panic!("no {type_} in {:?}", out.status))
}

fn events(out: &Outcome) -> Vec<Reason> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

const CANARY: fn() -> Value = || json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
