//! The operator's `/metrics` read as the benchmarks need them: deltas of counters between two
//! scrapes, and histogram quantiles estimated the way PromQL does.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// p50 and p99 of a histogram, estimated the way PromQL's `histogram_quantile` does.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Quantiles {
    pub n: f64,
    pub p50: f64,
    pub p99: f64,
}

/// One scrape of the operator's metrics: series (name and labels, as exposed) to value.
#[derive(Clone, Debug, Default)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Scrape(series)
    }

    /// Sum of the series of `name` whose labels contain every `key="value"` of `with`.
    pub fn sum(&self, name: &str, with: &[&str]) -> f64 {
        self.matching(name, with).map(|(_, v)| v).sum()
    }

    fn matching<'a>(&'a self, name: &'a str, with: &'a [&str]) -> impl Iterator<Item = (&'a String, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.split('{').next() == Some(name) && with.iter().all(|w| k.contains(w)))
            .map(|(k, v)| (k, *v))
    }

    /// The series of `name`, keyed by the value of their label `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.matching(name, &[]).filter_map(|(k, v)| Some((Self::label(k, label)?.to_string(), v))).collect()
    }

    /// Value of the label `label` in a series key.
    fn label<'a>(key: &'a str, label: &str) -> Option<&'a str> {
        let start = key.find(&format!("{label}=\""))? + label.len() + 2;
        Some(&key[start..start + key[start..].find('"')?])
    }

    /// Requests of the operator by verb since `before`, leader election excluded (it renews its
    /// Lease whatever the workload).
    pub fn requests_since(&self, before: &Scrape) -> BTreeMap<String, f64> {
        let mut by_verb = BTreeMap::new();
        for (k, n) in self.requests_by_resource_since(before) {
            *by_verb.entry(k.split(' ').next().unwrap_or_default().to_string()).or_insert(0.0) += n;
        }
        by_verb
    }

    /// Requests since `before` as `verb resource` (Lease excluded), those that were made.
    pub fn requests_by_resource_since(&self, before: &Scrape) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        for (k, v) in self.matching("phaseloop_kube_requests_total", &[]) {
            let resource = Self::label(k, "resource").unwrap_or("other");
            let delta = v - before.0.get(k).copied().unwrap_or(0.0);
            if resource == "leases" || delta == 0.0 {
                continue;
            }
            let verb = Self::label(k, "verb").unwrap_or("other");
            *by.entry(format!("{verb} {resource}")).or_insert(0.0) += delta;
        }
        by
    }

    /// Quantiles of histogram `name` (series with `with`) over the observations since `before`.
    pub fn quantiles_since(&self, before: &Scrape, name: &str, with: &[&str]) -> Quantiles {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // le bits, ordered by value below
        for (k, v) in self.matching(&bucket, with) {
            let Some(le) = Self::label(k, "le") else { continue };
            let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += v - before.0.get(k).copied().unwrap_or(0.0);
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Quantiles {
            n: buckets.last().map(|b| b.1).unwrap_or(0.0),
            p50: histogram_quantile(0.5, &buckets),
            p99: histogram_quantile(0.99, &buckets),
        }
    }
}

/// PromQL's `histogram_quantile` over cumulative buckets `(upper bound, count)` sorted by bound:
/// linear interpolation inside the bucket the rank falls in; the highest finite bound when it
/// falls in `+Inf`.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = count - lower.1;
            return if within > 0.0 { lower.0 + (le - lower.0) * (rank - lower.1) / within } else { le };
        }
        lower = (le, count);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_promql() {
        // 10 observations: 4 ≤ 0.01, 9 ≤ 0.1, 10 ≤ 1.
        let b = [(0.01, 4.0), (0.1, 9.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        assert!((histogram_quantile(0.5, &b) - (0.01 + 0.09 * 1.0 / 5.0)).abs() < 1e-9);
        assert!((histogram_quantile(0.99, &b) - (0.1 + 0.9 * 0.9)).abs() < 1e-9);
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), 0.0);
        // Beyond the last finite bound: that bound, as PromQL answers.
        assert_eq!(histogram_quantile(0.99, &[(0.5, 1.0), (f64::INFINITY, 10.0)]), 0.5);
    }

    #[test]
    fn series_are_read_by_one_of_their_labels() {
        let s = Scrape::parse(
            "# TYPE phaseloop_bookkeeping_entries gauge\n\
             phaseloop_bookkeeping_entries{map=\"applied\"} 3\n\
             phaseloop_bookkeeping_entries{map=\"reconciles\"} 0\n\
             phaseloop_bookkeeping_entries_other{map=\"x\"} 9\n",
        );
        let maps = s.by_label("phaseloop_bookkeeping_entries", "map");
        assert_eq!(maps, BTreeMap::from([("applied".to_string(), 3.0), ("reconciles".to_string(), 0.0)]));
    }
}
