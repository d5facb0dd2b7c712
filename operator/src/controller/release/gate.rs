//! The promotion rule of the gate, from the Releases' history: the same app version must have been
//! Live in the upstream Environment for at least `soak`. A version that was Live long enough and
//! has since been superseded there counts; one that was reverted or rolled back does not (it was
//! found bad).

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{Release, ReleasePhase};

/// How long each upstream Release of the version was Live, longest first: from its `Live` phase
/// time until now (still Live) or until it was superseded.
fn live_spans(upstream: &[Release], app: &str, version: &str, now: Timestamp) -> Vec<(Duration, bool)> {
    let mut spans: Vec<(Duration, bool)> = upstream
        .iter()
        .filter(|r| r.spec.app == app && r.spec.version == version)
        .filter_map(|r| {
            let s = r.status.as_ref()?;
            let since = s.phase_times.get(ReleasePhase::Live.as_str())?.0;
            let (until, live) = match s.phase? {
                ReleasePhase::Live => (now, true),
                ReleasePhase::Superseded => (s.phase_times.get(ReleasePhase::Superseded.as_str())?.0, false),
                _ => return None,
            };
            Some((Duration::try_from(until.duration_since(since)).unwrap_or_default(), live))
        })
        .collect();
    spans.sort_by_key(|(d, _)| std::cmp::Reverse(*d));
    spans
}

/// What the promotion rule still waits for, with when to look again; `None` when it is met.
/// `upstream` is `None` when the upstream Environment does not exist.
pub fn soak_wait(
    upstream_name: &str,
    upstream: Option<&[Release]>,
    app: &str,
    version: &str,
    soak: Duration,
    now: Timestamp,
) -> Option<(String, Duration)> {
    let what = format!("{app} {version}");
    let Some(upstream) = upstream else {
        let why = format!("promotion.from names Environment {upstream_name}, which does not exist");
        return Some((why, Duration::from_secs(30)));
    };
    let spans = live_spans(upstream, app, version, now);
    match spans.first() {
        Some((d, _)) if *d >= soak => None,
        Some((d, true)) => {
            let left = soak - *d;
            Some((
                format!("{what} soaking in {upstream_name}: {}s left", left.as_secs()),
                left + Duration::from_secs(1),
            ))
        }
        Some((d, false)) => Some((
            format!(
                "waiting for {what} to be Live in {upstream_name} for {}s (it was Live {}s before being superseded)",
                soak.as_secs(),
                d.as_secs()
            ),
            Duration::from_secs(30),
        )),
        None => Some((format!("waiting for {what} to be Live in {upstream_name}"), Duration::from_secs(15))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn upstream(version: &str, phases: &[(ReleasePhase, i64)]) -> Release {
        let spec = serde_json::from_value(serde_json::json!({"app": "shop", "version": version,
            "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}))
        .unwrap();
        let mut r = Release::new(version, spec);
        let mut status = crate::api::ReleaseStatus::default();
        for (p, at) in phases {
            status.phase_times.insert(p.as_str().into(), Time(t(*at)));
            status.phase = Some(*p);
        }
        r.status = Some(status);
        r
    }

    #[test]
    fn a_version_live_upstream_for_the_soak_time_passes() {
        let up = [upstream("2", &[(ReleasePhase::Live, 0)])];
        let soak = Duration::from_secs(60);
        let wait = soak_wait("staging", Some(&up), "shop", "2", soak, t(30)).unwrap();
        assert!(wait.0.contains("30s left"), "{wait:?}");
        assert_eq!(soak_wait("staging", Some(&up), "shop", "2", soak, t(60)), None);
    }

    #[test]
    fn a_version_superseded_upstream_after_soaking_still_counts() {
        let up = [
            upstream("2", &[(ReleasePhase::Live, 0), (ReleasePhase::Superseded, 120)]),
            upstream("3", &[(ReleasePhase::Live, 120)]),
        ];
        assert_eq!(soak_wait("staging", Some(&up), "shop", "2", Duration::from_secs(60), t(500)), None);
    }

    #[test]
    fn a_version_superseded_too_early_or_reverted_does_not_count() {
        let soak = Duration::from_secs(60);
        let short = [upstream("2", &[(ReleasePhase::Live, 0), (ReleasePhase::Superseded, 10)])];
        let wait = soak_wait("staging", Some(&short), "shop", "2", soak, t(500)).unwrap();
        assert!(wait.0.contains("Live 10s before being superseded"), "{wait:?}");
        let reverted = [upstream("2", &[(ReleasePhase::Live, 0), (ReleasePhase::Reverted, 300)])];
        assert!(soak_wait("staging", Some(&reverted), "shop", "2", soak, t(500)).is_some());
        let other = [upstream("1", &[(ReleasePhase::Live, 0)])];
        assert!(soak_wait("staging", Some(&other), "shop", "2", soak, t(500)).unwrap().0.contains("to be Live"));
        assert!(soak_wait("staging", None, "shop", "2", soak, t(500)).unwrap().0.contains("does not exist"));
    }
}
