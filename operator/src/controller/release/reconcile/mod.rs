//! API I/O of the Release controller: [`watches`] (what wakes a Release), [`observe`] (everything
//! its decision looks at; [`routes`] for what it steers through the Gateway API), [`act`] (the
//! effects and the status), [`test_environment`] (the Test phase's objects). One reconcile observes, decides, then acts, one app at a time.

mod act;
mod observe;
mod routes;
mod test_environment;
mod watches;

use std::sync::Arc;

use kube::{
    Api,
    runtime::{controller::Action, reflector::ObjectRef},
};

pub use watches::controller;

use super::{NAME, decide};
use crate::{
    api::Release,
    controller::{Context, Error},
};

pub async fn run(controller: kube::runtime::Controller<Release>, ctx: Arc<Context>) {
    crate::controller::run_instrumented(NAME, controller, reconcile, ctx).await
}

/// One reconcile; what its owner should hear of a failure (a refused child, a quota) is reported
/// on the Release (see [`crate::controller::reported`]).
async fn reconcile(rel: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_release(&rel, &ctx).await;
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
    crate::controller::reported(&ctx, &api, &*rel, rel.status.as_ref(), result).await
}

/// Observe, decide, act. The app's Releases decide one at a time, each seeing the last one's
/// writes, so the app's Service and workloads have one writer at a time.
async fn reconcile_release(rel: &Release, ctx: &Context) -> Result<Action, Error> {
    let _app = ctx.app_locks.lock(rel.ns(), &rel.spec.app).await;
    // The latest version, now that the app's last decision is written.
    let cached = ctx.caches.releases.get(&ObjectRef::from_obj(rel)).unwrap_or_else(|| Arc::new(rel.clone()));
    let rel = &*ctx.written.freshest(cached);
    let seen = observe::release(ctx, rel).await?;
    let outcome = decide::decide(&seen.observation());
    let requeue = outcome.requeue;
    act::carry_out(ctx, rel, &seen.siblings, outcome).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests;
