//! How the app's traffic reaches its versions: the decision speaks of [`Exposure`] (which versions
//! serve, with which weights, and whether the candidate has a private preview); a router carries it
//! out. Adding a way of moving traffic is one new router file here and its table of rows.
//!
//! - [`service`]: the Service `<app>` selects the serving pods (both versions during a rollout, so
//!   traffic follows the pod ratio; one version otherwise) and `<app>-preview` selects the
//!   candidate. Weights are approximate: a version's share is its share of the Ready pods.

pub mod service;

use super::decide::Deployed;

/// What the app's traffic should reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub serving: Serving,
    /// The candidate reachable apart from production traffic (a blue-green preview).
    pub preview: bool,
}

impl Exposure {
    /// Only `release` serves.
    pub fn only(release: impl Into<String>) -> Self {
        Exposure { serving: Serving::Only(release.into()), preview: false }
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

/// The candidate's share of what serves, in percent, as the router makes it: for the Service
/// router, its share of the Ready pods the Service selects.
pub fn served_weight(serving: &Serving, candidate: &str, own: &Deployed, other: &Deployed) -> i32 {
    match serving {
        Serving::Only(r) if r == candidate => 100,
        Serving::Only(_) => 0,
        Serving::Both { .. } => {
            let all = own.available.max(0) + other.available.max(0);
            if all == 0 { 0 } else { ((own.available.max(0) as i64 * 100 + all as i64 / 2) / all as i64) as i32 }
        }
    }
}
