//! The workload, the same for both controllers: per app a phaseloop Release or an Argo Rollout
//! (with the Service and AnalysisTemplate Argo needs besides), on the same canary plan.

use serde_json::json;

use super::{ANALYSIS_QUERY, LABEL, PROGRESS_DEADLINE_S, Peer, PeersRun, WEIGHTS};

pub fn namespace(run: &PeersRun, j: usize) -> String {
    format!("peers-{:04}", j / run.per_namespace)
}

pub fn app(j: usize) -> String {
    format!("app-{j:05}")
}

fn pod_template(j: usize, version: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app.kubernetes.io/name": app(j), LABEL: "pod"}},
           "spec": {"containers": [{"name": "app", "image": format!("bench:{version}")}]}})
}

pub(super) fn canary_steps(run: &PeersRun) -> Vec<serde_json::Value> {
    let pause = format!("{}s", run.pause.as_secs());
    WEIGHTS.iter().flat_map(|w| [json!({"setWeight": w}), json!({"pause": {"duration": pause}})]).collect()
}

/// phaseloop: one Release per version. v1 goes straight to 100% (no previous version, as Argo's
/// first revision); later versions run the canary steps, and the previous version is scaled to
/// zero at promotion (`revertWindow: 0s`), as Argo's basic canary does.
pub fn phaseloop_release(run: &PeersRun, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    let deadline = format!("{PROGRESS_DEADLINE_S}s");
    let strategy = if version == "v1" {
        json!({"type": "Rolling", "progressDeadline": deadline})
    } else {
        let mut s = json!({"type": "Canary", "canary": {"steps": canary_steps(run)}, "revertWindow": "0s",
                           "progressDeadline": deadline});
        if analysis {
            s["analysis"] = json!({"interval": format!("{}s", run.analysis_interval.as_secs()),
                "metrics": [{"name": "up", "query": ANALYSIS_QUERY, "min": 1}]});
        }
        s
    };
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{}-{version}", app(j)), "namespace": namespace(run, j)},
        "spec": {"app": app(j), "version": version, "replicas": run.replicas,
                 "template": pod_template(j, version),
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]},
                 "strategy": strategy}})
}

/// Argo Rollouts: one Rollout per app, its image changed per version. Basic canary (no traffic
/// router: traffic follows the pod ratio through the app's Service), defaults otherwise.
pub fn argo_rollout(run: &PeersRun, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    let mut canary = json!({"steps": canary_steps(run)});
    if analysis {
        canary["analysis"] = json!({"templates": [{"templateName": "bench-up"}]});
    }
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": app(j), "namespace": namespace(run, j)},
        "spec": {"replicas": run.replicas, "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": app(j)}},
                 "template": pod_template(j, version),
                 "strategy": {"canary": canary}}})
}

/// The Service of an Argo app: what phaseloop creates for its Releases (`<app>`, port 80 to 8080,
/// selecting every pod of the app), created by the harness since Argo's basic canary needs none.
pub fn argo_service(run: &PeersRun, j: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app(j), "namespace": namespace(run, j), "labels": {LABEL: "service"}},
        "spec": {"selector": {"app.kubernetes.io/name": app(j)}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

/// The AnalysisTemplate of a namespace: the same query, interval and success condition as
/// phaseloop's `strategy.analysis` (no count: it measures until the rollout ends, as phaseloop's
/// background analysis does; failureLimit 0 in both).
pub fn argo_template(run: &PeersRun, ns: &str) -> serde_json::Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "bench-up", "namespace": ns},
        "spec": {"metrics": [{"name": "up", "interval": format!("{}s", run.analysis_interval.as_secs()),
                 "successCondition": "result[0] >= 1",
                 "provider": {"prometheus": {"address": run.prometheus_url, "query": ANALYSIS_QUERY}}}]}})
}

pub(super) fn workload(run: &PeersRun, peer: Peer, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    match peer {
        Peer::Phaseloop => phaseloop_release(run, j, version, analysis),
        Peer::ArgoRollouts => argo_rollout(run, j, version, analysis),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn run() -> PeersRun {
        PeersRun::example()
    }

    #[test]
    fn both_workloads_carry_the_same_replicas_steps_pods_and_analysis() {
        let run = run();
        let rel = phaseloop_release(&run, 20, "v2", true);
        let ro = argo_rollout(&run, 20, "v2", true);
        assert_eq!(rel["metadata"]["namespace"], "peers-0002");
        assert_eq!(ro["metadata"]["namespace"], "peers-0002");
        assert_eq!(rel["spec"]["replicas"], ro["spec"]["replicas"]);
        assert_eq!(rel["spec"]["template"], ro["spec"]["template"]);
        assert_eq!(rel["spec"]["strategy"]["canary"]["steps"], ro["spec"]["strategy"]["canary"]["steps"]);
        assert_eq!(
            ro["spec"]["strategy"]["canary"]["steps"],
            json!([{"setWeight": 25}, {"pause": {"duration": "10s"}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}])
        );
        assert_eq!(rel["spec"]["strategy"]["revertWindow"], "0s");
        assert_eq!(rel["spec"]["strategy"]["analysis"]["interval"], "10s");
        let template = argo_template(&run, "peers-0002");
        assert_eq!(template["spec"]["metrics"][0]["interval"], "10s");
        assert_eq!(template["spec"]["metrics"][0]["provider"]["prometheus"]["query"], ANALYSIS_QUERY);
        assert_eq!(rel["spec"]["strategy"]["analysis"]["metrics"][0]["query"], ANALYSIS_QUERY);
        // v1: straight to 100% for both (no steps for phaseloop; Argo skips them on a first revision).
        assert_eq!(
            phaseloop_release(&run, 0, "v1", false)["spec"]["strategy"],
            json!({"type": "Rolling", "progressDeadline": "3600s"})
        );
        assert_eq!(rel["spec"]["strategy"]["progressDeadline"], "3600s");
        assert_eq!(ro["spec"]["progressDeadlineSeconds"], 3600);
        assert!(argo_rollout(&run, 0, "v2", false)["spec"]["strategy"]["canary"].get("analysis").is_none());
        assert_eq!((0..25).filter(|j| run.analysed(*j)).collect::<Vec<_>>(), [0, 10, 20]);
        assert_eq!(run.namespaces(), 3);
    }
}
