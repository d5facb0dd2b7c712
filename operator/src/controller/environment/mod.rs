//! The Environment controller: keeps a namespace and everything in it that is not the app itself
//! true to the Environment's spec, expires it at its TTL, puts it to sleep when idle, and deletes it
//! (namespace first) when the Environment goes.
//!
//! Pure parts: [`validate`], [`desired`] (child objects), [`infrastructure`] (component objects and
//! readiness), [`desired_status`] (phase and conditions). API I/O: [`reconcile`].

pub mod desired;
pub mod infrastructure;
mod reconcile;
pub mod sleep;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

pub use reconcile::{NAME, controller, run};

use super::conditions::{self, Desired};
use crate::api::{
    ComponentStatus, Environment, EnvironmentPhase, EnvironmentSpec, EnvironmentStatus, condition, reason,
};

/// Finalizer that makes deletion wait for the namespace to be gone.
pub const FINALIZER: &str = "phaseloop.dev/environment";
/// Annotation with an RFC 3339 time that moves `expiresAt` later (`kubectl phaseloop env extend`).
pub const EXTEND_ANNOTATION: &str = "phaseloop.dev/expires-at";

/// Spec problems the API server cannot see: each message says what to change.
/// Why an Environment may not have the Pod Security level it asks for: looser than `max`, what the
/// operator's configuration allows (`--max-pod-security`).
pub fn pod_security_problem(asked: Option<crate::api::PodSecurity>, max: crate::api::PodSecurity) -> Option<String> {
    let asked = asked.filter(|a| *a > max)?;
    Some(format!(
        "spec.podSecurity {} is looser than this operator allows ({}): an operator admin can allow it \
         (--max-pod-security, chart value environments.maxPodSecurity)",
        asked.as_str(),
        max.as_str()
    ))
}

pub fn validate(name: &str, spec: &EnvironmentSpec) -> Vec<String> {
    use crate::api::{below, least};
    let mut problems = crate::api::duration_problems(spec);
    problems.extend(spec.ttl.and_then(|t| below("spec.ttl", t, least::LIFETIME)));
    problems.extend(spec.sleep_after.and_then(|t| below("spec.sleepAfter", t, least::LIFETIME)));
    let restart = spec.seed.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.restart_policy.as_deref());
    if let Some(policy) = restart.filter(|p| !matches!(*p, "Never" | "OnFailure")) {
        problems.push(format!(
            "spec.seed.template.spec.restartPolicy: {policy} is not allowed for a Job; use Never or OnFailure"
        ));
    }
    if spec.from.as_deref() == Some(name) {
        problems.push("spec.from names this Environment itself; branch from another Environment".to_string());
    }
    if spec.promotion.as_ref().and_then(|p| p.from.as_deref()) == Some(name) {
        problems.push("spec.promotion.from names this Environment itself".to_string());
    }
    // Quantities are int-or-string in the schema; the ResourceQuota and LimitRange would be
    // refused later (with a 500 from server-side apply), so they are checked here.
    let quota = spec.quota.as_ref();
    let defaults = spec.defaults.as_ref();
    let amounts = [
        ("spec.quota.cpu", quota.and_then(|q| q.cpu.as_ref())),
        ("spec.quota.memory", quota.and_then(|q| q.memory.as_ref())),
        ("spec.defaults.requests.cpu", defaults.and_then(|d| d.requests.as_ref()).and_then(|r| r.cpu.as_ref())),
        ("spec.defaults.requests.memory", defaults.and_then(|d| d.requests.as_ref()).and_then(|r| r.memory.as_ref())),
        ("spec.defaults.limits.cpu", defaults.and_then(|d| d.limits.as_ref()).and_then(|r| r.cpu.as_ref())),
        ("spec.defaults.limits.memory", defaults.and_then(|d| d.limits.as_ref()).and_then(|r| r.memory.as_ref())),
    ];
    for (path, value) in amounts {
        if let Some(q) = value.filter(|q| !is_quantity(&q.0)) {
            problems.push(format!("{path}: {:?} is not a quantity (e.g. 500m, 2, 4Gi)", q.0));
        }
    }
    problems
}

/// Kubernetes' quantity syntax: `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, and not negative.
pub fn is_quantity(s: &str) -> bool {
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, rest) = s.split_at(number_end);
    let digits = number.trim_start_matches('+');
    let number_ok = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
    let suffix_end = rest.find(|c: char| !"eEinumkKMGTP".contains(c)).unwrap_or(rest.len());
    let exponent = rest[suffix_end..].trim_start_matches(['+', '-']);
    number_ok && digits.chars().any(|c| c.is_ascii_digit()) && exponent.chars().all(|c| c.is_ascii_digit())
}

/// The namespace an Environment owns.
pub fn namespace_of(env: &Environment) -> String {
    env.spec.namespace.clone().unwrap_or_else(|| env.name_any())
}

/// When a `ttl` Environment deletes itself: `creationTimestamp + ttl`, moved later by the extension
/// annotation, and never earlier than it was (`previous`, the expiry in status): an extension, once
/// made, holds even if the annotation is later set to an earlier time or removed.
pub fn expires_at(env: &Environment, previous: Option<&Time>) -> Option<Time> {
    let created = env.metadata.creation_timestamp.as_ref()?;
    let ttl: std::time::Duration = env.spec.ttl?.into();
    let base = created.0.checked_add(jiff::SignedDuration::try_from(ttl).ok()?).ok()?;
    let extended = env.annotations().get(EXTEND_ANNOTATION).and_then(|v| v.parse::<jiff::Timestamp>().ok());
    let latest = [extended, previous.map(|p| p.0)].into_iter().flatten().fold(base, jiff::Timestamp::max);
    Some(Time(latest))
}

/// The branching cycle `name` is part of, if any, as the names around it (`x`, `y`, ..., `x`):
/// following `from` from `name` comes back to it. `from_of` looks an Environment's `from` up.
pub fn parent_cycle(name: &str, from_of: impl Fn(&str) -> Option<String>) -> Option<Vec<String>> {
    let mut path = vec![name.to_string()];
    let mut at = name.to_string();
    // A chain longer than the number of Environments must loop; 256 bounds a pathological cache.
    for _ in 0..256 {
        let next = from_of(&at)?;
        if next == name {
            path.push(next);
            return Some(path);
        }
        if path.contains(&next) {
            // A cycle further up that this Environment only leads into: its members report it.
            return None;
        }
        path.push(next.clone());
        at = next;
    }
    None
}

/// The app versions Live among `releases` (one per app), for `status.apps`.
pub fn live_apps(releases: &[crate::api::Release]) -> Vec<crate::api::LiveApp> {
    let mut apps: Vec<crate::api::LiveApp> = releases
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(crate::api::ReleasePhase::Live))
        .map(|r| crate::api::LiveApp {
            app: r.spec.app.clone(),
            version: r.spec.version.clone(),
            release: r.name_any(),
        })
        .collect();
    apps.sort_by(|a, b| a.app.cmp(&b.app));
    apps.dedup_by(|a, b| a.app == b.app);
    apps
}

/// Progress of the seed Job.
#[derive(Clone, Debug, PartialEq)]
pub enum SeedState {
    /// The spec has no seed.
    NotConfigured,
    /// Waiting for the infrastructure to become ready.
    Waiting,
    Running,
    Succeeded,
    Failed(String),
}

/// What reconcile observed and did, the input of [`desired_status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Why provisioning cannot start (spec problems, a foreign namespace, a missing parent).
    pub blocked: Option<(&'static str, String)>,
    pub components: Vec<ComponentStatus>,
    /// Components refused, with the reason.
    pub refused: Vec<(String, String)>,
    pub seed: SeedState,
    pub sleeping: bool,
}

impl Observation {
    pub fn blocked(reason: &'static str, message: String) -> Self {
        Observation {
            blocked: Some((reason, message)),
            components: vec![],
            refused: vec![],
            seed: SeedState::Waiting,
            sleeping: false,
        }
    }
}

/// The status for `env` given what reconcile observed. Fields this does not own (branch snapshot,
/// sleep bookkeeping) are carried over from `base`.
pub fn desired_status(
    env: &Environment,
    mut base: EnvironmentStatus,
    obs: &Observation,
    now: &Time,
) -> EnvironmentStatus {
    let generation = env.metadata.generation;
    base.observed_generation = generation;
    base.namespace = Some(namespace_of(env));
    base.expires_at = expires_at(env, base.expires_at.as_ref());
    if obs.blocked.is_none() {
        base.components = obs.components.clone();
        base.seeded = obs.seed == SeedState::Succeeded || base.seeded;
    }
    let infra_ready = obs.blocked.is_none() && obs.refused.is_empty() && obs.components.iter().all(|c| c.ready);
    let seed_done = matches!(obs.seed, SeedState::NotConfigured | SeedState::Succeeded) || base.seeded;
    let seed_failed = match &obs.seed {
        SeedState::Failed(m) => Some(m.clone()),
        _ => None,
    };

    let degraded = if let Some((reason, message)) = &obs.blocked {
        Some((*reason, message.clone()))
    } else if !obs.refused.is_empty() {
        let list: Vec<String> = obs.refused.iter().map(|(c, why)| format!("component {c}: {why}")).collect();
        Some(("ComponentRefused", list.join("; ")))
    } else {
        seed_failed.clone().map(|m| ("SeedFailed", m))
    };
    let phase = if degraded.is_some() {
        EnvironmentPhase::Failed
    } else if obs.sleeping {
        EnvironmentPhase::Sleeping
    } else if infra_ready && seed_done {
        EnvironmentPhase::Ready
    } else {
        EnvironmentPhase::Provisioning
    };
    base.phase = Some(phase);

    let infra = infrastructure_condition(obs, infra_ready, degraded.as_ref().map(|d| d.1.as_str()));
    let seeded = seeded_condition(&obs.seed, base.seeded);
    let ready = Desired {
        type_: condition::READY,
        status: phase == EnvironmentPhase::Ready,
        reason: phase.as_str(),
        message: match phase {
            EnvironmentPhase::Ready => "namespace, infrastructure and seed are ready".into(),
            EnvironmentPhase::Sleeping => "workloads scaled to zero after sleepAfter without activity".into(),
            _ => degraded.as_ref().map(|d| d.1.clone()).unwrap_or_else(|| "provisioning".into()),
        },
    };
    let degraded = match degraded {
        Some((reason, message)) => Desired { type_: condition::DEGRADED, status: true, reason, message },
        None => Desired {
            type_: condition::DEGRADED,
            status: false,
            reason: reason::AS_EXPECTED,
            message: "spec is valid".into(),
        },
    };
    for c in [ready, infra, seeded, degraded] {
        conditions::upsert(&mut base.conditions, c, generation, now);
    }
    base
}

/// `InfrastructureReady`: every component ready, one refused (`refusal`, the Degraded message), or
/// those still coming up.
fn infrastructure_condition(obs: &Observation, infra_ready: bool, refusal: Option<&str>) -> Desired<'static> {
    let (status, reason, message) = if infra_ready {
        (true, "AllReady", format!("{} component(s) ready", obs.components.len()))
    } else if !obs.refused.is_empty() {
        (false, "ComponentRefused", refusal.unwrap_or_default().to_string())
    } else {
        let not_ready: Vec<&str> = obs.components.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
        (false, "NotReady", format!("waiting for: {}", not_ready.join(", ")))
    };
    Desired { type_: condition::INFRASTRUCTURE_READY, status, reason, message }
}

/// `Seeded`, from the seed Job this reconcile saw and whether it ever succeeded.
fn seeded_condition(seed: &SeedState, seeded: bool) -> Desired<'static> {
    let (status, reason, message) = match (seed, seeded) {
        (_, true) => (true, "Succeeded", "seed Job succeeded".to_string()),
        (SeedState::NotConfigured, _) => (true, "NoSeed", "no seed configured".into()),
        (SeedState::Failed(m), _) => (false, "Failed", m.clone()),
        (SeedState::Running, _) => (false, "Running", "seed Job running".into()),
        _ => (false, "Waiting", "waiting for the infrastructure".into()),
    };
    Desired { type_: condition::SEEDED, status, reason, message }
}

#[cfg(test)]
mod quantity_tests {
    use super::is_quantity;

    #[test]
    fn quantities_as_kubernetes_parses_them() {
        for ok in ["1", "500m", "2.5", "4Gi", "128Mi", "1e3", "0"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["lots", "", "-1", "1 Gi", "Gi", ".", "4GB"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tier;

    fn env(name: &str, spec: EnvironmentSpec) -> Environment {
        let mut e = crate::fixtures::env(name, serde_json::to_value(spec).unwrap());
        e.metadata.generation = Some(4);
        e
    }

    fn now() -> Time {
        Time("2026-11-26T10:05:00Z".parse().unwrap())
    }

    fn obs(components: Vec<(&str, bool)>, seed: SeedState) -> Observation {
        Observation {
            blocked: None,
            components: components
                .into_iter()
                .map(|(n, ready)| ComponentStatus { name: n.into(), ready, ..Default::default() })
                .collect(),
            refused: vec![],
            seed,
            sleeping: false,
        }
    }

    fn status(e: &Environment, o: &Observation) -> EnvironmentStatus {
        desired_status(e, EnvironmentStatus::default(), o, &now())
    }

    #[test]
    fn provisioning_until_components_and_seed_are_done() {
        let e = env("shop-dev", EnvironmentSpec::default());
        let s = status(&e, &obs(vec![("db", false)], SeedState::Waiting));
        assert_eq!(s.phase, Some(EnvironmentPhase::Provisioning));
        assert!(!conditions::is_true(&s.conditions, condition::INFRASTRUCTURE_READY));
        let s = status(&e, &obs(vec![("db", true)], SeedState::Running));
        assert_eq!(s.phase, Some(EnvironmentPhase::Provisioning));
        assert!(conditions::is_true(&s.conditions, condition::INFRASTRUCTURE_READY));
        let s = status(&e, &obs(vec![("db", true)], SeedState::Succeeded));
        assert_eq!(s.phase, Some(EnvironmentPhase::Ready));
        assert!(s.seeded && conditions::is_true(&s.conditions, condition::READY));
        assert_eq!(s.namespace.as_deref(), Some("shop-dev"));
        assert_eq!(s.observed_generation, Some(4));
    }

    #[test]
    fn without_seed_or_components_it_is_ready_at_once() {
        let s = status(&env("a", EnvironmentSpec::default()), &obs(vec![], SeedState::NotConfigured));
        assert_eq!(s.phase, Some(EnvironmentPhase::Ready));
        assert_eq!(conditions::find(&s.conditions, condition::SEEDED).unwrap().reason, "NoSeed");
    }

    #[test]
    fn a_refused_component_fails_the_environment_with_the_reason() {
        let mut o = obs(vec![("db", true), ("bad", false)], SeedState::Waiting);
        o.refused = vec![("bad".into(), "ClusterRole is cluster-scoped".into())];
        let s = status(&env("a", EnvironmentSpec::default()), &o);
        assert_eq!(s.phase, Some(EnvironmentPhase::Failed));
        let d = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "ComponentRefused"));
        assert!(d.message.contains("component bad: ClusterRole"), "{}", d.message);
        // The good component's readiness is still reported.
        assert!(s.components.iter().any(|c| c.name == "db" && c.ready));
    }

    #[test]
    fn a_blocked_environment_keeps_its_last_components() {
        let base = EnvironmentStatus {
            components: vec![ComponentStatus { name: "db".into(), ready: true, ..Default::default() }],
            ..Default::default()
        };
        let e = env("loop", EnvironmentSpec { from: Some("loop".into()), ..Default::default() });
        let o = Observation::blocked(reason::INVALID_SPEC, validate("loop", &e.spec).join("; "));
        let s = desired_status(&e, base, &o, &now());
        assert_eq!(s.phase, Some(EnvironmentPhase::Failed));
        assert_eq!(s.components.len(), 1);
        let d = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!(d.reason, reason::INVALID_SPEC);
        assert!(d.message.contains("spec.from"));
    }

    #[test]
    fn sleeping_is_its_own_phase() {
        let mut o = obs(vec![("db", true)], SeedState::NotConfigured);
        o.sleeping = true;
        assert_eq!(status(&env("a", EnvironmentSpec::default()), &o).phase, Some(EnvironmentPhase::Sleeping));
    }

    #[test]
    fn expiry_is_creation_plus_ttl_and_can_only_be_extended() {
        let mut e = env(
            "pr-1",
            EnvironmentSpec { tier: Tier::Preview, ttl: Some("4h".parse().unwrap()), ..Default::default() },
        );
        let at = |s: &str| Time(s.parse().unwrap());
        assert_eq!(expires_at(&e, None), Some(at("2026-11-26T14:00:00Z")));
        e.annotations_mut().insert(EXTEND_ANNOTATION.into(), "2026-11-26T18:00:00Z".into());
        let extended = expires_at(&e, None);
        assert_eq!(extended, Some(at("2026-11-26T18:00:00Z")));
        e.annotations_mut().insert(EXTEND_ANNOTATION.into(), "2026-11-26T11:00:00Z".into());
        assert_eq!(expires_at(&e, None), Some(at("2026-11-26T14:00:00Z")), "never before creation + ttl");
        // The expiry moves earlier: the defect. It keeps the extension already made.
        assert_eq!(expires_at(&e, extended.as_ref()), Some(at("2026-11-26T18:00:00Z")), "never earlier than it was");
        e.annotations_mut().remove(EXTEND_ANNOTATION);
        assert_eq!(expires_at(&e, extended.as_ref()), Some(at("2026-11-26T18:00:00Z")));
        e.spec.ttl = None;
        assert_eq!(expires_at(&e, extended.as_ref()), None);
    }

    #[test]
    fn branching_cycles_of_any_length_are_found_by_their_members() {
        fn graph(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> + Copy {
            move |n: &str| pairs.iter().find(|(a, _)| *a == n).map(|(_, b)| b.to_string())
        }
        let two = graph(&[("x", "y"), ("y", "x")]);
        assert_eq!(parent_cycle("x", two), Some(vec!["x".into(), "y".into(), "x".into()]));
        assert_eq!(parent_cycle("y", two).map(|p| p.len()), Some(3));
        let three = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "f")]);
        assert_eq!(parent_cycle("c", three), Some(vec!["c".into(), "a".into(), "b".into(), "c".into()]));
        assert_eq!(parent_cycle("d", three), None, "d leads into the cycle but is not in it");
        assert_eq!(parent_cycle("e", three), None);
        assert_eq!(parent_cycle("f", three), None);
    }

    #[test]
    fn live_apps_lists_one_live_version_per_app() {
        let rel = |name: &str, app: &str, phase: crate::api::ReleasePhase| {
            let spec: crate::api::ReleaseSpec = serde_json::from_value(serde_json::json!({
                "app": app, "version": name, "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}
            }))
            .unwrap();
            let mut r = crate::api::Release::new(name, spec);
            r.status = Some(crate::api::ReleaseStatus { phase: Some(phase), ..Default::default() });
            r
        };
        use crate::api::ReleasePhase::*;
        let apps = live_apps(&[rel("2", "shop", Live), rel("1", "shop", Superseded), rel("9", "cart", Progressing)]);
        assert_eq!(apps.len(), 1);
        assert_eq!((apps[0].app.as_str(), apps[0].version.as_str(), apps[0].release.as_str()), ("shop", "2", "2"));
    }

    #[test]
    fn desired_status_is_a_fixed_point() {
        let e = env("stable", EnvironmentSpec::default());
        let o = obs(vec![("db", true)], SeedState::Succeeded);
        let first = desired_status(&e, EnvironmentStatus::default(), &o, &now());
        let later = Time("2026-11-26T11:00:00Z".parse().unwrap());
        assert_eq!(desired_status(&e, first.clone(), &o, &later), first);
    }

    #[test]
    fn a_pod_security_level_looser_than_the_operator_allows_is_a_problem() {
        use crate::api::PodSecurity::*;
        assert_eq!(pod_security_problem(None, Restricted), None);
        assert_eq!(pod_security_problem(Some(Restricted), Restricted), None);
        assert_eq!(pod_security_problem(Some(Baseline), Privileged), None);
        let why = pod_security_problem(Some(Privileged), Restricted).unwrap();
        assert!(why.contains("podSecurity privileged") && why.contains("--max-pod-security"), "{why}");
        assert!(pod_security_problem(Some(Privileged), Baseline).is_some());
    }
}
