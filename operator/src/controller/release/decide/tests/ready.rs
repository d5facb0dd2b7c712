//! Conditions that follow what serves.

use super::*;

// --- 5. Ready and Available follow what serves ----------------------------------------------------

#[test]
fn ready_and_available_are_reset_when_a_release_stops_serving() {
    let was_live = with_status(live("shop-1", "1"), |s| {
        s.conditions = vec![];
    });
    let mut case = Case::stable(was_live.clone(), vec![was_live.clone()]);
    let out = case.decide();
    assert_eq!(condition(&out, condition::READY).status, "True");
    assert_eq!(condition(&out, condition::AVAILABLE).status, "True");
    let with_conditions = with_status(was_live, |s| s.conditions = out.status.conditions.clone());
    case.rel = with_conditions.clone();
    case.role = Role::Superseded;
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Superseded));
    for c in [condition::READY, condition::AVAILABLE] {
        assert_eq!(condition(&out, c).status, "False", "{c}");
    }
    assert_eq!(out.status.weight, Some(0));
    let reverted = with_status(with_conditions, |s| s.phase = Some(ReleasePhase::Reverted));
    case.rel = reverted;
    case.role = Role::Done;
    let out = case.decide();
    assert_eq!(condition(&out, condition::READY).reason, "Reverted");
    assert_eq!(condition(&out, condition::AVAILABLE).status, "False");
}
