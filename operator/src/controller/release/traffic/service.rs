//! The Service router: the Service `<app>` selects the serving pods, the one version's alone, or
//! both versions' during a rollout (the app-wide selector: traffic follows the pod ratio), and
//! `<app>-preview` selects the candidate for a private preview. The Service is owned by every
//! Release it selects, so deleting one of them never takes it from the others.

use k8s_openapi::api::core::v1::Service;
use kube::{Api, ResourceExt};

use super::{Exposure, Serving};
use crate::{
    api::Release,
    controller::{Context, Error, release::workload},
};

/// Points the app's Services as `exposure` says.
pub async fn expose(ctx: &Context, rel: &Release, siblings: &[Release], exposure: &Exposure) -> Result<(), Error> {
    let find = |name: &str| siblings.iter().find(|s| s.name_any() == name).or((rel.name_any() == name).then_some(rel));
    let selected: Vec<&Release> = match &exposure.serving {
        Serving::Only(r) => find(r).into_iter().collect(),
        Serving::Both { stable, candidate, .. } => [find(stable), find(candidate)].into_iter().flatten().collect(),
    };
    let Some(first) = selected.first() else { return Ok(()) };
    // The ports of the Release serving (the candidate's, while both do).
    let source = selected.last().copied().unwrap_or(first);
    let Some(ports) = &source.spec.service else { return Ok(()) };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), rel.ns());
    let selector = match exposure.serving {
        Serving::Only(_) => workload::selector(first),
        Serving::Both { .. } => workload::app_selector(&rel.spec.app),
    };
    ctx.caches.children.apply(&api, workload::service(&selected, &rel.spec.app, ports, selector)).await?;
    if exposure.preview
        && let Some(own_ports) = &rel.spec.service
    {
        let name = format!("{}-preview", rel.spec.app);
        let svc = workload::service(&[rel], &name, own_ports, workload::selector(rel));
        ctx.caches.children.apply(&api, svc).await?;
    }
    Ok(())
}
