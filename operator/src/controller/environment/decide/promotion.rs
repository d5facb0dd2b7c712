//! Promotion requests (`promotion.mode: Automatic`): the version of each app Live in
//! `promotion.from` for `soak` gets its Release opened here, the upstream Release's spec with the
//! Environment's overlay. The Release then meets this Environment's rules like any other (the
//! same soak rule at its gate, approval, freeze, the deploy queue).
//!
//! - A version is requested once: `status.promotions` records the last version requested per app,
//!   and a version that already has a Release here (opened earlier, or by a person) is not
//!   requested. The Release's name is fixed by the version, so a request opened again after a
//!   restart that lost the status write finds its Release there (`AlreadyExists`), never a second.
//! - A newer upstream version supersedes a request that has not started (no status yet,
//!   `Pending` or `AwaitingApproval`): that Release is deleted, the new one opened.
//! - Only a version Live upstream now is requested; one that was reverted or rolled back there
//!   is not Live, so never requested.

use std::{collections::BTreeMap, time::Duration};

use kube::ResourceExt;

use super::{Draft, Effect};
use crate::{
    api::{
        Environment, PromotionMode, PromotionRequest, Reason, Release, ReleasePhase, ReleaseSpec, annotation, label,
    },
    controller::{environment::namespace_of, release::gate::soak_wait},
};

/// Label on a Release opened by a promotion request: the Environment it was promoted from.
pub const PROMOTED_FROM: &str = "phaseloop.dev/promoted-from";
/// Annotation on it: the upstream Release, `namespace/name`.
pub const PROMOTED_FROM_RELEASE: &str = "phaseloop.dev/promoted-from-release";

/// Phases in which a request has not started rolling out (a newer version may replace it).
fn not_started(r: &Release) -> bool {
    matches!(
        r.status.as_ref().and_then(|s| s.phase),
        None | Some(ReleasePhase::Pending) | Some(ReleasePhase::AwaitingApproval)
    )
}

/// Decides the promotion requests of the Environment into `d`: effects, records, Events and
/// when to look again (a version still soaking).
pub(super) fn decide(d: &mut Draft<'_>) {
    let o = d.o;
    let env = o.env;
    let Some(p) = env.spec.promotion.as_ref().filter(|p| p.mode == PromotionMode::Automatic) else { return };
    let (Some(from), Some(upstream)) = (p.from.as_deref(), o.upstream_releases) else { return };
    let soak = p.soak.map(Into::into).unwrap_or(Duration::ZERO);
    let mut live: Vec<&Release> =
        upstream.iter().filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live)).collect();
    live.sort_by(|a, b| a.spec.app.cmp(&b.spec.app));
    live.dedup_by(|a, b| a.spec.app == b.spec.app);
    for up in live {
        let (app, version) = (up.spec.app.as_str(), up.spec.version.as_str());
        let requested = d.status.promotions.iter().any(|r| r.app == app && r.version == version);
        let here = o.releases.iter().any(|r| r.spec.app == app && r.spec.version == version);
        if requested || here {
            continue;
        }
        if let Some((_, again)) = soak_wait(from, Some(upstream), app, version, soak, o.now.0) {
            d.requeue(again);
            continue;
        }
        for old in o.releases.iter().filter(|r| r.spec.app == app && promoted(r) && not_started(r)) {
            d.effects.push(Effect::Supersede {
                name: old.name_any(),
                resource_version: old.resource_version().unwrap_or_default(),
            });
            let note = format!(
                "{app} {} not started: superseded by {version}, Live in {from}; Release {} deleted",
                old.spec.version,
                old.name_any()
            );
            d.event(false, Reason::PromotionSuperseded, note);
        }
        let name = release_name(up, from, o.releases);
        d.effects.push(Effect::Promote(Box::new(request(env, from, up, &name, o.config.instance_id.as_deref()))));
        d.event(
            false,
            Reason::PromotionRequested,
            format!("{app} {version} Live in {from} for its soak: Release {name} opened"),
        );
        let record = PromotionRequest {
            app: app.into(),
            version: version.into(),
            release: name,
            from_release: up.name_any(),
            opened_at: o.now.clone(),
        };
        d.status.promotions.retain(|r| r.app != app);
        d.status.promotions.push(record);
        d.status.promotions.sort_by(|a, b| a.app.cmp(&b.app));
    }
}

/// Whether `r` was opened by a promotion request.
fn promoted(r: &Release) -> bool {
    r.labels().contains_key(PROMOTED_FROM)
}

/// The upstream Release's name, unless a Release here already has it: then that name with
/// `-from-<upstream Environment>`.
fn release_name(up: &Release, from: &str, here: &[Release]) -> String {
    let name = up.name_any();
    if here.iter().any(|r| r.name_any() == name) {
        crate::controller::release::workload::generated_name(&format!("{name}-from-{from}"), 253, false)
    } else {
        name
    }
}

/// The Release a request opens: the upstream spec (its own approval dropped: approval is this
/// Environment's), the overlay laid over it, labelled with where it came from. Its DORA lead time
/// starts where the upstream one did: the commit time it carries, else the upstream creation.
pub fn request(env: &Environment, from: &str, up: &Release, name: &str, instance: Option<&str>) -> Release {
    let mut spec: ReleaseSpec = up.spec.clone();
    spec.approval = None;
    if let Some(overlay) = env.spec.promotion.as_ref().and_then(|p| p.overlay.as_ref()) {
        if let Some(replicas) = overlay.replicas {
            spec.replicas = replicas;
        }
        if let (Some(resources), Some(pod)) = (&overlay.resources, spec.template.spec.as_mut()) {
            for c in &mut pod.containers {
                c.resources = Some(resources.clone());
            }
        }
    }
    let mut labels = BTreeMap::from([(PROMOTED_FROM.to_string(), from.to_string())]);
    if let Some(id) = instance {
        labels.insert(label::INSTANCE.into(), id.into());
    }
    let upstream = format!("{}/{}", up.namespace().unwrap_or_default(), up.name_any());
    let mut annotations = BTreeMap::from([(PROMOTED_FROM_RELEASE.to_string(), upstream)]);
    let started = up.annotations().get(annotation::COMMIT_TIME).cloned();
    if let Some(t) = started.or_else(|| up.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string())) {
        annotations.insert(annotation::COMMIT_TIME.into(), t);
    }
    let mut release = Release::new(name, spec);
    release.metadata.namespace = Some(namespace_of(env));
    release.metadata.labels = Some(labels);
    release.metadata.annotations = Some(annotations);
    release
}
