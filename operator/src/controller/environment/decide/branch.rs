//! Branching: what a branch inherits through the whole chain of the Environments above it, the
//! branching cycles and the depth bound, and the parent's Live versions a branch deploys.
//!
//! A branch provisions its own spec over what its parent passes down, and the parent passes down
//! what it provisions itself: its own spec over what *its* parent passes down, and so on to an
//! Environment without `from`. So prod → staging → pr gives pr prod's database and quota as well
//! as staging's own components (the nearest one's fields win, components merge by name). Where an
//! Environment keeps a snapshot (it does not follow its parent, or its parent is gone), what it
//! passes down is computed from its snapshot, as it provisions it.

use kube::ResourceExt;
use serde_json::json;

use super::Observation;
use crate::{
    api::{BranchStatus, Component, Environment, EnvironmentSpec, Isolation, Reason, ReleasePhase, label},
    controller::environment::namespace_of,
};

/// At most this many Environments above a branch (its parent, grandparent, ...): a longer chain
/// is refused (`BranchTooDeep`). It also bounds the walk up a chain.
pub const MAX_DEPTH: usize = 8;

/// The Environments above one, as far as they were found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chain {
    /// Parent first.
    pub ancestors: Vec<Environment>,
    pub end: End,
}

/// Where a walk up the chain stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum End {
    /// At an Environment without a parent.
    #[default]
    Root,
    /// At a parent that does not exist: its name.
    Missing(String),
    /// Back at the Environment walked from: the names around the cycle (`x`, `y`, `x`).
    Cycle(Vec<String>),
    /// In a cycle the Environment walked from is not part of (its members report it).
    IntoCycle(Vec<String>),
    /// More than [`MAX_DEPTH`] Environments above.
    TooDeep,
}

/// Walks `spec.from` up from `env`, each parent looked up with `lookup`.
pub fn walk(env: &Environment, lookup: impl Fn(&str) -> Option<Environment>) -> Chain {
    let me = env.name_any();
    let mut names = vec![me.clone()];
    let mut ancestors: Vec<Environment> = Vec::new();
    let mut next = env.spec.from.clone();
    while let Some(name) = next {
        if name == me {
            names.push(name);
            return Chain { ancestors, end: End::Cycle(names) };
        }
        if let Some(at) = names.iter().position(|n| *n == name) {
            let mut cycle = names[at..].to_vec();
            cycle.push(name);
            return Chain { ancestors, end: End::IntoCycle(cycle) };
        }
        if ancestors.len() == MAX_DEPTH {
            return Chain { ancestors, end: End::TooDeep };
        }
        let Some(parent) = lookup(&name) else { return Chain { ancestors, end: End::Missing(name) } };
        next = parent.spec.from.clone();
        names.push(name);
        ancestors.push(parent);
    }
    Chain { ancestors, end: End::Root }
}

/// The spec actually provisioned: what is inherited, with the Environment's own quota, defaults,
/// isolation, seed and Pod Security level winning and its components replacing those of the same
/// name.
pub fn effective(own: &EnvironmentSpec, inherited: Option<&EnvironmentSpec>) -> EnvironmentSpec {
    let Some(parent) = inherited else { return own.clone() };
    let mut spec = own.clone();
    spec.quota = own.quota.clone().or_else(|| parent.quota.clone());
    spec.defaults = own.defaults.clone().or_else(|| parent.defaults.clone());
    if own.isolation == Isolation::None {
        spec.isolation = parent.isolation;
    }
    let mut components: Vec<Component> = parent
        .infrastructure
        .iter()
        .filter(|p| !own.infrastructure.iter().any(|o| o.name == p.name))
        .cloned()
        .collect();
    components.extend(own.infrastructure.iter().cloned());
    spec.infrastructure = components;
    if own.seed.is_none() {
        spec.seed = parent.seed.clone();
    }
    spec.pod_security = own.pod_security.or(parent.pod_security);
    spec
}

/// The parts of a spec a branch inherits.
pub fn inheritable(spec: &EnvironmentSpec) -> EnvironmentSpec {
    EnvironmentSpec {
        quota: spec.quota.clone(),
        defaults: spec.defaults.clone(),
        isolation: spec.isolation,
        infrastructure: spec.infrastructure.clone(),
        seed: spec.seed.clone(),
        pod_security: spec.pod_security,
        ..Default::default()
    }
}

/// What the first of `ancestors` passes down: the inheritable part of what it provisions. It
/// inherits in turn from the next one, computed the same way, or from its snapshot where it keeps
/// one (it does not follow its parent, or its parent cannot be read). `Err(name)`: `name` needs
/// what its parent passes down and nothing tells it (its parent is missing or in a cycle, and it
/// has no snapshot).
fn passed_down(ancestors: &[Environment]) -> Result<EnvironmentSpec, String> {
    let Some((parent, above)) = ancestors.split_first() else { return Ok(EnvironmentSpec::default()) };
    let inherited = match parent.spec.from.as_deref() {
        None => None,
        Some(grandparent) => {
            let snapshot = parent
                .status
                .as_ref()
                .and_then(|s| s.branch.as_ref())
                .filter(|b| b.parent == grandparent)
                .map(|b| b.snapshot.clone());
            let next = above.first().filter(|n| n.name_any() == grandparent);
            match (snapshot, next) {
                (Some(s), _) if !parent.spec.follow_parent => Some(s),
                (_, Some(_)) => Some(passed_down(above)?),
                (Some(s), None) => Some(s),
                (None, None) => return Err(parent.name_any()),
            }
        }
    };
    Ok(inheritable(&effective(&parent.spec, inherited.as_ref())))
}

/// What a branch inherits this time.
#[derive(Clone, Debug, PartialEq)]
pub enum Inheritance {
    /// Not a branch.
    Root,
    /// What the parent passes down, and the branch status recording it.
    From(Box<EnvironmentSpec>, Box<BranchStatus>),
    /// Nothing can be inherited: the reason and what to change. Nothing is provisioned.
    Blocked(Reason, String),
}

/// What `env` inherits, from `stored` (the branch status it has) and the `chain` above it: its
/// snapshot while it keeps one (it does not follow its parent), else what the parent passes down
/// now. A cycle or a chain deeper than [`MAX_DEPTH`] blocks it; a missing parent does unless a
/// snapshot is kept.
pub fn inheritance(env: &Environment, stored: Option<&BranchStatus>, chain: &Chain) -> Inheritance {
    let Some(parent) = env.spec.from.as_deref() else { return Inheritance::Root };
    match &chain.end {
        End::Cycle(names) => {
            return Inheritance::Blocked(
                Reason::ParentCycle,
                format!(
                    "spec.from forms a branching cycle ({}): change the from of one of them; nothing was changed",
                    names.join(" -> ")
                ),
            );
        }
        End::TooDeep => {
            let names: Vec<String> = chain.ancestors.iter().map(|a| a.name_any()).collect();
            return Inheritance::Blocked(
                Reason::BranchTooDeep,
                format!(
                    "spec.from leads through more than {MAX_DEPTH} Environments ({} -> ...): branch from one nearer \
                     the root; nothing was changed",
                    names.join(" -> ")
                ),
            );
        }
        _ => {}
    }
    let kept = stored.filter(|b| b.parent == parent);
    if let Some(b) = kept
        && !env.spec.follow_parent
    {
        return Inheritance::From(Box::new(b.snapshot.clone()), Box::new(b.clone()));
    }
    let found = chain.ancestors.first().filter(|p| p.name_any() == parent);
    let passed = match found {
        Some(p) => passed_down(&chain.ancestors).map(|spec| (spec, p.metadata.generation.unwrap_or(0))),
        None => Err(env.name_any()),
    };
    match (passed, kept) {
        (Ok((snapshot, parent_generation)), _) => {
            let status = BranchStatus { parent: parent.to_string(), parent_generation, snapshot: snapshot.clone() };
            Inheritance::From(Box::new(snapshot), Box::new(status))
        }
        // A following branch keeps its last snapshot when the Environments above go away.
        (Err(_), Some(b)) => Inheritance::From(Box::new(b.snapshot.clone()), Box::new(b.clone())),
        (Err(short), None) => {
            let (reason, why) = match &chain.end {
                End::IntoCycle(names) => {
                    (Reason::ParentCycle, format!("runs into a branching cycle ({})", names.join(" -> ")))
                }
                End::Missing(name) if short == env.name_any() => {
                    return Inheritance::Blocked(
                        Reason::ParentNotFound,
                        format!("parent Environment {name} not found"),
                    );
                }
                End::Missing(name) => {
                    (Reason::ParentNotFound, format!("reaches Environment {name}, which is not found"))
                }
                _ => (Reason::ParentNotFound, format!("cannot be read above {short}")),
            };
            Inheritance::Blocked(reason, format!("the chain of parents {why}: nothing can be inherited"))
        }
    }
}

/// Branching deploys the parent's Live app versions into the branch, once per app (a branch that
/// already has a Release of an app keeps it), or, with `followParent`, each new Live version of the
/// parent as it comes (a Release of the same name, which then rolls out in the branch). Each is
/// the body of a server-side apply: the same version, template and Service, rolled out plainly
/// (it was tested upstream).
pub fn releases_to_deploy(o: &Observation<'_>) -> Vec<serde_json::Value> {
    let Some(parent) = o.chain.ancestors.first().filter(|p| Some(p.name_any()) == o.env.spec.from) else {
        return vec![];
    };
    let ns = namespace_of(o.env);
    let existing: Vec<(String, &str, &str)> =
        o.releases.iter().map(|r| (r.name_any(), r.spec.app.as_str(), r.spec.version.as_str())).collect();
    let mut copies = Vec::new();
    for live in o.parent_releases {
        let is_live = live.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live);
        let has_app = existing.iter().any(|(_, app, _)| *app == live.spec.app);
        let has_version = existing
            .iter()
            .any(|(n, app, v)| *n == live.name_any() || (*app == live.spec.app && *v == live.spec.version));
        if !is_live || has_version || (has_app && !o.env.spec.follow_parent) {
            continue;
        }
        let mut spec = live.spec.clone();
        spec.tests.clear();
        spec.test_environment = None;
        spec.approval = None;
        spec.strategy = Default::default();
        let mut labels = json!({"phaseloop.dev/branched-from": namespace_of(parent)});
        // The branch's Releases belong to this install, as the branch does.
        if let Some(id) = &o.config.instance_id {
            labels[label::INSTANCE] = json!(id);
        }
        copies.push(json!({
            "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": live.name_any(), "namespace": ns, "labels": labels},
            "spec": spec,
        }));
    }
    copies
}
