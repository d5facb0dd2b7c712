//! API I/O of the Environment controller: [`watches`] (what wakes an Environment), [`observe`]
//! (everything its decision looks at), [`act`] (the effects and the status). One reconcile
//! observes, decides, then acts.

mod act;
mod observe;
mod watches;

use std::sync::Arc;

use kube::{Api, runtime::controller::Action};

pub use watches::controller;

use super::{NAME, decide};
use crate::{
    api::Environment,
    controller::{Context, Error},
};

pub async fn run(controller: kube::runtime::Controller<Environment>, ctx: Arc<Context>) {
    crate::controller::run_instrumented(NAME, controller, reconcile, ctx).await
}

/// One reconcile; what its owner should hear of a failure (a refused child, a quota) is reported
/// on the Environment (see [`crate::controller::reported`]).
async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_environment(&env, &ctx).await;
    let api: Api<Environment> = Api::all(ctx.client.clone());
    crate::controller::reported(&ctx, &api, &*env, env.status.as_ref(), result).await
}

/// Observe, decide, act: nothing is written before the decision.
async fn reconcile_environment(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    let seen = observe::environment(ctx, env).await?;
    let observation = seen.observation(&ctx.config);
    let outcome = decide::decide(&observation);
    act::carry_out(ctx, &observation, outcome).await
}

#[cfg(test)]
mod tests;
