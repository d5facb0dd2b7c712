//! Rolling: pods are handed over as a Deployment's rolling update does (`maxSurge`,
//! `maxUnavailable`); the Service selects both versions, so traffic follows the pod ratio.

use super::{Placement, Placing, Strategy};
use crate::controller::release::handover;

pub struct Rolling;

impl Strategy for Rolling {
    fn place(&self, at: &Placing<'_>) -> Placement {
        let (candidate, stable) = handover::step(at.total, at.surge, at.unavailable, at.own.side(), at.other.side());
        Placement { candidate, stable, serves: true }
    }

    /// Every pod of the candidate: the handover is done.
    fn pods_ready(&self, at: &Placing<'_>, _: &Placement) -> bool {
        at.own.ready(at.total)
    }
}
