//! Acting on a decision: its effects in order, then the status (and the restored status of the
//! Release a revert returned to), then the one-shot annotations are removed, so whoever sees a
//! request gone also sees its outcome.

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{observe, test_environment};
use crate::{
    api::{Release, ReleasePhase, ReleaseStatus},
    controller::{
        Context, Error,
        error::Context as _,
        fields::FIELD_MANAGER,
        publish_phase_change,
        release::{
            decide::{self, Effect, Outcome},
            test_jobs, traffic, workload,
        },
        status::apply_status,
    },
};

/// Carries out `outcome` for `rel`, whose app's Releases are `siblings`.
pub async fn carry_out(ctx: &Context, rel: &Release, siblings: &[Release], outcome: Outcome) -> Result<(), Error> {
    ctx.count_dora(rel);
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
    let (consume, effects): (Vec<_>, Vec<_>) = outcome.effects.iter().partition(|e| matches!(e, Effect::Consume(_)));
    // The status write is conditional on the version it was decided from, moved on by this
    // reconcile's own writes to the Release (a finalizer, cleared fields) and by nothing else.
    let mut me = rel.clone();
    for effect in effects {
        if let Some(version) = act(ctx, &me, siblings, effect).await.context("act", || request(effect, rel))? {
            me.metadata.resource_version = Some(version);
        }
    }
    let status_of = |r: &Release| format!("write the status of Release {}/{}", r.ns(), r.name_any());
    write(&api, &me, ctx, outcome.status).await.context("status", || status_of(rel))?;
    if let Some((name, restored)) = outcome.restored
        && let Some(previous) = siblings.iter().find(|s| s.name_any() == name)
    {
        write(&api, previous, ctx, restored).await.context("status", || status_of(previous))?;
    }
    for effect in consume {
        act(ctx, &me, siblings, effect).await.context("act", || request(effect, rel))?;
    }
    Ok(())
}

/// What an effect asks of the API server, and of which object, for errors.
fn request(effect: &Effect, rel: &Release) -> String {
    let (ns, app) = (rel.ns(), &rel.spec.app);
    match effect {
        Effect::Scale { release, replicas } => format!("scale the workload of Release {ns}/{release} to {replicas}"),
        Effect::Expose(x) => format!("point the Services of app {ns}/{app} at {:?}", x.serving.versions()),
        Effect::Consume(key) => format!("remove {key} from Release {ns}/{}", rel.name_any()),
        Effect::Event { reason, .. } => format!("publish Event {reason} about Release {ns}/{}", rel.name_any()),
        Effect::Finalizer(add) => {
            format!("{} the serving finalizer of Release {ns}/{}", if *add { "add" } else { "remove" }, rel.name_any())
        }
        Effect::ClearStatus(fields) => format!("clear {fields:?} of Release {ns}/{}", rel.name_any()),
        Effect::Retire { keep, delete } => format!("retire the workloads of {keep:?} and delete those of {delete:?}"),
        Effect::EnsureTestEnvironment | Effect::DropTestEnvironment => {
            format!("the test Environment {}", test_environment::test_environment_name(rel))
        }
        Effect::TestCandidate { namespace, replicas } => {
            format!("the test candidate of Release {ns}/{} in {namespace} at {replicas}", rel.name_any())
        }
        Effect::RunTest { namespace, test, attempt } => format!("test Job {test} attempt {attempt} in {namespace}"),
        Effect::Route(patch) => format!("write the rules of HTTPRoute {ns}/{}", patch.route),
        Effect::Scaled { .. } => "scaling metrics".into(),
    }
}

/// Carries out one effect; the Release's new resourceVersion when the effect wrote the Release.
async fn act(ctx: &Context, rel: &Release, siblings: &[Release], effect: &Effect) -> Result<Option<String>, Error> {
    let find = |name: &str| siblings.iter().find(|s| s.name_any() == name).or((rel.name_any() == name).then_some(rel));
    let ns = rel.ns().to_string();
    match effect {
        Effect::Scale { release, replicas } => {
            if let Some(r) = find(release) {
                apply_deployment(ctx, r, *replicas).await?;
            }
        }
        Effect::Expose(exposure) => traffic::service::expose(ctx, rel, siblings, exposure).await?,
        Effect::Consume(key) => consume(ctx, rel, key).await?,
        Effect::Event { warning, reason, note } => {
            let type_ = if *warning { EventType::Warning } else { EventType::Normal };
            crate::controller::publish(ctx, rel, type_, reason.as_str(), note.clone()).await;
        }
        Effect::Finalizer(add) => {
            let version = finalizer(ctx, rel, *add).await?;
            if !add {
                // Single-namespace mode: the operator's rights go once nothing of its own is left.
                crate::controller::access::let_go_when_done(ctx, &ns).await?;
            }
            return Ok(version);
        }
        Effect::ClearStatus(fields) => {
            let nulls: serde_json::Map<String, serde_json::Value> =
                fields.iter().map(|f| (f.to_string(), serde_json::Value::Null)).collect();
            let api: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
            // Conditional, as every status write (see `apply_status`).
            let patch = json!({"metadata": {"resourceVersion": rel.resource_version()}, "status": nulls});
            let after = api.patch_status(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            return Ok(after.resource_version());
        }
        Effect::Retire { keep, delete } => {
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            for name in delete.iter().filter_map(|n| find(n)) {
                let d = workload::deployment_name(&name.spec.app, &name.spec.version);
                ctx.caches.children.delete(&deployments, Some(&ns), &d).await?;
            }
            for old in keep.iter().filter_map(|n| find(n)) {
                // Kept ones go to zero: nothing to do when absent (deleted earlier) or already at zero.
                if observe::deployed(ctx, old).replicas > 0 {
                    apply_deployment(ctx, old, 0).await?;
                }
            }
        }
        Effect::EnsureTestEnvironment => test_environment::ensure_test_environment(ctx, rel).await?,
        Effect::DropTestEnvironment => test_environment::drop_test_environment(ctx, rel).await?,
        Effect::TestCandidate { namespace, replicas } => {
            test_environment::test_candidate(ctx, rel, namespace, *replicas).await?
        }
        Effect::RunTest { namespace, test, attempt } => {
            let Some(test) = rel.spec.tests.iter().find(|t| &t.name == test) else { return Ok(None) };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
            let name = test_jobs::job_name(rel, test, *attempt);
            if jobs.get_opt(&name).await?.is_none() {
                let port = rel.spec.service.as_ref().and_then(|s| s.ports.first()).map(|p| p.port);
                let host = rel.spec.service.as_ref().map(|_| format!("{}-preview.{namespace}.svc", rel.spec.app));
                let mut job = test_jobs::job(rel, test, *attempt, host.as_deref().unwrap_or(""), port);
                test_environment::relocate(&mut job.metadata, rel, namespace);
                jobs.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job)).await?;
            }
        }
        Effect::Route(patch) => traffic::gateway::write(ctx, &ns, patch).await?,
        Effect::Scaled { observed, from, to } => {
            ctx.metrics.observe_scaling(&ns, &rel.spec.app, *observed, *from, *to);
        }
    }
    Ok(None)
}

/// Adds or removes the serving finalizer; the resourceVersion makes it a compare-and-swap, so other
/// finalizers added meanwhile survive. The Release's new resourceVersion, when written.
pub async fn finalizer(ctx: &Context, rel: &Release, add: bool) -> Result<Option<String>, Error> {
    let finalizers = decide::with_serving_finalizer(rel.finalizers(), add);
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rel.resource_version()}});
    match api.patch(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(after) => Ok(after.resource_version()),
        // Gone already, or changed meanwhile: the next reconcile sees the latest.
        Err(kube::Error::Api(e)) if e.is_not_found() || e.is_conflict() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Server-side apply of a Release's full Deployment (a partial apply under the same field manager
/// would drop the fields it leaves out). A Deployment another autoscaler targets is left alone (the
/// conflict is reported in `ScalingActive`): two owners of `replicas` would fight.
pub async fn apply_deployment(ctx: &Context, rel: &Release, replicas: i32) -> Result<Option<Deployment>, Error> {
    let d = workload::deployment(rel, replicas);
    let ns = rel.ns().to_string();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let name = d.metadata.name.clone().unwrap_or_default();
    if observe::autoscaler_of(ctx, &ns, &name).is_some() {
        return Ok(api.get_opt(&name).await?);
    }
    Ok(ctx.caches.children.apply(&api, d).await?)
}

/// Removes a one-shot annotation once handled.
async fn consume(ctx: &Context, rel: &Release, key: &str) -> Result<(), Error> {
    if rel.annotations().contains_key(key) {
        let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
        let patch = json!({"metadata": {"annotations": {key: null}}});
        api.patch(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Whether a promotion request (a Release opened by an Environment's automatic promotion) just
/// left its approval wait for the rollout: counted once, at the status write that says so.
fn approved_request(rel: &Release, old: Option<ReleasePhase>, new: Option<ReleasePhase>) -> bool {
    let promoted = rel.labels().contains_key(crate::controller::environment::decide::promotion::PROMOTED_FROM);
    promoted
        && old == Some(ReleasePhase::AwaitingApproval)
        && matches!(new, Some(ReleasePhase::Progressing | ReleasePhase::Paused | ReleasePhase::Live))
}

/// Writes `status` when it changed, with the phase Event and the DORA facts it brings.
async fn write(api: &Api<Release>, rel: &Release, ctx: &Context, status: ReleaseStatus) -> Result<(), Error> {
    let old = rel.status.as_ref().and_then(|s| s.phase);
    if apply_status(api, &ctx.written, rel, rel.status.as_ref(), &status).await? {
        let mut after = rel.clone();
        after.status = Some(status.clone());
        ctx.count_dora(&after);
        if approved_request(rel, old, status.phase) {
            ctx.metrics.observe_promotion_request("approved");
        }
        publish_phase_change(ctx, rel, old, status.phase, status.message.clone()).await;
    }
    Ok(())
}
