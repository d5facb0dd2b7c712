//! Whether a Release is approved, from its annotations and its Environment's rules (pure).
//!
//! `phaseloop.dev/approved-by` names who approved: an admission policy lets only holders of the
//! verb `approve` set it, and only to their own user name, never empty. An empty value (stored
//! before that policy, or written past it) approves nothing. With the Environment's
//! `promotion.separationOfDuties`, the approval of the Release's own author
//! (`phaseloop.dev/created-by`, which the API server records at creation) does not count either.

use kube::ResourceExt;

use crate::api::{Promotion, Reason, Release, annotation};

/// What the approval annotation amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Approved by this user.
    Given(String),
    /// No approval (absent, or empty).
    Missing,
    /// An approval that does not count: the condition's reason and why.
    Refused(Reason, String),
}

/// The non-empty value of annotation `key` of `rel`.
pub fn named(rel: &Release, key: &str) -> Option<String> {
    rel.annotations().get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string)
}

/// Whether `rel` carries an approval at all (a non-empty `approved-by`), whoever gave it.
pub fn present(rel: &Release) -> bool {
    named(rel, annotation::APPROVED_BY).is_some()
}

/// `rel`'s approval under `promotion`, its Environment's rules.
pub fn of(rel: &Release, promotion: Option<&Promotion>) -> Approval {
    let Some(approver) = named(rel, annotation::APPROVED_BY) else { return Approval::Missing };
    if promotion.is_some_and(|p| p.separation_of_duties) {
        match named(rel, annotation::CREATED_BY) {
            None => {
                return Approval::Refused(
                    Reason::AuthorUnknown,
                    format!(
                        "this Environment needs an approver other than the Release's author, and the author of {} \
                         is not recorded ({} is missing): create the Release again",
                        rel.name_any(),
                        annotation::CREATED_BY
                    ),
                );
            }
            Some(author) if author == approver => {
                return Approval::Refused(
                    Reason::ApprovedByAuthor,
                    format!(
                        "approved by {approver}, who created it: this Environment needs the approval of someone else \
                         (separation of duties)"
                    ),
                );
            }
            Some(_) => {}
        }
    }
    Approval::Given(approver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(annotations: &[(&str, &str)]) -> Release {
        let mut r = crate::fixtures::release("shop-2", serde_json::json!({}));
        let map = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r.metadata.annotations = Some(map);
        r
    }

    #[test]
    fn an_empty_approval_approves_nothing() {
        assert_eq!(of(&rel(&[]), None), Approval::Missing);
        assert_eq!(of(&rel(&[(annotation::APPROVED_BY, "")]), None), Approval::Missing);
        assert_eq!(of(&rel(&[(annotation::APPROVED_BY, "  ")]), None), Approval::Missing);
        assert!(!present(&rel(&[(annotation::APPROVED_BY, "")])));
        assert_eq!(of(&rel(&[(annotation::APPROVED_BY, "alice")]), None), Approval::Given("alice".into()));
    }

    #[test]
    fn with_separation_of_duties_the_author_cannot_approve() {
        let sod = Promotion { separation_of_duties: true, ..Default::default() };
        let own = rel(&[(annotation::APPROVED_BY, "alice"), (annotation::CREATED_BY, "alice")]);
        assert!(
            matches!(of(&own, Some(&sod)), Approval::Refused(Reason::ApprovedByAuthor, why) if why.contains("alice"))
        );
        // Without the rule, the author's approval counts.
        assert_eq!(of(&own, None), Approval::Given("alice".into()));
        let other = rel(&[(annotation::APPROVED_BY, "bob"), (annotation::CREATED_BY, "alice")]);
        assert_eq!(of(&other, Some(&sod)), Approval::Given("bob".into()));
        let unknown = rel(&[(annotation::APPROVED_BY, "bob")]);
        assert!(matches!(of(&unknown, Some(&sod)), Approval::Refused(Reason::AuthorUnknown, _)));
    }
}
