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
                } else {
                    s.analysis.as_ref().map(|a| Step::Analysis(a.duration.into()))
                }
            })
            .collect()
    }

    fn place(&self, at: &Placing<'_>) -> Placement {
        let (total, own, other) = (at.total, at.own, at.other);
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
