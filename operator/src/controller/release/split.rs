//! Splitting an app's total replicas between the candidate and the stable Release.
//!
//! Canary weight is the candidate's share of the app's total replicas and the Service selects both,
//! so traffic follows the pod ratio. The autoscaler owns the total; the rollout owns the weight;
//! this function is the only place the two meet, so they never fight over `replicas`.

/// Replicas of (candidate, stable) for `total` replicas at `weight` percent.
///
/// A positive weight gives the candidate at least one replica (a 5% canary of 4 pods still needs a
/// pod); a weight below 100 leaves the stable at least one replica while it exists, so traffic
/// never drops to a single untested version before promotion.
pub fn split(total: i32, weight: i32) -> (i32, i32) {
    let total = total.max(0);
    let weight = weight.clamp(0, 100);
    if total == 0 {
        return (0, 0);
    }
    let mut candidate = ((total as i64 * weight as i64 + 99) / 100) as i32; // ceil
    if weight > 0 {
        candidate = candidate.max(1);
    }
    if weight < 100 && total > 1 {
        candidate = candidate.min(total - 1);
    }
    let stable = if weight < 100 { (total - candidate).max(1) } else { 0 };
    (candidate, stable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_weight() {
        assert_eq!(split(10, 0), (0, 10));
        assert_eq!(split(10, 10), (1, 9));
        assert_eq!(split(10, 25), (3, 7));
        assert_eq!(split(10, 50), (5, 5));
        assert_eq!(split(10, 100), (10, 0));
        assert_eq!(split(4, 25), (1, 3));
    }

    #[test]
    fn a_small_canary_still_gets_a_pod_and_stable_keeps_one() {
        assert_eq!(split(4, 5), (1, 3));
        assert_eq!(split(2, 99), (1, 1));
        assert_eq!(split(1, 50), (1, 1), "one replica: both run until promotion");
    }

    #[test]
    fn zero_total_is_zero() {
        assert_eq!(split(0, 50), (0, 0));
        assert_eq!(split(-3, 50), (0, 0));
    }

    #[test]
    fn never_loses_a_replica_and_stays_in_bounds() {
        for total in 0..60 {
            for weight in 0..=100 {
                let (c, s) = split(total, weight);
                assert!(c >= 0 && s >= 0);
                assert!(c + s >= total, "total {total} weight {weight}: {c}+{s}");
                assert!(c + s <= total.max(1) + 1, "at most one extra pod (the 1-replica canary)");
                if weight == 100 {
                    assert_eq!((c, s), (total, 0));
                }
                if weight == 0 {
                    assert_eq!((c, s), (0, total));
                }
            }
        }
    }

    #[test]
    fn the_candidate_share_never_decreases_as_the_weight_grows() {
        for total in 1..40 {
            let mut last = 0;
            for weight in 0..=100 {
                let (c, _) = split(total, weight);
                assert!(c >= last);
                last = c;
            }
        }
    }
}
