//! The Service router: the Service `<app>` selects the serving pods, the one version's alone, or
//! both versions' during a rollout (the app-wide selector: traffic follows the pod ratio), and
//! `<app>-preview` selects the candidate for a private preview. With a route (`trafficRouting`),
//! weights are the route's: `<app>` selects one version (the one the route gives the app to), and
//! `<app>-stable` and `<app>-canary` select the stable version and the candidate, for the route's
//! `backendRefs` ([`super::gateway`]). Each Service is owned by the Releases it selects, so
//! deleting one of them never takes it from the others.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, ResourceExt};

use super::{Exposure, Serving, gateway, routing};
use crate::{
    api::Release,
    controller::{Context, Error, release::workload},
};

/// Points the app's Services as `exposure` says.
pub async fn expose(ctx: &Context, rel: &Release, siblings: &[Release], exposure: &Exposure) -> Result<(), Error> {
    let find = |name: &str| siblings.iter().find(|s| s.name_any() == name).or((rel.name_any() == name).then_some(rel));
    let app = &rel.spec.app;
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), rel.ns());
    if routing(rel).is_some() {
        // The version the route gives the app to: the candidate once switched, else the stable one.
        let main = match &exposure.serving {
            Serving::Only(r) => r.as_str(),
            Serving::Both { stable, .. } => stable.as_str(),
        };
        let stable = exposure.stable.as_deref().unwrap_or(main);
        let canary = exposure.candidate.as_deref().unwrap_or(stable);
        for (name, version) in
            [(app.clone(), main), (gateway::stable_service(app), stable), (gateway::canary_service(app), canary)]
        {
            if let Some(r) = find(version) {
                apply(ctx, &api, vec![r], name, workload::selector(r)).await?;
            }
        }
    } else {
        let selected: Vec<&Release> = match &exposure.serving {
            Serving::Only(r) => find(r).into_iter().collect(),
            Serving::Both { stable, candidate, .. } => [find(stable), find(candidate)].into_iter().flatten().collect(),
        };
        let selector = match (&exposure.serving, selected.first()) {
            (Serving::Only(_), Some(first)) => workload::selector(first),
            _ => workload::app_selector(app),
        };
        apply(ctx, &api, selected, app.clone(), selector).await?;
    }
    if exposure.preview {
        let name = format!("{app}-preview");
        apply(ctx, &api, vec![rel], name, workload::selector(rel)).await?;
    }
    Ok(())
}

/// The Service `name` selecting `selector`, owned by `selected`, with the ports of the last of them
/// (the candidate's, while both serve).
async fn apply(
    ctx: &Context,
    api: &Api<Service>,
    selected: Vec<&Release>,
    name: String,
    selector: BTreeMap<String, String>,
) -> Result<(), Error> {
    let Some(source) = selected.last() else { return Ok(()) };
    let Some(ports) = &source.spec.service else { return Ok(()) };
    ctx.caches.children.apply(api, workload::service(&selected, &name, ports, selector)).await?;
    Ok(())
}
