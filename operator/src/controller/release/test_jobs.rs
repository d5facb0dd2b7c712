//! The Test phase: one Job per test attempt, run against the candidate before it gets production
//! traffic. Pure construction and judgement here; `reconcile.rs` creates and reads the Jobs.

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::EnvVar,
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::workload::RELEASE_LABEL;
use crate::api::{Release, TestPhase, TestResult, TestSpec, label};

/// Name of the Job of `attempt` (1-based) of `test`: deterministic, so a restarted operator finds
/// the Job it created instead of creating another.
pub fn job_name(rel: &Release, test: &TestSpec, attempt: i32) -> String {
    // At most 63 characters: the Job controller puts the name in a label.
    super::workload::generated_name(&format!("{}-test-{}-{attempt}", rel.name_any(), test.name), 63, false)
}

/// The Job of one attempt: the user's pod template, never restarted in place (retries are new
/// Jobs), bounded by the test's timeout, with the candidate's address in the environment.
pub fn job(rel: &Release, test: &TestSpec, attempt: i32, candidate_host: &str, port: Option<i32>) -> Job {
    let mut template = test.template.clone();
    let spec = template.spec.get_or_insert_with(Default::default);
    spec.restart_policy = Some("Never".into());
    let url = match port {
        Some(p) => format!("http://{candidate_host}:{p}"),
        None => format!("http://{candidate_host}"),
    };
    for c in spec.containers.iter_mut().filter(|_| !candidate_host.is_empty()) {
        let env = c.env.get_or_insert_with(Vec::new);
        for (name, value) in [("PHASELOOP_CANDIDATE_HOST", candidate_host), ("PHASELOOP_CANDIDATE_URL", url.as_str())] {
            env.retain(|e| e.name != name);
            env.push(EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() });
        }
    }
    let timeout: std::time::Duration = test.timeout.into();
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(rel, test, attempt)),
            namespace: rel.namespace(),
            labels: Some(
                [
                    (label::MANAGED_BY.to_string(), label::MANAGER.to_string()),
                    (RELEASE_LABEL.to_string(), rel.name_any()),
                    (label::NAME.to_string(), rel.spec.app.clone()),
                ]
                .into(),
            ),
            owner_references: rel.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(timeout.as_secs().max(1) as i64),
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Outcome of a Job: `Running`, `Succeeded` or `Failed` (a timeout is a failure).
pub fn job_phase(job: &Job) -> TestPhase {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let has = |t: &str| conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"));
    if has("Complete") {
        TestPhase::Succeeded
    } else if has("Failed") {
        TestPhase::Failed
    } else {
        TestPhase::Running
    }
}

/// What to do about one test given its last attempt's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Create (or keep watching) the Job of this attempt.
    Run(i32),
    Passed,
    /// Out of retries.
    Failed,
}

/// Next step of `test` after `attempt` ended in `phase` (`None`: not started).
pub fn next(test: &TestSpec, attempt: i32, phase: Option<TestPhase>) -> Next {
    match phase {
        None => Next::Run(attempt.max(1)),
        Some(TestPhase::Succeeded) => Next::Passed,
        Some(TestPhase::Failed) if attempt <= test.retries => Next::Run(attempt + 1),
        Some(TestPhase::Failed) => Next::Failed,
        Some(TestPhase::Running) => Next::Run(attempt),
    }
}

/// The status entry of a test.
pub fn result(test: &TestSpec, attempt: i32, phase: TestPhase, job: &str, message: Option<String>) -> TestResult {
    TestResult { name: test.name.clone(), phase, attempts: attempt, job: Some(job.into()), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn rel() -> Release {
        let mut r = crate::fixtures::release(
            "shop-2",
            serde_json::json!({
                "version": "2",
                "tests": [{"name": "smoke", "retries": 1, "timeout": "90s",
                           "template": {"spec": {"containers": [{"name": "t", "image": "curl",
                             "env": [{"name": "PHASELOOP_CANDIDATE_URL", "value": "stale"}]}]}}}]
            }),
        );
        r.metadata.uid = Some("u".into());
        r
    }

    #[test]
    fn the_job_targets_the_candidate_and_is_bounded() {
        let r = rel();
        let j = job(&r, &r.spec.tests[0], 2, "shop-preview.prod.svc", Some(80));
        assert_eq!(j.metadata.name.as_deref(), Some("shop-2-test-smoke-2"));
        let spec = j.spec.unwrap();
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(90)));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env = pod.containers[0].env.clone().unwrap();
        let url: Vec<_> = env.iter().filter(|e| e.name == "PHASELOOP_CANDIDATE_URL").collect();
        assert_eq!(url.len(), 1, "the candidate address replaces a stale one");
        assert_eq!(url[0].value.as_deref(), Some("http://shop-preview.prod.svc:80"));
    }

    #[test]
    fn job_names_stay_dns_labels() {
        let mut r = rel();
        r.metadata.name = Some("x".repeat(60));
        assert!(job_name(&r, &r.spec.tests[0], 10).len() <= 63);
        let other_attempt = job_name(&r, &r.spec.tests[0], 11);
        assert_ne!(job_name(&r, &r.spec.tests[0], 10), other_attempt, "attempts of a long name stay apart");
    }

    #[test]
    fn retries_then_failure() {
        let t = &rel().spec.tests[0]; // retries: 1
        assert_eq!(next(t, 0, None), Next::Run(1));
        assert_eq!(next(t, 1, Some(TestPhase::Running)), Next::Run(1));
        assert_eq!(next(t, 1, Some(TestPhase::Failed)), Next::Run(2));
        assert_eq!(next(t, 2, Some(TestPhase::Failed)), Next::Failed);
        assert_eq!(next(t, 2, Some(TestPhase::Succeeded)), Next::Passed);
    }

    #[test]
    fn job_outcomes() {
        let with = |t: &str| Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition { type_: t.into(), status: "True".into(), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(job_phase(&with("Complete")), TestPhase::Succeeded);
        assert_eq!(job_phase(&with("Failed")), TestPhase::Failed);
        assert_eq!(job_phase(&Job::default()), TestPhase::Running);
    }
}
