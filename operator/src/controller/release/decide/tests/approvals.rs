//! Approvals that mean something: an empty `approved-by` approves nothing, at the gate and past
//! it; with separation of duties the author's own approval does not count; a request names who
//! made it. Rows fail on the code that opened the gate on the annotation's mere presence.

use super::*;

fn gated() -> Release {
    let mut r = rel("shop-2", "2", json!({}), Some(ReleasePhase::Pending));
    r.spec.approval = Some(crate::api::Approval { required: true });
    r
}

#[test]
fn an_empty_approval_keeps_the_gate_shut() {
    let case = Case::active(annotate(gated(), APPROVED_BY, ""), live("shop-1", "1"));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::AwaitingApproval));
    assert_eq!(out.status.approval, None);
    assert_eq!(condition(&out, condition::APPROVED).status, "False");
    // The Environment's requirement likewise.
    let mut case = Case::active(annotate(rel("shop-2", "2", json!({}), None), APPROVED_BY, ""), live("shop-1", "1"));
    case.promotion = Some(Promotion { require_approval: true, ..Default::default() });
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::AwaitingApproval));
}

#[test]
fn a_rollout_past_the_gate_with_an_empty_approval_goes_back_to_wait() {
    let mut forged = rolling_out(annotate(gated(), APPROVED_BY, ""), 0);
    forged.status.as_mut().unwrap().approval =
        Some(crate::api::ApprovalRecord { approved_by: String::new(), approved_at: t(0) });
    let mut case = Case::active(forged, live("shop-1", "1"));
    case.own = deployed(1, 0);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::AwaitingApproval));
    assert_eq!(events(&out), [Reason::GateNotPassed]);
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
}

#[test]
fn with_separation_of_duties_the_authors_approval_does_not_count() {
    let sod = Some(Promotion { require_approval: true, separation_of_duties: true, ..Default::default() });
    let authored = annotate(rel("shop-2", "2", json!({}), None), crate::api::annotation::CREATED_BY, "alice");
    let mut case = Case::active(annotate(authored.clone(), APPROVED_BY, "alice"), live("shop-1", "1"));
    case.promotion = sod.clone();
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::AwaitingApproval));
    let approved = condition(&out, condition::APPROVED);
    assert_eq!((approved.status.as_str(), approved.reason.as_str()), ("False", Reason::ApprovedByAuthor.as_str()));
    assert!(approved.message.contains("alice"), "{}", approved.message);
    case.rel = annotate(authored, APPROVED_BY, "bob");
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(out.status.approval.unwrap().approved_by, "bob");
}

#[test]
fn an_abort_names_who_asked() {
    let case = Case::active(annotate(gated(), ABORT, "carol"), live("shop-1", "1"));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Failed));
    assert!(out.status.message.unwrap().contains("carol"));
}
