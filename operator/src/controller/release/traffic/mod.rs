//! How the app's traffic reaches its versions: the decision speaks of [`Exposure`] (which versions
//! serve, with which weights, which requests go where); a router carries it out. Adding a way of
//! moving traffic is one new router file here and its table of rows.
//!
//! - [`service`] (always): the Service `<app>` selects the serving pods (both versions during a
//!   rollout, so traffic follows the pod ratio; one version otherwise) and `<app>-preview` the
//!   candidate. Weights are approximate: a version's share is its share of the Ready pods. With a
//!   route, `<app>-stable` and `<app>-canary` select one version each, and `<app>` the stable one.
//! - [`gateway`] (with `trafficRouting.gatewayAPI`): the named rules of the Release's HTTPRoutes
//!   send the step's exact weight to `<app>-canary` and the rest to `<app>-stable`, and a rule of
//!   phaseloop's own sends a header route to the candidate.

pub mod gateway;
pub mod service;

use super::decide::Deployed;
use crate::api::{HeaderRoute, Release, TrafficRouting};

/// What the app's traffic should reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub serving: Serving,
    /// The stable version (behind `<app>-stable`), when there is one.
    pub stable: Option<String>,
    /// The candidate (behind `<app>-canary` and `<app>-preview`), during a rollout.
    pub candidate: Option<String>,
    /// The candidate reachable apart from production traffic (a blue-green preview).
    pub preview: bool,
    /// Requests with this header reach the candidate whatever the weight (with a route).
    pub header: Option<HeaderRoute>,
}

impl Exposure {
    /// Only `release` serves, as the stable version.
    pub fn only(release: impl Into<String>) -> Self {
        let release = release.into();
        Exposure {
            serving: Serving::Only(release.clone()),
            stable: Some(release),
            candidate: None,
            preview: false,
            header: None,
        }
    }

    /// Both versions serve: the candidate `weight` percent.
    pub fn split(stable: impl Into<String>, candidate: impl Into<String>, weight: i32) -> Self {
        let (stable, candidate) = (stable.into(), candidate.into());
        Exposure {
            serving: Serving::Both { stable: stable.clone(), candidate: candidate.clone(), weight },
            stable: Some(stable),
            candidate: Some(candidate),
            preview: false,
            header: None,
        }
    }

    /// The stable version serves alone while the candidate waits (a preview, or the version
    /// before last still going).
    pub fn held(stable: impl Into<String>, candidate: impl Into<String>) -> Self {
        let stable = stable.into();
        Exposure { candidate: Some(candidate.into()), ..Self::only(stable) }
    }

    /// The candidate serves alone, the stable version still there (the switch, before Live).
    pub fn switched(stable: impl Into<String>, candidate: impl Into<String>) -> Self {
        let candidate = candidate.into();
        Exposure {
            serving: Serving::Only(candidate.clone()),
            stable: Some(stable.into()),
            candidate: Some(candidate),
            preview: false,
            header: None,
        }
    }

    /// The candidate's share of the route's weight, in percent.
    pub fn canary_weight(&self) -> i32 {
        match &self.serving {
            Serving::Both { weight, .. } => *weight,
            Serving::Only(r) if self.candidate.as_deref() == Some(r.as_str()) => 100,
            Serving::Only(_) => 0,
        }
    }
}

/// Which versions serve the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// One Release's pods.
    Only(String),
    /// Both versions of a rollout; `weight` is the candidate's share the step asks for, in percent.
    Both { stable: String, candidate: String, weight: i32 },
}

impl Serving {
    /// The versions serving (stable first), whatever the weight.
    pub fn versions(&self) -> (&str, Option<&str>) {
        match self {
            Serving::Only(r) => (r, None),
            Serving::Both { stable, candidate, .. } => (stable, Some(candidate)),
        }
    }

    /// Whether `release` gets any of the app's traffic.
    pub fn includes(&self, release: &str) -> bool {
        match self {
            Serving::Only(r) => r == release,
            Serving::Both { stable, candidate, .. } => stable == release || candidate == release,
        }
    }
}

/// The routes `rel` steers, when it steers any.
pub fn routing(rel: &Release) -> Option<&TrafficRouting> {
    let s = &rel.spec.strategy;
    s.canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .or(s.blue_green.as_ref().and_then(|b| b.traffic_routing.as_ref()))
}

/// The candidate's share of what serves through the Service router, in percent: its share of the
/// Ready pods the Service selects.
pub fn served_weight(serving: &Serving, candidate: &str, own: &Deployed, other: &Deployed) -> i32 {
    match serving {
        Serving::Only(r) if r == candidate => 100,
        Serving::Only(_) => 0,
        Serving::Both { .. } => ready_share(own, other),
    }
}

/// The candidate's share of the Ready pods of both versions, in percent.
pub fn ready_share(own: &Deployed, other: &Deployed) -> i32 {
    let all = own.available.max(0) + other.available.max(0);
    if all == 0 { 0 } else { ((own.available.max(0) as i64 * 100 + all as i64 / 2) / all as i64) as i32 }
}
