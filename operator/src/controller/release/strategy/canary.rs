//! Canary: `steps` of weights, pauses and analysis; the total is split by the step's weight and
//! the Service selects both versions, so traffic follows the pod ratio.

use super::{Placement, Placing, Strategy};
use crate::{
    api,
    controller::release::{split::split, steps::Step},
};

pub struct Canary;

impl Strategy for Canary {
    fn steps(&self, spec: &api::Strategy) -> Vec<Step> {
        let steps = spec.canary.iter().flat_map(|c| &c.steps);
        steps
            .filter_map(|s| {
                if let Some(w) = s.set_weight {
                    Some(Step::Weight(w))
                } else if let Some(p) = &s.pause {
                    Some(Step::Pause(p.duration.map(Into::into)))
                } else if let Some(h) = &s.set_header_route {
                    Some(Step::HeaderRoute(h.clone()))
                } else if let Some(c) = &s.set_canary_scale {
                    Some(Step::CanaryScale(c.clone()))
                } else {
                    s.analysis.as_ref().map(|a| Step::Analysis(a.duration.into()))
                }
            })
            .collect()
    }

    fn place(&self, at: &Placing<'_>) -> Placement {
        let (total, own, other) = (at.total, at.own, at.other);
        if at.routed {
            return routed(at);
        }
        if at.weight >= 100 {
            // The stable version keeps its pods until the switch: capacity never drops.
            return Placement { candidate: total, stable: other.replicas.clamp(0, total), serves: true };
        }
        let (candidate, stable) = split(total, at.weight);
        // It gives up pods only as the candidate's become Ready.
        let stable = stable.max((total - own.available).clamp(0, other.replicas.max(0)));
        Placement { candidate, stable, serves: true }
    }
}

/// Through a route the weight is exact, whatever the pods: the stable version keeps the app's
/// total until the switch (capacity never drops), the candidate gets its share of it (at least one
/// pod while any traffic, or a header route, reaches it) or what `setCanaryScale` says.
fn routed(at: &Placing<'_>) -> Placement {
    let total = at.total.max(0);
    let share = |percent: i32| ((total as i64 * percent.clamp(0, 100) as i64 + 99) / 100) as i32;
    let by_weight = share(at.weight).max(i32::from(at.weight > 0 || at.header).min(total.max(1)));
    let candidate = match &at.scale {
        Some(s) if s.replicas.is_some() => s.replicas.unwrap_or_default(),
        Some(s) if s.percent.is_some() => share(s.percent.unwrap_or_default()),
        _ => by_weight,
    };
    Placement { candidate, stable: total, serves: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::CanaryScale, controller::release::decide::Deployed};

    fn at(weight: i32, total: i32, scale: Option<CanaryScale>, header: bool) -> Placement {
        let step = Step::Weight(weight);
        let placing = Placing {
            step: &step,
            weight,
            total,
            surge: 1,
            unavailable: 1,
            own: Deployed::default(),
            other: Deployed { replicas: total, available: total, settled: true },
            routed: true,
            scale,
            header,
        };
        Canary.place(&placing)
    }

    #[test]
    fn through_a_route_the_candidate_gets_its_share_of_pods_and_the_stable_version_keeps_its_total() {
        // 4 pods: 1% and 5% still need one pod, 50% two; the stable version keeps all four.
        assert_eq!([1, 5, 50, 100].map(|w| at(w, 4, None, false).candidate), [1, 1, 2, 4]);
        assert!([1, 5, 50, 100].iter().all(|w| at(*w, 4, None, false).stable == 4));
        assert_eq!(at(0, 4, None, false).candidate, 0, "weight 0 and no header route: no pods");
        assert_eq!(at(0, 4, None, true).candidate, 1, "a header route needs a pod at weight 0");
        let scale = |replicas, percent| Some(CanaryScale { replicas, percent, match_traffic_weight: None });
        assert_eq!(at(1, 10, scale(Some(3), None), false).candidate, 3, "setCanaryScale replicas");
        assert_eq!(at(1, 10, scale(None, Some(50)), false).candidate, 5, "setCanaryScale percent");
    }
}
