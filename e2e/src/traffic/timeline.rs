//! The timeline a [`super::Monitor`] recorded, and the assertions tests make over all of it.

use std::time::Duration;

use phaseloop::api::ReleasePhase;

use super::Sample;

/// The samples of a monitor, with the moments marked.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    pub marks: Vec<(String, Duration)>,
}

impl Timeline {
    /// The samples from the first one with a Ready endpoint on: the app serves from there.
    pub fn serving(&self) -> &[Sample] {
        let first = self.samples.iter().position(|s| s.ready() > 0).unwrap_or(self.samples.len());
        &self.samples[first..]
    }

    /// The fewest Ready endpoints seen once the app served.
    pub fn min_ready(&self) -> usize {
        self.serving().iter().map(Sample::ready).min().unwrap_or(0)
    }

    /// Fails when the Service ever had no Ready endpoint once the app served.
    pub fn assert_never_empty(&self, what: &str) {
        if let Some(s) = self.serving().iter().find(|s| s.ready() == 0) {
            panic!("{what}: the Service had no Ready endpoint at {:?}\n{}", s.at, self.around(s.at));
        }
        assert!(!self.serving().is_empty(), "{what}: the app never served\n{}", self.tail(20));
    }

    /// Fails when the Service's Ready endpoints ever ran more than two versions: only the stable
    /// version and the candidate may serve.
    pub fn assert_at_most_two_versions(&self) {
        // `?`: an endpoint whose pod the monitor's pod cache has not seen yet (a brand-new pod).
        let versions = |s: &Sample| s.endpoints.iter().filter(|(v, n)| *v != "?" && **n > 0).count();
        if let Some(s) = self.samples.iter().find(|s| versions(s) > 2) {
            panic!("more than two versions served at {:?}\n{}", s.at, self.around(s.at));
        }
    }

    /// Fails unless `check` holds at every sample where `during` holds (and there is one).
    pub fn assert_while(&self, what: &str, during: impl Fn(&Sample) -> bool, check: impl Fn(&Sample) -> bool) {
        let mut seen = false;
        for s in self.samples.iter().filter(|s| during(s)) {
            seen = true;
            assert!(check(s), "{what}: broken at {:?}\n{}", s.at, self.around(s.at));
        }
        assert!(seen, "{what}: the condition it applies to never held\n{}", self.tail(30));
    }

    /// The first moment at or after `from` where `pred` holds.
    pub fn first_after(&self, from: Duration, pred: impl Fn(&Sample) -> bool) -> Option<Duration> {
        self.samples.iter().find(|s| s.at >= from && pred(s)).map(|s| s.at)
    }

    /// Seconds from `from` until `pred` first held, and held for good (to the end of the timeline).
    pub fn settled_after(&self, from: Duration, pred: impl Fn(&Sample) -> bool) -> Option<f64> {
        let later: Vec<&Sample> = self.samples.iter().filter(|s| s.at >= from).collect();
        let last_bad = later.iter().rposition(|s| !pred(s));
        let first_good = match last_bad {
            None => later.first()?,
            Some(i) => later.get(i + 1)?,
        };
        Some((first_good.at - from).as_secs_f64())
    }

    /// The moment a mark was made.
    pub fn mark(&self, what: &str) -> Duration {
        self.marks.iter().find(|(m, _)| m == what).map(|(_, at)| *at).unwrap_or_else(|| panic!("no mark {what}"))
    }

    /// Checks `release`'s reported weight against the share of Ready endpoints that run
    /// `version`, wherever both have held still for a second (status and endpoints are updated
    /// by different controllers, a moment apart): within one point of rounding. Returns how many
    /// such stretches were checked (at least one).
    pub fn assert_weight_is_what_serves(&self, release: &str, version: &str) -> usize {
        let key = |s: &Sample| (s.releases.get(release).and_then(|r| r.weight), s.endpoints.clone());
        let mut checked = 0;
        let mut start = 0;
        for i in 1..=self.samples.len() {
            let same = i < self.samples.len() && key(&self.samples[i]) == key(&self.samples[start]);
            if same {
                continue;
            }
            let (first, last) = (&self.samples[start], &self.samples[i - 1]);
            let rolling = matches!(first.phase(release), Some(ReleasePhase::Progressing | ReleasePhase::Paused));
            if rolling && last.at - first.at >= Duration::from_secs(1) && first.ready() > 0 {
                let (weight, endpoints) = key(first);
                let share = *endpoints.get(version).unwrap_or(&0) as f64 * 100.0 / first.ready() as f64;
                let weight = weight.unwrap_or(-1);
                assert!(
                    (share - weight as f64).abs() <= 1.0,
                    "{release} reports weight {weight} while {share:.1}% of the Ready endpoints run {version}, {:?} to {:?}\n{}",
                    first.at,
                    last.at,
                    self.around(first.at)
                );
                checked += 1;
            }
            start = i;
        }
        assert!(checked > 0, "{release}: no stretch where weight and endpoints held still\n{}", self.tail(40));
        checked
    }

    /// With a route: fails when the route ever sent requests (a weight above 0, or a header rule)
    /// to a backend Service with no Ready endpoint, once the app served through it.
    pub fn assert_routes_reach_ready_pods(&self) {
        let from = self.samples.iter().position(|s| s.route.values().any(|w| *w > 0)).unwrap_or(self.samples.len());
        let mut checked = 0;
        for s in &self.samples[from..] {
            for (svc, eps) in &s.backends {
                let sends = s.weight_of(svc) > 0 || s.header_backends.contains(svc);
                let ready: usize = eps.values().sum();
                if sends && ready == 0 {
                    panic!(
                        "the route sent requests to {svc}, which had no Ready endpoint, at {:?}\n{}",
                        s.at,
                        self.around(s.at)
                    );
                }
            }
            checked += 1;
        }
        assert!(checked > 0, "the route never carried traffic\n{}", self.tail(20));
    }

    /// With a route: from `from` on, whenever the pods of `version` dropped below what they were,
    /// the route sent nothing to them any more (it moved first, the pods second). Returns the
    /// moment of the first drop.
    pub fn assert_route_moved_before_pods_of(&self, version: &str, from: Duration) -> Duration {
        let later: Vec<&Sample> = self.samples.iter().filter(|s| s.at >= from).collect();
        let pods = |s: &Sample| s.pods.get(version).copied().unwrap_or(0);
        let mut most = later.first().map(|s| pods(s)).unwrap_or(0);
        let mut first_drop = None;
        for s in later {
            if pods(s) < most {
                let reached = s.routed_to(version);
                assert!(
                    reached.is_empty(),
                    "the pods of {version} went ({} of {most}) while {reached:?} still sent requests to them, at {:?}\n{}",
                    pods(s),
                    s.at,
                    self.around(s.at)
                );
                first_drop.get_or_insert(s.at);
            }
            most = most.max(pods(s));
        }
        first_drop.unwrap_or_else(|| panic!("the pods of {version} never went\n{}", self.tail(30)))
    }

    fn around(&self, at: Duration) -> String {
        let lines: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.at + Duration::from_secs(2) >= at && s.at <= at + Duration::from_secs(1))
            .map(describe)
            .collect();
        lines.join("\n")
    }

    /// The last `n` samples, described (for failure messages).
    pub fn tail(&self, n: usize) -> String {
        let from = self.samples.len().saturating_sub(n);
        self.samples[from..].iter().map(describe).collect::<Vec<_>>().join("\n")
    }
}

fn describe(s: &Sample) -> String {
    let releases: Vec<String> = s
        .releases
        .iter()
        .map(|(n, r)| format!("{n}={}/{}", r.phase.map(|p| p.as_str()).unwrap_or("-"), r.weight.unwrap_or(-1)))
        .collect();
    let route = if s.backends.is_empty() {
        String::new()
    } else {
        format!(" route {:?} headers {:?} backends {:?}", s.route, s.header_backends, s.backends)
    };
    format!(
        "{:>7.2}s endpoints {:?} ready pods {:?} {}{route}",
        s.at.as_secs_f64(),
        s.endpoints,
        s.ready_pods,
        releases.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{super::ReleaseView, *};

    fn s(at_ms: u64, endpoints: &[(&str, usize)], weight: Option<i32>) -> Sample {
        let releases = BTreeMap::from([(
            "web-2".to_string(),
            ReleaseView { phase: Some(ReleasePhase::Paused), weight, step: Some(0), failures: 0, version: "2".into() },
        )]);
        Sample {
            at: Duration::from_millis(at_ms),
            endpoints: endpoints.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            ready_pods: BTreeMap::new(),
            pods: BTreeMap::new(),
            releases,
            route: BTreeMap::new(),
            header_backends: vec![],
            backends: BTreeMap::new(),
        }
    }

    /// A routed sample: the canary's weight, its pods, and 2 Ready endpoints behind each backend.
    fn r(at_ms: u64, canary_weight: i64, canary_pods: usize) -> Sample {
        let mut sample = s(at_ms, &[("1", 2)], None);
        sample.route =
            BTreeMap::from([("web-stable".into(), 100 - canary_weight), ("web-canary".into(), canary_weight)]);
        sample.pods = BTreeMap::from([("1".into(), 2), ("2".into(), canary_pods)]);
        sample.backends = BTreeMap::from([
            ("web-stable".into(), BTreeMap::from([("1".into(), 2)])),
            ("web-canary".into(), BTreeMap::from([("2".into(), canary_pods.min(2))])),
        ]);
        sample
    }

    fn timeline(samples: Vec<Sample>) -> Timeline {
        Timeline { samples, marks: vec![("revert".into(), Duration::from_millis(200))] }
    }

    #[test]
    fn zero_endpoints_before_the_app_serves_do_not_count_and_after_do() {
        let t = timeline(vec![s(0, &[], None), s(100, &[("1", 2)], None), s(200, &[("1", 1), ("2", 1)], None)]);
        t.assert_never_empty("ok");
        assert_eq!(t.min_ready(), 2);
        let gap = timeline(vec![s(0, &[("1", 2)], None), s(100, &[("1", 0)], None)]);
        assert!(std::panic::catch_unwind(|| gap.assert_never_empty("gap")).is_err());
    }

    #[test]
    fn settling_is_measured_to_the_last_change() {
        let t = timeline(vec![
            s(0, &[("2", 2)], None),
            s(300, &[("1", 1), ("2", 1)], None),
            s(400, &[("1", 2)], None),
            s(500, &[("1", 1), ("2", 1)], None),
            s(600, &[("1", 2)], None),
            s(700, &[("1", 2)], None),
        ]);
        let from = t.mark("revert");
        assert_eq!(t.settled_after(from, |s| s.only("1")), Some(0.4));
        assert_eq!(t.first_after(from, |s| s.only("1")), Some(Duration::from_millis(400)));
    }

    #[test]
    fn the_route_must_leave_a_version_before_its_pods_go() {
        let good = timeline(vec![r(0, 50, 2), r(100, 0, 2), r(200, 0, 1), r(300, 0, 0)]);
        assert_eq!(good.assert_route_moved_before_pods_of("2", Duration::ZERO), Duration::from_millis(200));
        let bad = timeline(vec![r(0, 50, 2), r(100, 50, 1), r(200, 0, 0)]);
        assert!(std::panic::catch_unwind(|| bad.assert_route_moved_before_pods_of("2", Duration::ZERO)).is_err());
    }

    #[test]
    fn a_weighted_backend_without_ready_endpoints_is_a_failure() {
        let good = timeline(vec![r(0, 0, 0), r(100, 50, 2)]);
        good.assert_routes_reach_ready_pods();
        let mut empty = r(100, 50, 2);
        empty.backends.insert("web-canary".into(), BTreeMap::new());
        let bad = timeline(vec![r(0, 0, 0), empty]);
        assert!(std::panic::catch_unwind(|| bad.assert_routes_reach_ready_pods()).is_err());
    }

    #[test]
    fn the_weight_must_match_the_endpoint_share_where_both_hold_still() {
        let good: Vec<Sample> = (0..15).map(|i| s(i * 100, &[("1", 3), ("2", 1)], Some(25))).collect();
        assert_eq!(timeline(good).assert_weight_is_what_serves("web-2", "2"), 1);
        let bad: Vec<Sample> = (0..15).map(|i| s(i * 100, &[("1", 3), ("2", 1)], Some(50))).collect();
        let t = timeline(bad);
        assert!(std::panic::catch_unwind(|| t.assert_weight_is_what_serves("web-2", "2")).is_err());
    }
}
