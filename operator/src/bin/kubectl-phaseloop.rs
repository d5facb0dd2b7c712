//! `kubectl phaseloop`: the kubectl plugin for Releases and Environments. Installed on PATH as
//! `kubectl-phaseloop`, kubectl runs it for `kubectl phaseloop ...`.
#![forbid(unsafe_code)]

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use phaseloop::{
    api::{Environment, Release, ReleasePhase},
    controller::{
        environment::pipeline,
        release::{ABORT, APPROVED_BY, OVERRIDE, PROMOTE, REVERT, diff, steps},
    },
};

#[derive(Parser)]
#[command(name = "kubectl phaseloop", version, about = "Drive phaseloop Releases and Environments")]
struct Cli {
    /// Namespace of the Release (default: the kubeconfig's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a Release: phase, steps with a progress bar, weight, replicas, tests and analysis.
    Status {
        release: String,
        /// Keep following changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// What a Release changes against its app's Live Release in the namespace, field by field.
    Diff { release: String },
    /// Approve a Release waiting at its gate (records who approved).
    Approve { release: String },
    /// Go past the current pause of a rollout.
    Promote {
        release: String,
        /// Also go on past a failed analysis or a missed progress deadline (with `autoRollback:
        /// false`); recorded in the Release's status with who.
        #[arg(long)]
        r#override: bool,
    },
    /// Abort a rollout: all traffic returns to the stable version.
    Abort { release: String },
    /// Restore the previous version within the revert window.
    Revert { release: String },
    /// List Environments.
    Envs,
    /// An app's promotion pipeline: each Environment upstream first, the version Live there and
    /// the one on its way (and what it waits for: soak, approval, queue, freeze).
    Pipeline { app: String },
    /// Environment commands.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Push an Environment's expiry later, e.g. `extend pr-42 2h`.
    Extend { environment: String, duration: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line a person reads, whatever RUST_BACKTRACE says: `anyhow` prints a backtrace with the
    // Debug form a returned error would get.
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default().await.context("no usable Kubernetes configuration")?;
    let ns = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns);
    match cli.command {
        Command::Status { release, watch } => {
            print!("{}", render(&releases.get(&release).await?));
            if watch {
                let mut stream =
                    watcher(releases, watcher::Config::default().fields(&format!("metadata.name={release}")))
                        .applied_objects()
                        .boxed();
                while let Some(r) = stream.next().await {
                    print!("\n{}", render(&r?));
                }
            }
        }
        Command::Diff { release } => {
            let candidate = releases.get(&release).await.with_context(|| format!("release {release}"))?;
            let all = releases.list(&Default::default()).await?.items;
            let is_live = |r: &Release| r.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live);
            let Some(live) = all.iter().find(|r| r.spec.app == candidate.spec.app && is_live(r)) else {
                bail!("no Live Release of {} in {ns} to compare {release} with", candidate.spec.app);
            };
            let changes = diff::changes(&live.spec, &candidate.spec);
            print!("{}", diff::render(&live.name_any(), &release, &changes));
        }
        Command::Approve { release } => {
            // The approval names who gave it, as the API server knows them: an admission policy
            // refuses any other name, and approving needs the verb `approve`.
            let who =
                whoami(&client).await.context("cannot tell who you are (SelfSubjectReview), so cannot approve")?;
            annotate(&releases, &release, APPROVED_BY, &who).await?;
            println!("release {release} approved by {who}");
        }
        // Every request names who makes it, as the API server knows them: an admission policy
        // refuses any other name (and letting a failed rollout go on needs the verb `approve`).
        Command::Promote { release, r#override } => {
            let who = whoami(&client).await.context("cannot tell who you are (SelfSubjectReview)")?;
            if r#override {
                annotate(&releases, &release, OVERRIDE, &who).await?;
            }
            annotate(&releases, &release, PROMOTE, &who).await?;
            println!("release {release} promoted past its current step");
        }
        Command::Abort { release } => {
            let who = whoami(&client).await.context("cannot tell who you are (SelfSubjectReview)")?;
            annotate(&releases, &release, ABORT, &who).await?;
            println!("release {release} aborted");
        }
        Command::Revert { release } => {
            let r = releases.get(&release).await.with_context(|| format!("release {release}"))?;
            if let Some(why) = revert_refusal(&r, jiff::Timestamp::now()) {
                bail!("cannot revert {release}: {why}");
            }
            let who = whoami(&client).await.context("cannot tell who you are (SelfSubjectReview)")?;
            annotate(&releases, &release, REVERT, &who).await?;
            println!("release {release}: revert requested");
        }
        Command::Pipeline { app } => {
            let envs: Api<Environment> = Api::all(client.clone());
            let envs = envs.list(&Default::default()).await?.items;
            let releases = Api::<Release>::all(client).list(&Default::default()).await?.items;
            let stages = pipeline::stages(&app, &envs, &releases, jiff::Timestamp::now());
            if stages.is_empty() {
                bail!("no Environment has a Release of {app} or promotes from another");
            }
            print!("{}", pipeline::render(&app, &stages));
        }
        Command::Envs => {
            let envs: Api<Environment> = Api::all(client);
            println!("{:<24} {:<12} {:<24} {:<13} {:<22} APPS", "NAME", "TIER", "NAMESPACE", "PHASE", "EXPIRES");
            for e in envs.list(&Default::default()).await?.items {
                let s = e.status.clone().unwrap_or_default();
                let apps: Vec<String> = s.apps.iter().map(|a| format!("{}={}", a.app, a.version)).collect();
                println!(
                    "{:<24} {:<12} {:<24} {:<13} {:<22} {}",
                    e.name_any(),
                    e.spec.tier.as_str(),
                    s.namespace.unwrap_or_default(),
                    s.phase.map(|p| p.as_str()).unwrap_or("-"),
                    s.expires_at.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into()),
                    apps.join(",")
                );
            }
        }
        Command::Env { command: EnvCommand::Extend { environment, duration } } => {
            let by = phaseloop::api::parse_duration(&duration).map_err(anyhow::Error::msg)?;
            let envs: Api<Environment> = Api::all(client);
            let env = envs.get(&environment).await?;
            let Some(current) = env.status.and_then(|s| s.expires_at) else {
                bail!("environment {environment} has no ttl, so nothing to extend");
            };
            let base = current.0.max(jiff::Timestamp::now());
            let by = jiff::SignedDuration::try_from(std::time::Duration::from(by))?;
            let until = base.checked_add(by)?;
            let until = jiff::Timestamp::from_second(until.as_second())?;
            let patch = serde_json::json!({"metadata": {"annotations": {phaseloop::controller::environment::EXTEND_ANNOTATION: until.to_string()}}});
            envs.patch(&environment, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            println!("environment {environment} now expires at {until}");
        }
    }
    Ok(())
}

/// Why a revert of `r` cannot be carried out, when the Release itself tells (the operator checks
/// again, and reports what only it can see).
fn revert_refusal(r: &Release, now: jiff::Timestamp) -> Option<String> {
    let s = r.status.clone().unwrap_or_default();
    let phase = s.phase.map(|p| p.as_str()).unwrap_or("Pending");
    if phase != "Live" {
        return Some(format!("it is {phase}; only the Live Release of an app can be reverted"));
    }
    if s.stable_release.is_none() {
        return Some(format!("it is the first Release of app {}: there is no previous version", r.spec.app));
    }
    match s.revert_window_ends_at {
        Some(end) if end.0 > now => None,
        Some(end) => Some(format!("its revert window ended at {}", end.0)),
        None => Some("it has no open revert window".into()),
    }
}

async fn annotate(api: &Api<Release>, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.with_context(|| format!("release {name}"))?;
    Ok(())
}

/// The user name the API server sees (SelfSubjectReview), written into every request.
async fn whoami(client: &Client) -> anyhow::Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    }))?;
    let out = api.create(&PostParams::default(), &review).await?;
    out.status.and_then(|s| s.user_info).and_then(|u| u.username).context("the API server named no user")
}

/// A Release as text: its phase, the steps with a progress bar, replicas, tests and analysis.
fn render(r: &Release) -> String {
    let s = r.status.clone().unwrap_or_default();
    let plan = steps::plan(&r.spec.strategy);
    let step = s.current_step.unwrap_or(0).max(0) as usize;
    let done = if s.phase == Some(ReleasePhase::Live) { plan.len() } else { step.min(plan.len()) };
    let bar: String = (0..plan.len()).map(|i| if i < done { '#' } else { '.' }).collect();
    let mut out = format!(
        "Release {}: {} {}\n  phase:    {}{}\n  steps:    [{bar}] {done}/{}\n  weight:   {}% serving ({}% asked by the step)\n  replicas: {} candidate, {} stable\n",
        r.name_any(),
        r.spec.app,
        r.spec.version,
        s.phase.map(|p| p.as_str()).unwrap_or("-"),
        s.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
        plan.len(),
        s.weight.unwrap_or(0),
        s.step_weight.or(s.weight).unwrap_or(0),
        s.candidate_replicas.unwrap_or(0),
        s.stable_replicas.unwrap_or(0),
    );
    for t in &s.tests {
        out += &format!("  test {}: {} after {} attempt(s)\n", t.name, t.phase.as_str(), t.attempts);
    }
    for a in &s.analysis {
        out += &format!(
            "  analysis {}: {} (value {}, {} ok / {} failed / {} inconclusive)\n",
            a.name,
            a.last_result.map(|m| m.as_str()).unwrap_or("-"),
            a.value.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            a.successes,
            a.failures,
            a.inconclusive
        );
    }
    out
}
