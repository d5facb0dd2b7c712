//! Rollout strategies, one file each. A strategy says which steps a rollout takes before the
//! common end (weight 100, then the switch) and how the app's pods are placed between the stable
//! version and the candidate at each of those steps; the switch, rollbacks and the revert window
//! are the same for every strategy (`decide/`).
//!
//! Adding a strategy: a variant of `api::StrategyType`, a file here implementing [`Strategy`], its
//! arm in [`of`], and its rows in `decide/tests/`.

mod blue_green;
mod canary;
mod rolling;

use super::{decide::Deployed, steps::Step};
use crate::api::{self, StrategyType};

/// What a strategy places pods from: one step of a rollout that has a stable version to replace.
#[derive(Clone, Debug)]
pub struct Placing<'a> {
    pub step: &'a Step,
    /// The weight the step asks for, in percent.
    pub weight: i32,
    /// The app's total replicas.
    pub total: i32,
    /// The resolved `maxSurge` (rounded up) and `maxUnavailable` (rounded down).
    pub surge: i32,
    pub unavailable: i32,
    /// The candidate's workload and the stable version's, as observed.
    pub own: Deployed,
    pub other: Deployed,
    /// Traffic goes through a route: exact weights, pods apart from them.
    pub routed: bool,
    /// The candidate's scale apart from its weight (a `setCanaryScale` in force).
    pub scale: Option<crate::api::CanaryScale>,
    /// A header route sends requests to the candidate whatever the weight.
    pub header: bool,
}

/// Replicas of both versions at a step, and whether the candidate gets production traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub candidate: i32,
    pub stable: i32,
    /// The candidate serves beside the stable version (else only behind a private preview).
    pub serves: bool,
}

/// A way of rolling out.
pub trait Strategy: Sync {
    /// The steps before the common end (weight 100, then the switch).
    fn steps(&self, _spec: &api::Strategy) -> Vec<Step> {
        Vec::new()
    }

    /// Both versions' replicas at a step before the switch.
    fn place(&self, at: &Placing<'_>) -> Placement;

    /// Whether the pods the step waits for are Ready.
    fn pods_ready(&self, at: &Placing<'_>, placement: &Placement) -> bool {
        at.own.ready(placement.candidate)
    }

    /// Whether the candidate has a private preview Service until the switch.
    fn previews(&self) -> bool {
        false
    }
}

/// The strategy of `type_`.
pub fn of(type_: StrategyType) -> &'static dyn Strategy {
    match type_ {
        StrategyType::Rolling => &rolling::Rolling,
        StrategyType::Canary => &canary::Canary,
        StrategyType::BlueGreen => &blue_green::BlueGreen,
    }
}
