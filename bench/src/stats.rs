//! Summaries of samples, shared by the benchmarks' reports.

use serde::Serialize;

/// p50/p95/max of a sample, in seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles.
    pub fn of(samples: &[f64]) -> Self {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        if v.is_empty() {
            return Summary::default();
        }
        Summary { n: v.len(), p50: rank(0.5), p95: rank(0.95), max: v[v.len() - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((s.n, s.p50, s.p95, s.max), (5, 3.0, 5.0, 5.0));
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
