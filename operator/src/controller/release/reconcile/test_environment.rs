//! The Test phase's I/O: the ephemeral test Environment a Release's tests run in, and the
//! one-replica candidate they run against.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{act::apply_deployment, observe::environment_of};
use crate::{
    api::{Environment, Release},
    controller::{Context, Error, fields::FIELD_MANAGER, release::workload},
};

/// Whether `env` is the test Environment of `rel` (the name is made of namespace and Release
/// names: another Release's is never adopted).
pub fn is_test_environment_of(env: &Environment, rel: &Release) -> bool {
    let labels = env.labels();
    labels.get(workload::RELEASE_LABEL) == Some(&rel.name_any())
        && labels.get("phaseloop.dev/release-namespace").map(String::as_str) == rel.metadata.namespace.as_deref()
}

/// The one-replica candidate the tests run against, and `<app>-preview` selecting it, in `ns`.
pub async fn test_candidate(ctx: &Context, rel: &Release, ns: &str, replicas: i32) -> Result<(), Error> {
    if rel.namespace().as_deref() == Some(ns) {
        apply_deployment(ctx, rel, replicas).await?;
    } else {
        let mut deployment = workload::deployment(rel, replicas);
        relocate(&mut deployment.metadata, rel, ns);
        ctx.caches.children.apply(&Api::<Deployment>::namespaced(ctx.client.clone(), ns), deployment).await?;
    }
    if let Some(ports) = rel.spec.service.as_ref().filter(|_| replicas > 0) {
        let name = format!("{}-preview", rel.spec.app);
        let mut preview = workload::service(&[rel], &name, ports, workload::selector(rel));
        relocate(&mut preview.metadata, rel, ns);
        ctx.caches.children.apply(&Api::<Service>::namespaced(ctx.client.clone(), ns), preview).await?;
    }
    Ok(())
}

/// Moves an object built for the Release's namespace into `ns` (a test Environment): owner
/// references cannot cross namespaces, so the test Environment's deletion cleans it up instead.
pub fn relocate(meta: &mut kube::api::ObjectMeta, rel: &Release, ns: &str) {
    if rel.namespace().as_deref() != Some(ns) {
        meta.namespace = Some(ns.to_string());
        meta.owner_references = None;
    }
}

/// Name of a Release's ephemeral test Environment.
pub fn test_environment_name(rel: &Release) -> String {
    // A DNS label, as the namespace named after it must be (a Release name may hold dots).
    workload::generated_name(&format!("{}-{}-test", rel.ns(), rel.name_any()), 63, true)
}

/// Creates the ephemeral test Environment, branched from the namespace's Environment.
pub async fn ensure_test_environment(ctx: &Context, rel: &Release) -> Result<(), Error> {
    let ns = rel.ns().to_string();
    let Some(parent) = environment_of(ctx, &ns).await? else { return Ok(()) };
    let Some(te) = &rel.spec.test_environment else { return Ok(()) };
    let name = test_environment_name(rel);
    let mut labels = json!({workload::RELEASE_LABEL: rel.name_any(), "phaseloop.dev/release-namespace": ns});
    if let Some(id) = &ctx.config.instance_id {
        labels[crate::api::label::INSTANCE] = json!(id);
    }
    let desired = json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"tier": "test", "from": parent.name_any(), "ttl": te.ttl.to_string()},
    });
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    envs.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    Ok(())
}

/// Deletes the ephemeral test Environment once the tests are over.
pub async fn drop_test_environment(ctx: &Context, rel: &Release) -> Result<(), Error> {
    if rel.spec.test_environment.is_some() {
        let envs: Api<Environment> = Api::all(ctx.client.clone());
        match envs.delete(&test_environment_name(rel), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
