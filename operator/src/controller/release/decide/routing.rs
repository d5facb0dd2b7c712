//! A Release's routes in its decision (with `trafficRouting.gatewayAPI`): whether they carry what
//! the decision wants, the writes that make them, and the `TrafficRouted` condition. A step waits
//! until its routes carry it (written, and accepted by their Gateways); a rollback, a revert or a
//! deleted candidate moves the routes first and the pods second. A missing route or rule is said
//! (a condition and an Event) and the rollout waits; an owner that keeps rewriting phaseloop's part
//! is written back after a growing backoff, never in a loop.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Draft, Effect};
use crate::{
    api::Reason,
    controller::{
        fields::FIELD_MANAGER,
        release::traffic::{
            Exposure,
            gateway::{self, RoutePatch},
            routing,
        },
    },
};

/// Condition type: the Release's routes carry its traffic (with `trafficRouting`).
pub const TRAFFIC_ROUTED: &str = "TrafficRouted";

/// The longest wait before phaseloop writes back a route someone else rewrote.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

impl Draft<'_> {
    /// Whether the Release's routes carry `exposure` (always, without routes); asks for the writes
    /// that make them.
    pub(super) fn route(&mut self, exposure: &Exposure) -> bool {
        let o = self.o;
        if routing(o.rel).is_none() {
            return true;
        }
        if let Some(why) = &o.routing_off {
            self.routed(false, Reason::RouteNotFound, why.clone());
            return false;
        }
        let port = o.rel.spec.service.as_ref().and_then(|s| s.ports.first()).map_or(80, |p| p.port);
        let (mut in_place, mut accepted, mut weight) = (true, true, None);
        let mut foreign = false;
        let mut patches = Vec::new();
        for (steer, seen) in &o.routes {
            let Some(seen) = seen else {
                let why = format!("HTTPRoute {} not found in namespace {}", steer.name, o.rel.ns());
                self.routed(false, Reason::RouteNotFound, why);
                return false;
            };
            let rules = match gateway::desired_rules(seen, steer, exposure, &o.rel.spec.app, port) {
                Ok(rules) => rules,
                Err(why) => {
                    self.routed(false, Reason::RuleNotFound, why);
                    return false;
                }
            };
            weight = weight.or(gateway::carried_weight(&seen.rules, &o.rel.spec.app));
            if rules != seen.rules {
                in_place = false;
                foreign |= seen.rules_writer.as_deref().is_some_and(|w| w != FIELD_MANAGER);
                let patch =
                    RoutePatch { route: steer.name.clone(), resource_version: seen.resource_version.clone(), rules };
                patches.push(patch);
            } else {
                accepted &= seen.accepted.is_some_and(|g| g >= seen.generation);
            }
        }
        let mut record = self.status.routing.clone().unwrap_or_default();
        record.weight = weight;
        if in_place {
            self.status.routing = Some(record);
            let (ok, reason, msg) = if accepted {
                (true, Reason::Routed, "the routes carry the rollout's traffic".to_string())
            } else {
                (false, Reason::RouteUpdating, "waiting for the Gateway to accept the routes".to_string())
            };
            self.routed(ok, reason, msg);
            return ok && accepted;
        }
        // Someone else wrote phaseloop's part since phaseloop last did: written back after a
        // backoff that doubles with each rewrite.
        let rewritten = foreign && record.written_at.is_some();
        if rewritten {
            let wait = backoff(record.rewrites);
            let since = record.written_at.as_ref().map(|t| self.o.now.0.duration_since(t.0));
            let elapsed = since.and_then(|d| Duration::try_from(d).ok()).unwrap_or(Duration::MAX);
            if elapsed < wait {
                self.status.routing = Some(record.clone());
                let why = format!(
                    "another writer keeps rewriting phaseloop's part of the routes ({} times); written back in {}s",
                    record.rewrites,
                    (wait - elapsed).as_secs()
                );
                self.routed(false, Reason::RouteConflict, why);
                self.requeue(wait - elapsed + Duration::from_secs(1));
                return false;
            }
            record.rewrites += 1;
        }
        record.written_at = Some(Time(self.o.now.0));
        self.status.routing = Some(record.clone());
        for patch in patches {
            self.effects.retain(|e| !matches!(e, Effect::Route(p) if p.route == patch.route));
            self.effects.push(Effect::Route(patch));
        }
        if rewritten {
            let why = format!(
                "another writer rewrote phaseloop's part of the routes ({} times): written back",
                record.rewrites
            );
            self.routed(false, Reason::RouteConflict, why);
        } else {
            self.routed(false, Reason::RouteUpdating, "the routes are being written".into());
        }
        false
    }

    /// Sets `TrafficRouted`; a problem newly there gets its Warning Event.
    fn routed(&mut self, ok: bool, reason: Reason, message: String) {
        let desired = crate::controller::conditions::Desired {
            type_: TRAFFIC_ROUTED,
            status: ok,
            reason: reason.as_str(),
            message: message.clone(),
        };
        let problem = matches!(reason, Reason::RouteNotFound | Reason::RuleNotFound | Reason::RouteConflict);
        if problem && crate::controller::conditions::differs(&self.status.conditions, &desired) {
            self.event(true, reason, message.clone());
        }
        self.set(TRAFFIC_ROUTED, ok, reason, &message);
    }
}

/// The wait before writing back a route rewritten `rewrites` times already: none the first time,
/// then 2 s, 4 s, 8 s, ... up to two minutes.
fn backoff(rewrites: i32) -> Duration {
    if rewrites <= 0 { Duration::ZERO } else { Duration::from_secs(1u64 << rewrites.min(7)).min(MAX_BACKOFF) }
}
