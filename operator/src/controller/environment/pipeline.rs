//! `kubectl phaseloop pipeline <app>`: each Environment of the promotion pipelines an app goes
//! through, upstream first, with the version Live there and the one waiting, and for what. A pure
//! function of the Environments and Releases the plugin lists.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use kube::ResourceExt;

use super::namespace_of;
use crate::{
    api::{Environment, PromotionMode, Release, ReleasePhase},
    controller::release::gate::soak_wait,
};

/// One Environment of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub environment: String,
    /// `promotion.from`, and whether requests are opened automatically.
    pub from: Option<(String, bool)>,
    /// The version Live there.
    pub live: Option<String>,
    /// The version on its way there, and what it waits for.
    pub waiting: Option<(String, String)>,
}

/// Hops from `env` up `promotion.from` to an Environment promoting from nowhere (a cycle or an
/// unknown name ends the walk).
fn depth(env: &Environment, by_name: &BTreeMap<String, &Environment>) -> usize {
    let mut seen = vec![env.name_any()];
    let mut next = from(env);
    while let Some(name) = next {
        if seen.contains(&name) || seen.len() > 16 {
            break;
        }
        seen.push(name.clone());
        next = by_name.get(&name).and_then(|e| from(e));
    }
    seen.len() - 1
}

fn from(env: &Environment) -> Option<String> {
    env.spec.promotion.as_ref()?.from.clone()
}

/// The stages of `app`: every Environment that has a Release of it or is linked to another by
/// `promotion.from`, upstream first.
pub fn stages(app: &str, envs: &[Environment], releases: &[Release], now: Timestamp) -> Vec<Stage> {
    let by_name: BTreeMap<String, &Environment> = envs.iter().map(|e| (e.name_any(), e)).collect();
    let of = |e: &Environment| -> Vec<&Release> {
        let ns = namespace_of(e);
        releases.iter().filter(|r| r.spec.app == app && r.namespace().as_deref() == Some(ns.as_str())).collect()
    };
    let linked = |e: &Environment| from(e).is_some() || envs.iter().any(|d| from(d) == Some(e.name_any()));
    let mut chosen: Vec<&Environment> = envs.iter().filter(|e| linked(e) || !of(e).is_empty()).collect();
    chosen.sort_by_key(|e| (depth(e, &by_name), e.name_any()));
    chosen
        .into_iter()
        .map(|e| {
            let mine = of(e);
            let phase = |r: &Release| r.status.as_ref().and_then(|s| s.phase);
            let live = mine.iter().find(|r| phase(r) == Some(ReleasePhase::Live)).map(|r| r.spec.version.clone());
            let mut coming: Vec<&&Release> =
                mine.iter().filter(|r| phase(r).is_none_or(|p| !p.is_terminal() && p != ReleasePhase::Live)).collect();
            coming.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let waiting = match coming.last() {
                Some(r) => {
                    let s = r.status.clone().unwrap_or_default();
                    let phase = s.phase.map(|p| p.as_str()).unwrap_or("Pending");
                    let why = s.message.map(|m| format!("{phase}: {m}")).unwrap_or_else(|| phase.to_string());
                    Some((r.spec.version.clone(), why))
                }
                None => upstream_soaking(app, e, &by_name, releases, live.as_deref(), now),
            };
            let automatic = e.spec.promotion.as_ref().is_some_and(|p| p.mode == PromotionMode::Automatic);
            Stage { environment: e.name_any(), from: from(e).map(|f| (f, automatic)), live, waiting }
        })
        .collect()
}

/// With automatic promotion: the version Live upstream and not here yet, still soaking there.
fn upstream_soaking(
    app: &str,
    env: &Environment,
    by_name: &BTreeMap<String, &Environment>,
    releases: &[Release],
    live_here: Option<&str>,
    now: Timestamp,
) -> Option<(String, String)> {
    let p = env.spec.promotion.as_ref().filter(|p| p.mode == PromotionMode::Automatic)?;
    let up_name = p.from.as_deref()?;
    let up_ns = namespace_of(by_name.get(up_name)?);
    let upstream: Vec<Release> =
        releases.iter().filter(|r| r.namespace().as_deref() == Some(up_ns.as_str())).cloned().collect();
    let up_live = upstream
        .iter()
        .find(|r| r.spec.app == app && r.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live))?;
    let version = up_live.spec.version.as_str();
    if Some(version) == live_here {
        return None;
    }
    let soak = p.soak.map(Into::into).unwrap_or(Duration::ZERO);
    let (why, _) = soak_wait(up_name, Some(&upstream), app, version, soak, now)?;
    Some((version.to_string(), why))
}

/// The stages as the plugin prints them.
pub fn render(app: &str, stages: &[Stage]) -> String {
    let mut out = format!("{:<24} {:<30} {:<14} WAITING\n", "ENVIRONMENT", "FROM", &format!("LIVE ({app})"));
    for s in stages {
        let from = match &s.from {
            Some((f, true)) => format!("{f} (automatic)"),
            Some((f, false)) => f.clone(),
            None => "-".into(),
        };
        let waiting = s.waiting.as_ref().map(|(v, why)| format!("{v}: {why}")).unwrap_or_else(|| "-".into());
        out += &format!("{:<24} {:<30} {:<14} {waiting}\n", s.environment, from, s.live.as_deref().unwrap_or("-"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{api::ReleaseStatus, fixtures};

    fn rel(ns: &str, version: &str, phase: Option<ReleasePhase>, message: Option<&str>, live_at: i64) -> Release {
        let mut r = fixtures::release(&format!("shop-{version}"), json!({"app": "shop", "version": version}));
        r.metadata.namespace = Some(ns.into());
        let mut s = ReleaseStatus { phase, message: message.map(Into::into), ..Default::default() };
        s.phase_times.insert("Live".into(), fixtures::time(live_at));
        r.status = Some(s);
        r
    }

    #[test]
    fn each_environment_upstream_first_with_its_live_version_and_what_waits() {
        let envs = vec![
            fixtures::env("production", json!({"promotion": {"from": "staging", "mode": "Automatic", "soak": "1h"}})),
            fixtures::env("dev", json!({})),
            fixtures::env("staging", json!({"promotion": {"from": "dev", "mode": "Automatic"}})),
            fixtures::env("unrelated", json!({})),
        ];
        let releases = vec![
            rel("dev", "3", Some(ReleasePhase::Live), None, 0),
            rel("staging", "3", Some(ReleasePhase::Live), None, 0),
            rel("production", "2", Some(ReleasePhase::Live), None, 0),
            rel("dev", "4", Some(ReleasePhase::Progressing), Some("step 1/2: 25%"), 0),
        ];
        let s = stages("shop", &envs, &releases, fixtures::time(600).0);
        let names: Vec<&str> = s.iter().map(|s| s.environment.as_str()).collect();
        assert_eq!(names, ["dev", "staging", "production"], "upstream first; unrelated left out");
        assert_eq!(s[0].live.as_deref(), Some("3"));
        assert_eq!(s[0].waiting, Some(("4".into(), "Progressing: step 1/2: 25%".into())));
        assert_eq!(s[1].waiting, None, "staging has what dev has Live");
        let (version, why) = s[2].waiting.clone().unwrap();
        assert_eq!(version, "3");
        assert!(why.contains("soaking in staging: 3000s left"), "{why}");
        let text = render("shop", &s);
        assert!(text.contains("staging (automatic)"), "{text}");
    }
}
