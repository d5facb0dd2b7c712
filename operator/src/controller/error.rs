//! What can go wrong in a reconcile, by what the operator does about it: retry with backoff (the
//! API unreachable or failing, a conflict, a lack of rights), report it on the object (a child the
//! API server refuses, a quota that would be exceeded), or let it be (the namespace is going).

use kube::core::Status;

/// Errors of a reconcile. Each has a short [`Error::reason`] used as a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server could not be reached or failed (5xx, a timeout, a broken connection).
    #[error("Kubernetes API: {0}")]
    Api(#[source] kube::Error),
    /// Another write came first (409): the next reconcile sees it.
    #[error("conflict: {}", .0.message)]
    Conflict(Box<Status>),
    /// An object built from the spec was refused (422 or 400): bad input admission of the owner
    /// could not see. Reported on the owner (`Degraded`/`InvalidSpec`), not retried in a loop.
    #[error("the API server refused an object built from this spec: {}", .0.message)]
    Refused(Box<Status>),
    /// A ResourceQuota of the namespace would be exceeded: reported (`Degraded`/`QuotaExceeded`)
    /// and retried, since the quota or the usage may change.
    #[error("a quota of the namespace would be exceeded: {}", .0.message)]
    QuotaExceeded(Box<Status>),
    /// The operator's credentials do not allow the request (403).
    #[error("forbidden: {}", .0.message)]
    Forbidden(Box<Status>),
    /// The namespace is being deleted: nothing more can be created there, and its deletion takes
    /// the object too. Not retried.
    #[error("the namespace is being deleted: {}", .0.message)]
    NamespaceTerminating(Box<Status>),
    /// Something no watch event will announce is not there yet (an Environment's namespace
    /// still being deleted): looked at again shortly, not counted as a failure.
    #[error("waiting: {0}")]
    Waiting(String),
    /// A state the code rules out (an object without a name): a bug, retried with backoff.
    #[error("internal: {0}")]
    Internal(String),
    /// One of the above, with where it happened: the reconcile's step and the request (verb, kind
    /// and object). Classified as its cause.
    #[error("{}: {}: {}", .0.step, .0.request, .0.cause)]
    At(Box<At>),
}

/// Where an error happened.
#[derive(Debug)]
pub struct At {
    /// The reconcile's step (`observe`, `act`, `status`, ...).
    pub step: &'static str,
    /// The request and its object, e.g. `apply Deployment shop/web-1-2-0`.
    pub request: String,
    pub cause: Error,
}

/// Says where an error happened, as snafu's `context` does: `.context("act", || format!(..))`.
pub trait Context<T> {
    fn context(self, step: &'static str, request: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context(self, step: &'static str, request: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| match e.into() {
            // The innermost place is the one that names the request.
            at @ Error::At(_) => at,
            cause => Error::At(Box::new(At { step, request: request(), cause })),
        })
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        let kube::Error::Api(status) = e else { return Error::Api(e) };
        let cause = |reason: &str| status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == reason));
        match status.code {
            409 => Error::Conflict(status),
            400 | 422 => Error::Refused(status),
            403 if cause("NamespaceTerminating") => Error::NamespaceTerminating(status),
            403 if status.message.contains("exceeded quota") => Error::QuotaExceeded(status),
            403 => Error::Forbidden(status),
            _ => Error::Api(kube::Error::Api(status)),
        }
    }
}

impl Error {
    /// The error without the place it happened: what the operator does about it depends on this.
    pub fn cause(&self) -> &Error {
        match self {
            Error::At(at) => at.cause.cause(),
            e => e,
        }
    }

    /// Bounded label value for metrics.
    pub fn reason(&self) -> &'static str {
        match self.cause() {
            Error::Api(kube::Error::Api(_)) => "api",
            Error::Api(_) => "transport",
            Error::Conflict(_) => "conflict",
            Error::Refused(_) => "refused",
            Error::QuotaExceeded(_) => "quota",
            Error::Forbidden(_) => "forbidden",
            Error::NamespaceTerminating(_) => "terminating",
            Error::Waiting(_) => "waiting",
            Error::Internal(_) => "internal",
            Error::At(_) => unreachable!("cause() unwraps At"),
        }
    }

    /// Whether the error is the owner's to report (a condition and an Event) rather than only to
    /// retry: what the spec asked for cannot be carried out as it is.
    pub fn reportable(&self) -> Option<(&'static str, String)> {
        match self.cause() {
            Error::Refused(_) => Some((crate::api::reason::INVALID_SPEC, self.to_string())),
            Error::QuotaExceeded(_) => Some((crate::api::reason::QUOTA_EXCEEDED, self.to_string())),
            _ => None,
        }
    }

    /// Whether the error is an API error with this HTTP status (a read that found nothing, say).
    pub fn is_status(&self, code: u16) -> bool {
        match self.cause() {
            Error::Api(kube::Error::Api(s)) => s.code == code,
            Error::Conflict(s)
            | Error::Refused(s)
            | Error::QuotaExceeded(s)
            | Error::Forbidden(s)
            | Error::NamespaceTerminating(s) => s.code == code,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str, cause: Option<&str>) -> kube::Error {
        let causes = cause.map(|c| serde_json::json!([{"reason": c, "message": ""}])).unwrap_or(serde_json::json!([]));
        let status: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": message, "reason": "", "code": code, "details": {"causes": causes}
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_fall_into_what_the_operator_does_about_them() {
        let cases = [
            (api(409, "the object has been modified", None), "conflict"),
            (api(422, "spec.containers[0].image: Required value", None), "refused"),
            (api(400, "bad request", None), "refused"),
            (
                api(
                    403,
                    "unable to create new content in namespace x because it is being terminated",
                    Some("NamespaceTerminating"),
                ),
                "terminating",
            ),
            (
                api(403, "exceeded quota: phaseloop-quota, requested: pods=1, used: pods=4, limited: pods=4", None),
                "quota",
            ),
            (api(403, "deployments.apps is forbidden: User cannot create", None), "forbidden"),
            (api(500, "etcdserver: request timed out", None), "api"),
        ];
        for (e, reason) in cases {
            let e = Error::from(e);
            assert_eq!(e.reason(), reason, "{e}");
        }
        assert_eq!(Error::from(api(422, "x", None)).reportable().unwrap().0, "InvalidSpec");
        assert_eq!(Error::from(api(403, "exceeded quota: q", None)).reportable().unwrap().0, "QuotaExceeded");
        assert!(Error::from(api(409, "x", None)).reportable().is_none());
    }

    #[test]
    fn an_error_says_where_it_happened_and_is_classified_by_its_cause() {
        let failed: Result<(), kube::Error> = Err(api(409, "the object has been modified", None));
        let e = failed.context("act", || "apply Deployment shop/web-1-2-0".into()).unwrap_err();
        assert_eq!(e.to_string(), "act: apply Deployment shop/web-1-2-0: conflict: the object has been modified");
        assert_eq!(e.reason(), "conflict");
        assert!(matches!(e.cause(), Error::Conflict(_)));
        // An outer step keeps the innermost place, which names the request.
        let again: Result<(), Error> = Err(e);
        let e = again.context("reconcile", || "Release shop/web-1".into()).unwrap_err();
        assert!(e.to_string().starts_with("act: apply Deployment"), "{e}");
    }
}
