//! Acting on a decision: its effects in order, then the status, then what comes after the status
//! (the Environment's own deletion at its ttl, the wake request removed, the finalizer taken off),
//! so whoever sees those sees the status that explains them.

use std::collections::VecDeque;

use k8s_openapi::api::{batch::v1::Job, core::v1::Namespace, networking::v1::NetworkPolicy};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions},
    runtime::{controller::Action, events::EventType},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{debug, info};

use crate::{
    api::{Environment, EnvironmentStatus, Release, annotation, condition},
    controller::{
        Context, Error,
        environment::{
            FINALIZER,
            decide::{self, Effect, Observation, Outcome},
            desired, namespace_of,
        },
        error::Context as _,
        fields::FIELD_MANAGER,
        publish, publish_phase_change,
        status::apply_status,
    },
};

/// What carrying out one effect came to.
enum Done {
    Done,
    /// The API server refused an object of this component, for this reason.
    Refused(String, String),
}

/// Carries out `outcome` of the decision on `o`; the reconcile's result.
pub async fn carry_out(ctx: &Context, o: &Observation<'_>, mut outcome: Outcome) -> Result<Action, Error> {
    let env = o.env;
    let mut queue: VecDeque<Effect> = std::mem::take(&mut outcome.effects).into();
    while let Some(effect) = queue.pop_front() {
        let done = act(ctx, o, &effect).await.context("act", || request(&effect, env))?;
        if let Done::Refused(component, why) = done {
            outcome.effects = queue.into();
            decide::refused_at_apply(o, &mut outcome, &component, why);
            queue = std::mem::take(&mut outcome.effects).into();
        }
    }
    if let Some(status) = outcome.status.take() {
        let api: Api<Environment> = Api::all(ctx.client.clone());
        write(&api, env, ctx, status)
            .await
            .context("status", || format!("write the status of Environment {}", env.name_any()))?;
    }
    for effect in &outcome.then {
        act(ctx, o, effect).await.context("act", || request(effect, env))?;
    }
    match outcome.waiting {
        Some(why) => Err(Error::Waiting(why)),
        None => Ok(outcome.requeue.map_or_else(Action::await_change, Action::requeue)),
    }
}

/// What an effect asks of the API server, and of which object, for errors.
fn request(effect: &Effect, env: &Environment) -> String {
    let (name, ns) = (env.name_any(), namespace_of(env));
    let kind = |o: &DynamicObject| o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    match effect {
        Effect::AddFinalizer => format!("add the finalizer of Environment {name}"),
        Effect::RemoveFinalizer => format!("remove the finalizer of Environment {name}"),
        Effect::Namespace(_) => format!("apply Namespace {ns}"),
        Effect::Quota(_) => format!("the ResourceQuota {ns}/{}", desired::QUOTA_NAME),
        Effect::Defaults(_) => format!("the LimitRange {ns}/{}", desired::LIMIT_RANGE_NAME),
        Effect::Isolation(_) => format!("the NetworkPolicy {ns}/{}", desired::NETWORK_POLICY_NAME),
        Effect::Apply { component, object, .. } => {
            format!("apply {} {ns}/{} of component {component}", kind(object), object.name_any())
        }
        Effect::Prune { resource, name: object, .. } => format!("delete {} {ns}/{object}", resource.kind),
        Effect::Seed(_) => format!("create the seed Job {ns}/{}", desired::SEED_JOB_NAME),
        Effect::Branch(r) => format!("apply Release {ns}/{}", r["metadata"]["name"].as_str().unwrap_or_default()),
        Effect::Promote(r) => format!("create Release {ns}/{}", r.name_any()),
        Effect::Supersede { name: release, .. } => format!("delete Release {ns}/{release}"),
        Effect::Event { reason, .. } => format!("publish Event {reason} about Environment {name}"),
        Effect::Expire { .. } => format!("delete Environment {name} at the end of its ttl"),
        Effect::Consume(key) => format!("remove {key} from Environment {name}"),
        Effect::DeleteNamespace { .. } => format!("delete Namespace {ns}"),
    }
}

/// Carries out one effect.
async fn act(ctx: &Context, o: &Observation<'_>, effect: &Effect) -> Result<Done, Error> {
    let env = o.env;
    let ns = namespace_of(env);
    let client = ctx.client.clone();
    let envs: Api<Environment> = Api::all(client.clone());
    match effect {
        Effect::AddFinalizer => {
            // As kube-runtime's finalizer helper: a test of the list first, so that a finalizer
            // added meanwhile by someone else fails this patch (and the next reconcile sees it).
            let ops = if env.finalizers().is_empty() {
                json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                       {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
            } else {
                json!([{"op": "test", "path": "/metadata/finalizers", "value": env.finalizers()},
                       {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}])
            };
            envs.patch(&env.name_any(), &PatchParams::default(), &json_patch(ops)).await?;
        }
        Effect::RemoveFinalizer => {
            if let Some(i) = env.finalizers().iter().position(|f| f == FINALIZER) {
                // A test of the entry first: another controller's finalizer is never removed.
                let path = format!("/metadata/finalizers/{i}");
                let ops = json!([{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]);
                envs.patch(&env.name_any(), &PatchParams::default(), &json_patch(ops)).await?;
            }
        }
        Effect::Namespace(namespace) => {
            ctx.caches.children.apply(&Api::<Namespace>::all(client), (**namespace).clone()).await?;
        }
        Effect::Quota(q) => apply_or_delete(ctx, &ns, desired::QUOTA_NAME, q.as_deref().cloned()).await?,
        Effect::Defaults(l) => apply_or_delete(ctx, &ns, desired::LIMIT_RANGE_NAME, l.as_deref().cloned()).await?,
        Effect::Isolation(p) => {
            apply_or_delete::<NetworkPolicy>(ctx, &ns, desired::NETWORK_POLICY_NAME, p.as_deref().cloned()).await?
        }
        Effect::Apply { component, resource, object } => {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            let name = object.name_any();
            // One already as phaseloop applied it (and not changed by anyone since) is not written.
            if o.object(&kind, &name).is_some_and(|live| ctx.caches.children.unchanged_dynamic(object, &kind, live)) {
                return Ok(Done::Done);
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, resource);
            match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&**object)).await {
                Ok(live) => ctx.caches.children.record_dynamic(&live, &kind),
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                    let why = format!("{kind} {name} rejected by the API server: {}", e.message);
                    return Ok(Done::Refused(component.clone(), why));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Effect::Prune { resource, name, .. } => {
            debug!(kind = %resource.kind, name, "pruning");
            delete_if_present(&Api::<DynamicObject>::namespaced_with(client, &ns, resource), name).await?;
        }
        Effect::Seed(job) => {
            // Created once; never re-applied, so a finished Job is not mutated (its template is immutable).
            let api: Api<Job> = Api::namespaced(client, &ns);
            api.patch(&job.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&**job)).await?;
        }
        Effect::Branch(release) => {
            let name = release["metadata"]["name"].as_str().unwrap_or_default();
            info!(release = name, namespace = %ns, "deploying the parent's live version into the branch");
            let api: Api<Release> = Api::namespaced(client, &ns);
            api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&**release)).await?;
        }
        Effect::Promote(release) => {
            let name = release.name_any();
            let api: Api<Release> = Api::namespaced(client, &ns);
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match api.create(&params, release).await {
                Ok(_) => {
                    info!(release = name, namespace = %ns, "promotion request opened");
                    ctx.metrics.observe_promotion_request("opened");
                }
                // Opened before (a restart lost the status write that recorded it), or someone's
                // Release of that name: either way it is not opened twice.
                Err(kube::Error::Api(e)) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Effect::Supersede { name, resource_version } => {
            let api: Api<Release> = Api::namespaced(client, &ns);
            let preconditions =
                Preconditions { resource_version: Some(resource_version.clone()), ..Default::default() };
            let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() };
            match api.delete(name, &params).await {
                Ok(_) => ctx.metrics.observe_promotion_request("superseded"),
                // Gone, or changed since (it may have started): the next reconcile decides again.
                Err(kube::Error::Api(e)) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Effect::Event { warning, reason, note } => {
            let type_ = if *warning { EventType::Warning } else { EventType::Normal };
            publish(ctx, env, type_, reason.as_str(), note.clone()).await;
        }
        Effect::Expire { tier, count } => {
            if *count {
                ctx.metrics.observe_expiration(tier.as_str());
            }
            info!(env = %env.name_any(), "ttl reached; deleting");
            envs.delete(&env.name_any(), &DeleteParams::background()).await?;
        }
        Effect::Consume(key) => {
            if env.annotations().contains_key(*key) {
                let patch = json!({"metadata": {"annotations": {*key: null}}});
                envs.patch(&env.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        Effect::DeleteNamespace { production } => {
            info!(env = %env.name_any(), namespace = %ns, "deleting namespace");
            let namespaces: Api<Namespace> = Api::all(client);
            if *production {
                // The admission policy protects a production namespace; this Environment's own
                // deletion was allowed (it carried the annotation), so its namespace's is too.
                let patch = json!({"metadata": {"annotations": {annotation::ALLOW_DELETE: "true"}}});
                namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            namespaces.delete(&ns, &DeleteParams::background()).await?;
        }
    }
    Ok(Done::Done)
}

/// A JSON patch (RFC 6902) of `ops`.
fn json_patch(ops: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).expect("a JSON patch"))
}

/// Writes `status` when it changed, with the Event of a phase change.
async fn write(
    api: &Api<Environment>,
    env: &Environment,
    ctx: &Context,
    status: EnvironmentStatus,
) -> Result<(), Error> {
    let old_phase = env.status.as_ref().and_then(|s| s.phase);
    if apply_status(api, &ctx.written, env, env.status.as_ref(), &status).await? {
        let message = status.conditions.iter().find(|c| c.type_ == condition::READY).map(|c| c.message.clone());
        publish_phase_change(ctx, env, old_phase, status.phase, message).await;
    }
    Ok(())
}

/// Applies `desired` in `ns`, or deletes the object named `name` when nothing is desired.
async fn apply_or_delete<K>(ctx: &Context, ns: &str, name: &str, desired: Option<K>) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match desired {
        Some(obj) => ctx.caches.children.apply(&api, obj).await.map(|_| ())?,
        None => ctx.caches.children.delete(&api, Some(ns), name).await?,
    }
    Ok(())
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
