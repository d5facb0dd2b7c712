//! Handing an app's pods over from one version to another without losing capacity: the rolling
//! update of a Deployment (`maxSurge`, `maxUnavailable`), applied between two Deployments.
//!
//! A Rolling rollout hands over from the stable version to the candidate; a rollback or a cold
//! revert hands back the same way. Each call looks at what is observed now and says how many
//! replicas each side should have; called again on every Deployment event, it converges like the
//! Deployment controller does (`pkg/controller/deployment/rolling.go`):
//! - the incoming side grows while the app's pods stay within `total + surge`;
//! - the outgoing side shrinks only as far as `total - unavailable` pods stay available.

/// Replicas and available pods of one side, as observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// Replicas the Deployment asks for.
    pub replicas: i32,
    /// Pods ready (available) now.
    pub available: i32,
}

/// Replicas of (incoming, outgoing) for the next move of a handover of `total` pods.
///
/// `surge` and `unavailable` are counts (the resolved `maxSurge`, rounded up, and
/// `maxUnavailable`, rounded down); when both are zero one pod may be unavailable, as with a
/// Deployment, or nothing could ever move.
pub fn step(total: i32, surge: i32, unavailable: i32, incoming: Side, outgoing: Side) -> (i32, i32) {
    let total = total.max(0);
    let surge = surge.max(0);
    let unavailable = if surge == 0 && unavailable <= 0 { 1 } else { unavailable.max(0) };
    // Grow the incoming side within the surge budget.
    let room = (total + surge - incoming.replicas - outgoing.replicas).max(0);
    let incoming_replicas = (incoming.replicas + room).min(total).max(incoming.replicas.min(total));
    // Shrink the outgoing side: pods that are not available never count, and available ones may go
    // while at least `total - unavailable` stay available (Deployment's maxScaledDown).
    let min_available = (total - unavailable).max(0);
    let unready_incoming = (incoming.replicas - incoming.available).max(0);
    let may_remove =
        (incoming.replicas + outgoing.replicas - min_available - unready_incoming).clamp(0, outgoing.replicas);
    (incoming_replicas, outgoing.replicas - may_remove)
}

/// Whether the handover is complete: the incoming side has every pod available and the outgoing
/// side none left.
pub fn done(total: i32, incoming: Side, outgoing: Side) -> bool {
    incoming.replicas >= total && incoming.available >= total && outgoing.replicas == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(replicas: i32, available: i32) -> Side {
        Side { replicas, available }
    }

    /// Runs a handover to the end: each round applies the decision, then `ready` new pods of each
    /// side become available (at most up to its replicas); scale-downs take effect at once.
    fn simulate(total: i32, surge: i32, unavailable: i32, incoming_ready: bool) -> Vec<(Side, Side)> {
        let (mut i, mut o) = (side(0, 0), side(total, total));
        let mut trace = vec![(i, o)];
        for _ in 0..200 {
            let (ri, ro) = step(total, surge, unavailable, i, o);
            i.replicas = ri;
            o.replicas = ro;
            o.available = o.available.min(ro);
            i.available = i.available.min(ri);
            trace.push((i, o));
            if incoming_ready && i.available < i.replicas {
                i.available += 1;
                trace.push((i, o));
            }
            if done(total, i, o) {
                break;
            }
        }
        trace
    }

    #[test]
    fn a_handover_never_exceeds_the_surge_nor_drops_below_the_floor() {
        for total in 1..12 {
            for (surge, unavailable) in [(1, 0), (0, 1), (1, 1), (2, 0), (3, 2), (0, 0)] {
                let trace = simulate(total, surge, unavailable, true);
                let floor = total - if surge == 0 && unavailable == 0 { 1 } else { unavailable };
                for (i, o) in &trace {
                    assert!(i.replicas + o.replicas <= total + surge, "{total} {surge} {unavailable}: {trace:?}");
                    assert!(i.available + o.available >= floor.min(total), "{total} {surge} {unavailable}: {trace:?}");
                }
                let (i, o) = trace.last().unwrap();
                assert!(done(total, *i, *o), "{total} {surge} {unavailable} did not finish: {trace:?}");
            }
        }
    }

    #[test]
    fn an_incoming_side_that_never_becomes_ready_takes_nothing_from_the_outgoing_one() {
        let trace = simulate(4, 1, 0, false);
        let (i, o) = trace.last().unwrap();
        assert_eq!((i.replicas, o.replicas, o.available), (1, 4, 4), "{trace:?}");
        // With maxUnavailable one pod may go, but no more while nothing new is ready.
        let (_, out) = step(4, 1, 1, side(1, 0), side(4, 4));
        assert_eq!(out, 3);
        let (_, out) = step(4, 1, 1, side(2, 0), side(3, 3));
        assert_eq!(out, 3);
    }

    #[test]
    fn the_deployment_defaults_hand_over_a_quarter_at_a_time() {
        // 8 pods, 25% / 25%: surge 2, unavailable 2.
        assert_eq!(step(8, 2, 2, side(0, 0), side(8, 8)), (2, 6));
        assert_eq!(step(8, 2, 2, side(2, 2), side(6, 6)), (4, 4));
        assert_eq!(step(8, 2, 2, side(8, 8), side(0, 0)), (8, 0));
    }

    #[test]
    fn unready_outgoing_pods_may_go_at_once() {
        // Half of the outgoing side is not ready (a crash-looping stable, say): those go first.
        let (_, out) = step(4, 0, 1, side(0, 0), side(4, 2));
        assert_eq!(out, 3);
        // As the Deployment controller counts: the outgoing pods are all counted against the floor.
        let (_, out) = step(4, 1, 0, side(1, 1), side(4, 2));
        assert_eq!(out, 3);
    }
}
