//! API I/O of the Release controller.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::EventType,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::json;
use tracing::info;

use super::{
    ABORT, APPROVED_BY, NAME, PROMOTE, REVERT, desired_status, enter, operate,
    queue::{self, Entry, Role},
    rollout::{self, Decision, Verdict},
    split::split,
    workload,
};
use crate::{
    api::{ApprovalRecord, Environment, Release, ReleasePhase, ReleaseStatus, StrategyType, condition, reason},
    controller::{
        Context, Error, conditions, environment::namespace_of, publish_phase_change, status::FIELD_MANAGER,
        status::apply_status, watch,
    },
};

/// Finished Releases per app whose Deployments are kept (scaled to zero).
const HISTORY_LIMIT: usize = 3;
/// When to look again (`None`: on the next change only).
type Next = Option<Duration>;

/// How often waits that no watch event ends are looked at again (tests running, an upstream
/// Environment); a rollout looks again at least every 12 of these.
const ROLLOUT_REQUEUE: Duration = Duration::from_secs(5);

/// The Release controller, ready to run: it also watches the Deployments Releases own and
/// re-runs every Release of an app when one of them changes (the queue is per app).
pub fn controller(ctx: Arc<Context>) -> Controller<Release> {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().page_size(ctx.config.page_size);
    let scope = ctx.config.watch_namespace.as_deref();
    let (store, writer) = reflector::store();
    let _ = ctx.releases.set(store.clone());
    let (changes, changed) = futures::channel::mpsc::unbounded::<Release>();
    let c = ctx.clone();
    let releases =
        watch::objects(scoped::<Release>(&client, scope), wc.clone(), writer, ctx.clone()).inspect_ok(move |r| {
            c.release_changed(r);
            drop(changes.unbounded_send(r.clone()))
        });
    let controller = Controller::for_stream(releases, store.clone()).with_config(watch::controller_config(&ctx));
    let owned = wc.clone().labels(&format!("{}={}", crate::api::label::MANAGED_BY, crate::api::label::MANAGER));
    // HorizontalPodAutoscalers fill `ctx.autoscalers` and wake the Releases of the app they target.
    let rel_store = store.clone();
    let autoscalers =
        watcher(scoped::<HorizontalPodAutoscaler>(&client, scope), wc.clone()).default_backoff().modify(watch::lean);
    let autoscalers = match ctx.take_autoscalers_writer() {
        Some(writer) => autoscalers.reflect(writer).boxed(),
        None => autoscalers.boxed(),
    };
    let c = ctx.clone();
    let targeted = move |hpa: HorizontalPodAutoscaler| {
        let target = hpa.spec.scale_target_ref.name;
        let refs = rel_store
            .state()
            .into_iter()
            .filter(|r| r.namespace() == hpa.metadata.namespace)
            .filter(|r| workload::deployment_name(&r.spec.app, &r.spec.version) == target)
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    };
    let controller = controller.watches_stream(autoscalers.touched_objects(), targeted);
    // Owned Deployments: their status is what rollouts wait for, so these are full objects, lean:
    // without the pod template (the largest part, which phaseloop builds and never reads back)
    // and managed fields. Their metadata also feeds the children cache. Services: metadata only.
    let (deployment_store, deployment_writer) = reflector::store();
    let _ = ctx.deployments.set(deployment_store);
    let mut children_writer = ctx.children.take_writer::<Deployment>();
    let deployments = watcher(scoped::<Deployment>(&client, scope), owned.clone())
        .default_backoff()
        .modify(|d| {
            watch::lean(d);
            d.spec.template = Default::default();
        })
        .map_ok(move |event| {
            if let Some(w) = children_writer.as_mut() {
                w.apply_watcher_event(&crate::controller::children::metadata_event(&event));
            }
            event
        })
        .reflect(deployment_writer)
        .touched_objects();
    let services =
        watch::metadata(scoped::<watch::Meta<Service>>(&client, scope), owned, ctx.children.take_writer::<Service>());
    let c = ctx.clone();
    let owner = move |meta: &kube::api::ObjectMeta| {
        let refs = watch::owner(meta, "Release")
            .map(|(name, ns)| ObjectRef::new(&name).within(&ns.unwrap_or_default()))
            .into_iter()
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    };
    let owner2 = owner.clone();
    let controller = controller
        .watches_stream(deployments, move |d| owner(&d.metadata))
        .watches_stream(services, move |s| owner2(&s.metadata));
    // Every Release of an app re-runs when one of them changes (the queue is per app). The changes
    // come from this controller's own watch, after its cache has taken them in: a sibling woken by
    // a deletion no longer sees the deleted Release, and no second watch of Releases is needed.
    let c = ctx.clone();
    controller.watches_stream(changed.map(Ok::<_, watcher::Error>), move |r: Release| {
        let refs = store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == r.namespace() && o.name_any() != r.name_any() && o.spec.app == r.spec.app)
            .map(|o| ObjectRef::from_obj(&*o))
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    })
}

pub async fn run(controller: Controller<Release>, ctx: Arc<Context>) {
    crate::controller::drive(NAME, controller, reconcile, ctx).await
}

fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("now is representable")
}

/// A child the API server refuses (422 or 400: a template it finds invalid, say) is bad input that
/// admission of the Release could not see: reported in `Degraded` with the API server's words and
/// an Event, instead of a silent retry loop. Nothing was changed by the refused write.
async fn reconcile(rel: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    match reconcile_release(rel.clone(), ctx.clone()).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
            let api: Api<Release> = Api::namespaced(ctx.client.clone(), &rel.namespace().unwrap_or_default());
            let now_t = Time(now());
            let mut status = rel.status.clone().unwrap_or_default();
            let why = format!("the API server refused an object built from this spec: {}", e.message);
            set(&mut status, condition::DEGRADED, true, reason::INVALID_SPEC, &why, &rel, &now_t);
            status.message = Some(format!("invalid spec, nothing was changed: {why}"));
            if rel.status.as_ref() != Some(&status) {
                crate::controller::publish(&ctx, &*rel, EventType::Warning, reason::INVALID_SPEC, why).await;
            }
            write(&api, &rel, &ctx, status).await?;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        other => other,
    }
}

async fn reconcile_release(rel: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rel.namespace().unwrap_or_default();
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.count_dora(&rel);
    let now_t = Time(now());
    let finished = rel.status.as_ref().and_then(|s| s.phase).is_some_and(ReleasePhase::is_terminal);
    let env = if finished { None } else { environment_of(&ctx, &ns).await? };
    let mut status = desired_status(&rel, env.as_ref().map(|e| e.spec.tier), &now_t);
    let invalid = conditions::is_true(&status.conditions, condition::DEGRADED);
    let phase = status.phase.unwrap_or(ReleasePhase::Pending);
    if invalid || phase.is_terminal() {
        write(&api, &rel, &ctx, status).await?;
        return Ok(Action::await_change());
    }

    let siblings = siblings(&ctx, &rel);
    let entries: Vec<Entry> = siblings.iter().map(entry).collect();
    let roles = queue::roles(&entries);
    let me = siblings.iter().position(|s| s.name_any() == rel.name_any());
    let role = me.map(|i| roles[i].clone()).unwrap_or(Role::Queued(1));
    let stable = siblings.iter().zip(&roles).find(|(_, r)| **r == Role::Stable).map(|(s, _)| s.clone());
    let sleeping = env.as_ref().and_then(|e| e.status.as_ref()).is_some_and(|s| s.slept_at.is_some());
    let total = operate::held_total(&rel, &siblings, sleeping);

    let action: Next = match role {
        Role::Done => None,
        Role::Superseded => {
            enter(&mut status, ReleasePhase::Superseded, &now_t);
            status.message = Some("a newer Release of the app took over".into());
            status.queue_position = None;
            None
        }
        Role::Queued(position) => {
            enter(&mut status, ReleasePhase::Pending, &now_t);
            status.queue_position = Some(position);
            status.message = Some(format!("Queued: position {position} in the deploy queue of {}", rel.spec.app));
            None
        }
        Role::Stable if rel.annotations().contains_key(REVERT) => {
            revert(&ctx, &rel, &siblings, total, &mut status, &now_t).await?
        }
        Role::Stable => {
            status.queue_position = None;
            let rolling = siblings.iter().any(|s| {
                matches!(
                    s.status.as_ref().and_then(|s| s.phase),
                    Some(ReleasePhase::Progressing | ReleasePhase::Paused)
                )
            });
            let mut scale_again = None;
            if !rolling {
                let (total, next) = operate::total(&ctx, &rel, &siblings, "", sleeping, &mut status, &now_t).await;
                scale_again = next;
                apply_deployment(&ctx, &rel, total).await?;
                apply_services(&ctx, &rel, &rel, false).await?;
                status.candidate_replicas = Some(total);
                status.replicas = Some(total);
                status.weight = Some(100);
            }
            sooner(retire_previous(&ctx, &rel, &siblings, &status, now()).await?, scale_again)
        }
        Role::Active => {
            status.queue_position = None;
            drive(&ctx, &rel, &siblings, stable.as_ref(), env.as_ref(), sleeping, &mut status, &now_t).await?
        }
    };
    write(&api, &rel, &ctx, status).await?;
    Ok(action.map_or_else(Action::await_change, Action::requeue))
}

/// `at + by`, saturating: a window of 999999999h (which the schema admits) must not overflow.
fn later(at: Timestamp, by: Duration) -> Timestamp {
    let by = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
    at.checked_add(by).unwrap_or(Timestamp::MAX)
}

/// The earlier of two wake-ups.
fn sooner(a: Next, b: Next) -> Next {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn entry(r: &Release) -> Entry {
    let phase = r.status.as_ref().and_then(|s| s.phase);
    let approved = r.spec.approval.as_ref().is_none_or(|a| !a.required) || r.annotations().contains_key(APPROVED_BY);
    let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
    Entry { name: r.name_any(), created: (created, r.name_any()), phase, approved }
}

/// All namespaces, or only the one of single-namespace mode.
fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Releases of `rel`'s app in its namespace (itself included), from the cache, each as this
/// process last wrote it when the cache has not caught up yet.
fn siblings(ctx: &Context, rel: &Release) -> Vec<Release> {
    let Some(store) = ctx.releases.get() else { return vec![rel.clone()] };
    let ns = rel.namespace();
    let mut siblings: Vec<Release> = store
        .state()
        .into_iter()
        .filter(|r| r.namespace() == ns && r.spec.app == rel.spec.app)
        .map(|r| (*ctx.written.freshest(r)).clone())
        .collect();
    siblings.sort_by_key(|r| r.name_any());
    siblings
}

async fn environment_of(ctx: &Context, ns: &str) -> Result<Option<Environment>, Error> {
    // Single-namespace mode cannot read the cluster-scoped Environments: there are none to see.
    if ctx.config.watch_namespace.is_some() {
        return Ok(None);
    }
    // From the Environment controller's cache once it is synced (awaited after a start); from the
    // API server if it is not, since "no Environment" would change the gates.
    if let Some(store) = crate::controller::synced_store(&ctx.environments).await {
        return Ok(store.find(|e| namespace_of(e) == ns).map(|e| (*ctx.written.freshest(e)).clone()));
    }
    // An Environment's namespace defaults to its name: one GET in the common case, a LIST otherwise.
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    if let Some(env) = envs.get_opt(ns).await?.filter(|e| namespace_of(e) == ns) {
        return Ok(Some(env));
    }
    Ok(envs.list(&ListParams::default()).await?.items.into_iter().find(|e| namespace_of(e) == ns))
}

async fn write(api: &Api<Release>, rel: &Release, ctx: &Context, status: ReleaseStatus) -> Result<(), Error> {
    let old = rel.status.as_ref().and_then(|s| s.phase);
    if apply_status(api, &ctx.written, rel, rel.status.as_ref(), &status).await? {
        let mut after = rel.clone();
        after.status = Some(status.clone());
        ctx.count_dora(&after);
        let new = status.phase.map(ReleasePhase::as_str);
        publish_phase_change(ctx, rel, old.map(ReleasePhase::as_str), new, status.message.clone()).await;
    }
    Ok(())
}

/// The gate, then the rollout of the active Release.
#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &Context,
    rel: &Release,
    siblings: &[Release],
    stable: Option<&Release>,
    env: Option<&Environment>,
    sleeping: bool,
    status: &mut ReleaseStatus,
    now: &Time,
) -> Result<Next, Error> {
    let phase = status.phase.unwrap_or(ReleasePhase::Pending);
    let tested = conditions::is_true(&status.conditions, condition::TESTED);
    if !rel.spec.tests.is_empty() && !tested && matches!(phase, ReleasePhase::Pending | ReleasePhase::Testing) {
        let ns = match test_namespace(ctx, rel, env).await? {
            Ok(Some(ns)) => ns,
            Ok(None) => {
                enter(status, ReleasePhase::Testing, now);
                status.message = Some("waiting for the test Environment".into());
                return Ok(Some(ROLLOUT_REQUEUE));
            }
            Err(why) => {
                enter(status, ReleasePhase::Failed, now);
                set(status, condition::TESTED, false, "NoTestEnvironment", &why, rel, now);
                status.message = Some(why);
                return Ok(None);
            }
        };
        let outcome = run_tests(ctx, rel, &ns, status).await?;
        if outcome.is_some() {
            drop_test_environment(ctx, rel).await?;
        }
        match outcome {
            None => {
                enter(status, ReleasePhase::Testing, now);
                set(status, condition::TESTED, false, "Running", "tests are running against the candidate", rel, now);
                return Ok(Some(ROLLOUT_REQUEUE));
            }
            Some(Err(why)) => {
                // The running version is never touched: only the candidate goes away.
                apply_deployment(ctx, rel, 0).await?;
                enter(status, ReleasePhase::Failed, now);
                status.message = Some(why.clone());
                set(status, condition::TESTED, false, "Failed", &why, rel, now);
                return Ok(None);
            }
            Some(Ok(())) => set(status, condition::TESTED, true, "Passed", "every test passed", rel, now),
        }
    }
    if matches!(phase, ReleasePhase::Pending | ReleasePhase::Testing | ReleasePhase::AwaitingApproval) {
        let promotion = env.and_then(|e| e.spec.promotion.as_ref());
        if promotion.is_some_and(|p| p.freeze) {
            enter(status, ReleasePhase::AwaitingApproval, now);
            status.message = Some("the Environment is frozen: no new rollouts".into());
            return Ok(None);
        }
        if let Some(p) = promotion
            && let Some(upstream) = &p.from
            && let Some(wait) = promotion_wait(ctx, rel, upstream, p.soak.map(Into::into), now).await?
        {
            enter(status, ReleasePhase::AwaitingApproval, now);
            set(status, condition::APPROVED, false, "PromotionPending", &wait.0, rel, now);
            status.message = Some(wait.0);
            return Ok(Some(wait.1));
        }
        let required =
            rel.spec.approval.as_ref().is_some_and(|a| a.required) || promotion.is_some_and(|p| p.require_approval);
        match rel.annotations().get(APPROVED_BY) {
            None if required => {
                enter(status, ReleasePhase::AwaitingApproval, now);
                status.message = Some("waiting for approval: kubectl phaseloop approve".into());
                set(status, condition::APPROVED, false, "AwaitingApproval", "approval required", rel, now);
                return Ok(None);
            }
            who => {
                if let Some(who) = who {
                    status
                        .approval
                        .get_or_insert(ApprovalRecord { approved_by: who.clone(), approved_at: now.clone() });
                }
                set(status, condition::APPROVED, true, "Approved", "the gate is open", rel, now);
            }
        }
        enter(status, ReleasePhase::Progressing, now);
        status.current_step = Some(0);
        status.step_started_at = Some(now.clone());
        status.stable_release = stable.map(|s| s.name_any());
        status.message = Some("rolling out".into());
    }

    // From here on this Release owns the app's total: the autoscaler decides it, the rollout splits it.
    let stable_version = stable.map(|s| s.spec.version.as_str()).unwrap_or("");
    let (total, scale_again) = operate::total(ctx, rel, siblings, stable_version, sleeping, status, now).await;
    let plan = rollout::plan(&rel.spec.strategy);
    let step = status.current_step.unwrap_or(0).max(0) as usize;
    let weight = rollout::weight_at(&plan, step);
    let blue_green = rel.spec.strategy.type_ == StrategyType::BlueGreen;
    // Blue-green brings the candidate up fully before any traffic; the others split by weight.
    let rolling = rel.spec.strategy.type_ == StrategyType::Rolling;
    let (candidate, mut stable_replicas) = match stable {
        None => (total, 0),
        Some(_) if blue_green => (total, total),
        Some(_) => split(total, weight),
    };
    let live = live_deployment(ctx, rel, candidate).await?;
    if rolling && stable.is_some() {
        // A rolling update: the previous version gives up one replica per candidate replica that is
        // available, so capacity never drops below the total.
        let available = live.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        stable_replicas = (total - available).max(0);
    }
    if let Some(s) = stable {
        apply_deployment(ctx, s, stable_replicas).await?;
    }
    // During a rollout the Service selects both versions (traffic follows the pod ratio), except
    // blue-green, which keeps serving the stable version and previews the candidate.
    match stable {
        Some(s) if blue_green => apply_services(ctx, rel, s, true).await?,
        _ => apply_services(ctx, rel, rel, stable.is_some()).await?,
    }
    status.weight = Some(if blue_green { 0 } else { weight });
    status.candidate_replicas = Some(candidate);
    status.stable_replicas = stable.map(|_| stable_replicas);
    status.replicas = Some(candidate + stable_replicas);

    let verdict = analyse(ctx, rel, stable, status, now).await;
    let ready = deployment_ready(&live, candidate);
    let started = status.step_started_at.as_ref().map(|t| t.0).unwrap_or(now.0);
    let deadline: Duration = rel.spec.strategy.progress_deadline.into();
    let waiting_for_pods = matches!(plan.get(step), Some(rollout::Step::Weight(_)));
    let observed = rollout::Observed {
        step,
        step_started: started,
        now: now.0,
        candidate_ready: ready,
        promoted: rel.annotations().contains_key(PROMOTE),
        analysis: if rel.annotations().contains_key(ABORT) {
            Verdict::Failed("aborted by a person".into())
        } else {
            verdict
        },
        deadline_missed: waiting_for_pods
            && !ready
            && now.0.duration_since(started).as_secs() as u64 > deadline.as_secs(),
    };
    let next = match rollout::decide(&plan, &observed) {
        Decision::Hold { wait, .. } => {
            enter(status, ReleasePhase::Progressing, now);
            set(
                status,
                condition::PROGRESSING,
                true,
                "RollingOut",
                &format!("step {}/{}", step + 1, plan.len()),
                rel,
                now,
            );
            status.message = Some(format!("step {}/{}: weight {weight}%", step + 1, plan.len()));
            let analysis = rel.spec.strategy.analysis.as_ref().map(|a| Duration::from(a.interval));
            let elapsed = Duration::try_from(now.0.duration_since(started)).unwrap_or_default();
            Some(rollout::recheck_after(wait, deadline.saturating_sub(elapsed), analysis, ROLLOUT_REQUEUE * 12))
        }
        Decision::Pause { reason, .. } => {
            enter(status, ReleasePhase::Paused, now);
            set(status, condition::PROGRESSING, true, "Paused", &reason, rel, now);
            status.message = Some(reason);
            None
        }
        Decision::Advance { step: next } => {
            status.current_step = Some(next as i32);
            status.step_started_at = Some(now.clone());
            if status.phase == Some(ReleasePhase::Paused) {
                enter(status, ReleasePhase::Progressing, now);
            }
            consume(ctx, rel, PROMOTE).await?;
            Some(Duration::from_millis(100))
        }
        Decision::Promote => {
            info!(release = %rel.name_any(), "promoted: Live");
            apply_services(ctx, rel, rel, false).await?;
            enter(status, ReleasePhase::Live, now);
            status.weight = Some(100);
            status.message = Some("Live".into());
            let window: Duration = rel.spec.strategy.revert_window.into();
            status.revert_window_ends_at = stable.map(|_| Time(later(now.0, window)));
            set(status, condition::AVAILABLE, true, "Live", "the app serves from this Release", rel, now);
            set(status, condition::PROGRESSING, false, "Complete", "the rollout is complete", rel, now);
            Some(Duration::from_millis(100))
        }
        Decision::Abort(why) if rel.spec.strategy.auto_rollback || stable.is_none() => {
            info!(release = %rel.name_any(), %why, "rolling back");
            apply_deployment(ctx, rel, 0).await?;
            if let Some(s) = stable {
                apply_deployment(ctx, s, total).await?;
                apply_services(ctx, s, s, false).await?;
            }
            let phase = if stable.is_some() { ReleasePhase::RolledBack } else { ReleasePhase::Failed };
            enter(status, phase, now);
            status.message = Some(why.clone());
            status.weight = Some(0);
            set(status, condition::DEGRADED, true, "RolledBack", &why, rel, now);
            set(status, condition::PROGRESSING, false, "RolledBack", &why, rel, now);
            None
        }
        Decision::Abort(why) => {
            enter(status, ReleasePhase::Paused, now);
            status.message = Some(format!("{why}; autoRollback is off: abort or fix"));
            None
        }
    };
    Ok(sooner(next, scale_again))
}

/// Runs the background analysis when its interval has passed and returns the verdict so far.
/// A failing or empty query is inconclusive, never a failure.
async fn analyse(
    ctx: &Context,
    rel: &Release,
    stable: Option<&Release>,
    status: &mut ReleaseStatus,
    now: &Time,
) -> Verdict {
    let Some(analysis) = &rel.spec.strategy.analysis else { return Verdict::Passing };
    let interval: Duration = analysis.interval.into();
    let last = status.analysis.iter().filter_map(|r| r.measured_at.as_ref()).map(|t| t.0).max();
    let due = last.is_none_or(|l| now.0.duration_since(l).as_secs() as u64 >= interval.as_secs());
    if due {
        let prometheus = ctx.config.prometheus_url.as_deref().map(crate::prometheus::Prometheus::new);
        let ns = rel.namespace().unwrap_or_default();
        let vars = crate::promql::Vars {
            app: &rel.spec.app,
            version: &rel.spec.version,
            namespace: &ns,
            stable_version: stable.map(|s| s.spec.version.as_str()).unwrap_or(""),
        };
        for m in &analysis.metrics {
            let value = match (&prometheus, crate::promql::render(&m.query, &vars)) {
                (Some(p), Ok(q)) => {
                    let result = p.query_scalar(&q).await;
                    ctx.metrics.observe_query("analysis", &result);
                    result.ok()
                }
                _ => None,
            };
            let previous = status.analysis.iter().position(|r| r.name == m.name);
            let result = super::analysis::record(previous.map(|i| &status.analysis[i]), m, value, now);
            match previous {
                Some(i) => status.analysis[i] = result,
                None => status.analysis.push(result),
            }
        }
    }
    super::analysis::verdict(&analysis.metrics, &status.analysis)
}

/// Runs the tests against a one-replica candidate behind `<app>-preview`, one Job per attempt.
/// `None` while running, then `Some(Ok)` or `Some(Err(why))`.
async fn run_tests(
    ctx: &Context,
    rel: &Release,
    ns: &str,
    status: &mut ReleaseStatus,
) -> Result<Option<Result<(), String>>, Error> {
    use super::testing::{self, Next};
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut deployment = workload::deployment(rel, 1);
    relocate(&mut deployment.metadata, rel, ns);
    let candidate = Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .patch(&deployment.metadata.name.clone().unwrap_or_default(), &params, &Patch::Apply(&deployment))
        .await?;
    let mut host = String::new();
    let port = rel.spec.service.as_ref().and_then(|s| s.ports.first()).map(|p| p.port);
    if let Some(ports) = &rel.spec.service {
        let name = format!("{}-preview", rel.spec.app);
        let mut preview = workload::service(rel, &name, ports, workload::selector(rel));
        relocate(&mut preview.metadata, rel, ns);
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(&name, &params, &Patch::Apply(&preview)).await?;
        host = format!("{name}.{ns}.svc");
    }
    if !deployment_ready(&candidate, 1) {
        status.message = Some("waiting for the candidate to become ready for its tests".into());
        return Ok(None);
    }
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(ctx.client.clone(), ns);
    let mut running = false;
    for test in &rel.spec.tests {
        let attempt = status.tests.iter().find(|t| t.name == test.name).map(|t| t.attempts).unwrap_or(0);
        let phase = match attempt {
            0 => None,
            n => jobs.get_opt(&testing::job_name(rel, test, n)).await?.map(|j| testing::job_phase(&j)),
        };
        let (attempt, phase, message) = match testing::next(test, attempt, phase) {
            Next::Passed => (attempt, testing::SUCCEEDED, None),
            Next::Failed => {
                (attempt, testing::FAILED, Some(format!("test {} failed after {attempt} attempt(s)", test.name)))
            }
            Next::Run(n) => {
                let name = testing::job_name(rel, test, n);
                if jobs.get_opt(&name).await?.is_none() {
                    let mut job = testing::job(rel, test, n, &host, port);
                    relocate(&mut job.metadata, rel, ns);
                    jobs.patch(&name, &params, &Patch::Apply(&job)).await?;
                }
                running = true;
                (n, testing::RUNNING, None)
            }
        };
        let result = testing::result(test, attempt, phase, &testing::job_name(rel, test, attempt.max(1)), message);
        match status.tests.iter_mut().find(|t| t.name == test.name) {
            Some(t) => *t = result,
            None => status.tests.push(result),
        }
    }
    if let Some(failed) = status.tests.iter().find(|t| t.phase == testing::FAILED) {
        return Ok(Some(Err(failed.message.clone().unwrap_or_else(|| format!("test {} failed", failed.name)))));
    }
    Ok(if running { None } else { Some(Ok(())) })
}

/// Moves an object built for the Release's namespace into `ns` (a test Environment): owner
/// references cannot cross namespaces, so the test Environment's deletion cleans it up instead.
fn relocate(meta: &mut kube::api::ObjectMeta, rel: &Release, ns: &str) {
    if rel.namespace().as_deref() != Some(ns) {
        meta.namespace = Some(ns.to_string());
        meta.owner_references = None;
    }
}

/// Name of a Release's ephemeral test Environment.
fn test_environment_name(rel: &Release) -> String {
    let mut name = format!("{}-{}-test", rel.namespace().unwrap_or_default(), rel.name_any());
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// Where the tests run: the Release's namespace, or the namespace of its ephemeral test
/// Environment branched from this namespace's Environment. `Ok(None)` while it is provisioning.
async fn test_namespace(
    ctx: &Context,
    rel: &Release,
    parent: Option<&Environment>,
) -> Result<Result<Option<String>, String>, Error> {
    let ns = rel.namespace().unwrap_or_default();
    let Some(te) = &rel.spec.test_environment else { return Ok(Ok(Some(ns))) };
    let Some(parent) = parent else {
        return Ok(Err(format!("testEnvironment branches from the Environment of namespace {ns}, and there is none")));
    };
    let name = test_environment_name(rel);
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    let desired = json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "labels": {workload::RELEASE_LABEL: rel.name_any(), "phaseloop.dev/release-namespace": ns}},
        "spec": {"tier": "test", "from": parent.name_any(), "ttl": te.ttl.to_string()},
    });
    let env = match envs.get_opt(&name).await? {
        Some(env) => env,
        None => envs.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?,
    };
    let ready = env.status.as_ref().is_some_and(|s| s.phase == Some(crate::api::EnvironmentPhase::Ready));
    Ok(Ok(ready.then(|| namespace_of(&env))))
}

/// Deletes the ephemeral test Environment once the tests are over.
async fn drop_test_environment(ctx: &Context, rel: &Release) -> Result<(), Error> {
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

fn set(
    status: &mut ReleaseStatus,
    type_: &'static str,
    ok: bool,
    reason_: &'static str,
    msg: &str,
    rel: &Release,
    now: &Time,
) {
    let desired = conditions::Desired { type_, status: ok, reason: reason_, message: msg.to_string() };
    conditions::upsert(&mut status.conditions, desired, rel.metadata.generation, now);
}

/// What the promotion rule still waits for: the same app version Live in the upstream
/// Environment for at least `soak`. `None` when the rule is met.
async fn promotion_wait(
    ctx: &Context,
    rel: &Release,
    upstream: &str,
    soak: Option<Duration>,
    now: &Time,
) -> Result<Option<(String, Duration)>, Error> {
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    let Some(env) = envs.get_opt(upstream).await? else {
        return Ok(Some((
            format!("promotion.from names Environment {upstream}, which does not exist"),
            ROLLOUT_REQUEUE * 6,
        )));
    };
    let releases: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace_of(&env));
    let live_since = releases
        .list(&ListParams::default().fields(&format!("spec.app={}", rel.spec.app)))
        .await?
        .items
        .into_iter()
        .filter(|r| r.spec.version == rel.spec.version)
        .filter_map(|r| {
            r.status.filter(|s| s.phase == Some(ReleasePhase::Live)).and_then(|s| s.phase_times.get("Live").cloned())
        })
        .map(|t| t.0)
        .min();
    let what = format!("{} {}", rel.spec.app, rel.spec.version);
    let Some(since) = live_since else {
        return Ok(Some((format!("waiting for {what} to be Live in {upstream}"), ROLLOUT_REQUEUE * 3)));
    };
    let soak = soak.unwrap_or_default();
    let live_for = Duration::try_from(now.0.duration_since(since)).unwrap_or_default();
    if live_for < soak {
        let left = soak - live_for;
        return Ok(Some((
            format!("{what} soaking in {upstream}: {}s left", left.as_secs()),
            left + Duration::from_secs(1),
        )));
    }
    Ok(None)
}

/// Restores the previous version at once (it is still warm) within the revert window: the
/// previous Release is Live again, this one `Reverted`.
async fn revert(
    ctx: &Context,
    rel: &Release,
    siblings: &[Release],
    total: i32,
    status: &mut ReleaseStatus,
    now: &Time,
) -> Result<Next, Error> {
    let previous = status.stable_release.as_ref().and_then(|p| siblings.iter().find(|s| &s.name_any() == p));
    let open = status.revert_window_ends_at.as_ref().is_some_and(|end| now.0 < end.0);
    let Some(previous) = previous.filter(|_| open) else {
        consume(ctx, rel, REVERT).await?;
        let why = "revert refused: the revert window is closed or there is no previous Release";
        crate::controller::publish(ctx, rel, kube::runtime::events::EventType::Warning, "RevertRefused", why.into())
            .await;
        return Ok(None);
    };
    info!(release = %rel.name_any(), previous = %previous.name_any(), "reverting");
    apply_deployment(ctx, previous, total).await?;
    apply_services(ctx, previous, previous, false).await?;
    apply_deployment(ctx, rel, 0).await?;
    // This Release is written Reverted before the previous one is written Live: a reconcile of the
    // previous one in between would otherwise see two Live Releases and supersede it again.
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &rel.namespace().unwrap_or_default());
    enter(status, ReleasePhase::Reverted, now);
    status.message = Some(format!("reverted to {}", previous.name_any()));
    status.revert_window_ends_at = None;
    status.weight = Some(0);
    status.candidate_replicas = Some(0);
    write(&api, rel, ctx, status.clone()).await?;
    let mut restored = previous.status.clone().unwrap_or_default();
    enter(&mut restored, ReleasePhase::Live, now);
    restored.message = Some(format!("restored by the revert of {}", rel.name_any()));
    restored.revert_window_ends_at = None;
    restored.candidate_replicas = Some(total);
    restored.replicas = Some(total);
    write(&api, previous, ctx, restored).await?;
    Ok(None)
}

/// After promotion the previous version stays warm for the revert window, then scales to zero.
async fn retire_previous(
    ctx: &Context,
    rel: &Release,
    siblings: &[Release],
    status: &ReleaseStatus,
    now: Timestamp,
) -> Result<Next, Error> {
    let Some(ends) = status.revert_window_ends_at.as_ref().map(|t| t.0) else { return Ok(None) };
    if now < ends {
        return Ok(Some(Duration::try_from(ends.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)));
    }
    // Finished Releases, newest first: the Deployments of those beyond the history limit go away
    // (the Releases stay as the record), the others are kept at zero for a quick re-release.
    let mut finished: Vec<&Release> = siblings
        .iter()
        .filter(|s| s.name_any() != rel.name_any())
        .filter(|s| s.status.as_ref().and_then(|s| s.phase).is_some_and(ReleasePhase::is_terminal))
        .collect();
    finished.sort_by_key(|s| std::cmp::Reverse(s.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second())));
    let ns = rel.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    for old in finished.iter().skip(HISTORY_LIMIT) {
        let name = workload::deployment_name(&old.spec.app, &old.spec.version);
        ctx.children.delete(&deployments, Some(&ns), &name).await?;
    }
    for old in finished.iter().take(HISTORY_LIMIT) {
        // Kept ones go to zero: nothing to do when absent (deleted earlier) or already at zero.
        let name = workload::deployment_name(&old.spec.app, &old.spec.version);
        ctx.children.synced::<Deployment>().await;
        let exists = match ctx.children.get::<Deployment>(Some(&ns), &name) {
            Ok(cached) => cached.is_some(),
            Err(()) => deployments.get_opt(&name).await?.is_some(),
        };
        if exists {
            apply_deployment(ctx, old, 0).await?;
        }
    }
    Ok(None)
}

/// Server-side apply of a Release's full Deployment (a partial apply under the same field manager
/// would drop the fields it leaves out).
/// A Deployment another autoscaler targets is left alone (the conflict is reported in
/// `ScalingActive`): two owners of `replicas` would fight.
async fn apply_deployment(ctx: &Context, rel: &Release, replicas: i32) -> Result<Option<Deployment>, Error> {
    let d = workload::deployment(rel, replicas);
    let ns = rel.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let name = d.metadata.name.clone().unwrap_or_default();
    if operate::autoscaler_of(ctx, &ns, &name).is_some() {
        return Ok(api.get_opt(&name).await?);
    }
    Ok(ctx.children.apply(&api, d).await?)
}

/// The Deployment of `rel` at `replicas`, as the API server has it now (applied when it differs).
async fn live_deployment(ctx: &Context, rel: &Release, replicas: i32) -> Result<Deployment, Error> {
    if let Some(d) = apply_deployment(ctx, rel, replicas).await? {
        return Ok(d);
    }
    // Unchanged: its status from the cache (as fresh as the watch, which is what woke this
    // reconcile), else from the API server.
    let ns = rel.namespace().unwrap_or_default();
    let name = workload::deployment_name(&rel.spec.app, &rel.spec.version);
    if let Some(d) = ctx.deployments.get().and_then(|s| s.get(&ObjectRef::new(&name).within(&ns))) {
        return Ok((*d).clone());
    }
    Ok(Api::<Deployment>::namespaced(ctx.client.clone(), &ns).get(&name).await?)
}

/// The Service `<app>` selecting `serving` (or every version while `both`), and for blue-green
/// the preview Service `<app>-preview` selecting `rel`.
async fn apply_services(ctx: &Context, rel: &Release, serving: &Release, both: bool) -> Result<(), Error> {
    let Some(ports) = &rel.spec.service else { return Ok(()) };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &rel.namespace().unwrap_or_default());
    let selector = if both { workload::app_selector(&rel.spec.app) } else { workload::selector(serving) };
    ctx.children.apply(&api, workload::service(rel, &rel.spec.app, ports, selector)).await?;
    if rel.spec.strategy.type_ == StrategyType::BlueGreen {
        let name = format!("{}-preview", rel.spec.app);
        ctx.children.apply(&api, workload::service(rel, &name, ports, workload::selector(rel))).await?;
    }
    Ok(())
}

fn deployment_ready(d: &Deployment, want: i32) -> bool {
    let Some(s) = &d.status else { return false };
    let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    observed && s.available_replicas.unwrap_or(0) >= want && s.updated_replicas.unwrap_or(0) >= want
}

/// Removes a one-shot annotation once acted upon.
async fn consume(ctx: &Context, rel: &Release, key: &str) -> Result<(), Error> {
    if rel.annotations().contains_key(key) {
        let api: Api<Release> = Api::namespaced(ctx.client.clone(), &rel.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {key: null}}});
        api.patch(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}
