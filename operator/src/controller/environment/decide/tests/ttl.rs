//! The ttl: when an Environment deletes itself, its extension, and the clock rule.

use super::*;
use crate::controller::environment::EXTEND_ANNOTATION;

fn preview(ttl: &str) -> Environment {
    env("pr-1", json!({"tier": "preview", "ttl": ttl}))
}

#[test]
fn ttl_the_expiry_is_creation_plus_ttl_and_can_only_be_extended() {
    let mut e = preview("4h");
    let at = |s: i64| Some(fixtures::time(s));
    assert_eq!(expires_at(&e, None), at(4 * HOUR));
    e = annotate(e, EXTEND_ANNOTATION, &fixtures::time(8 * HOUR).0.to_string());
    let extended = expires_at(&e, None);
    assert_eq!(extended, at(8 * HOUR));
    e = annotate(e, EXTEND_ANNOTATION, &fixtures::time(HOUR).0.to_string());
    assert_eq!(expires_at(&e, None), at(4 * HOUR), "never before creation + ttl");
    assert_eq!(expires_at(&e, extended.as_ref()), at(8 * HOUR), "never earlier than it was");
    e.metadata.annotations = None;
    assert_eq!(expires_at(&e, extended.as_ref()), at(8 * HOUR));
    e.spec.ttl = None;
    assert_eq!(expires_at(&e, extended.as_ref()), None);
}

#[test]
fn ttl_before_the_end_it_is_scheduled_and_looked_at_again_at_the_end() {
    let out = Case::new(preview("1h")).decide();
    assert_eq!(status(&out).expires_at, Some(fixtures::time(HOUR)));
    assert_eq!(cond(&out, condition::EXPIRING), is("True", Reason::Scheduled));
    assert!(condition(&out, condition::EXPIRING).message.contains(&fixtures::time(HOUR).0.to_string()));
    assert_eq!(out.requeue, Some(Duration::from_secs((HOUR - 10 + 1) as u64)));
    assert!(out.then.is_empty());
}

#[test]
fn ttl_reached_says_expiring_then_deletes_the_environment_and_counts_it_once() {
    let mut case = Case::new(preview("1h"));
    case.now = HOUR;
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Expiring));
    assert_eq!(out.transitions, [Transition::Expire]);
    assert_eq!(cond(&out, condition::EXPIRING), is("True", Reason::TtlReached));
    assert_eq!(out.then, [Effect::Expire { tier: crate::api::Tier::Preview, count: true }]);
    assert!(!provisions(&out), "nothing is provisioned any more");
    case.after(&out);
    let again = case.decide();
    assert_eq!(again.then, [Effect::Expire { tier: crate::api::Tier::Preview, count: false }], "counted once");
    assert!(again.transitions.is_empty());
}

#[test]
fn ttl_without_one_there_is_no_expiring_condition() {
    let e = with_status(env("dev", json!({})), |s| {
        s.conditions.push(Condition {
            type_: condition::EXPIRING.into(),
            status: "True".into(),
            reason: "Scheduled".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: fixtures::time(0),
        });
    });
    let out = Case::new(e).decide();
    assert!(status(&out).conditions.iter().all(|c| c.type_ != condition::EXPIRING), "removed with the ttl");
    assert_eq!(status(&out).expires_at, None);
}

#[test]
fn clock_the_rule_deletes_only_while_the_clocks_agree() {
    let at = fixtures::time(HOUR).0;
    let t = |s: i64| fixtures::time(s).0;
    let skew = |s: i64| Some(jiff::SignedDuration::from_secs(s));
    let judge = |now: i64, s: Option<jiff::SignedDuration>| expiry::judge(Some(at), t(now), s);
    assert_eq!(judge(HOUR - 1, skew(0)), Expiry::At(at));
    assert_eq!(judge(HOUR, skew(0)), Expiry::Due(at));
    assert_eq!(judge(HOUR, skew(5)), Expiry::Due(at), "5s is within the bound");
    assert_eq!(judge(HOUR, skew(-5)), Expiry::Due(at));
    assert_eq!(judge(HOUR, skew(6)), Expiry::Held { at, skew: skew(6) });
    assert_eq!(judge(HOUR, None), Expiry::Held { at, skew: None }, "the API server's time unknown");
    // Reached by the API server's clock only (this one runs behind): held too, and said.
    assert_eq!(judge(HOUR - 10, skew(-20)), Expiry::Held { at, skew: skew(-20) });
    assert_eq!(expiry::judge(None, t(HOUR), skew(0)), Expiry::Never);
}

#[test]
fn clock_an_operator_clock_hours_ahead_deletes_nothing_and_says_why_once() {
    // An hour to live by the API server's clock; by this operator's, it ended two hours ago.
    let mut case = Case::new(preview("1h"));
    case.now = 3 * HOUR + 10;
    case.skew = Some(3 * HOUR);
    let out = case.decide();
    assert!(out.then.iter().all(|e| !matches!(e, Effect::Expire { .. })), "deleted: {:?}", out.then);
    assert_ne!(phase(&out), Some(EnvironmentPhase::Expiring));
    assert_eq!(cond(&out, condition::EXPIRING), is("False", Reason::ClockSkew));
    let message = &condition(&out, condition::EXPIRING).message;
    assert!(message.contains("3h0m0s ahead of the API server's") && message.contains("at most 5s"), "{message}");
    assert_eq!(out.events(), [Reason::ClockSkew]);
    assert!(provisions(&out), "everything else goes on");
    assert_eq!(out.requeue, RECHECK, "the clocks coming together again sends no event");
    case.after(&out);
    assert!(case.decide().events().is_empty(), "said once");
    // Once the clocks agree again, the ttl (long reached by both) deletes it.
    case.skew = Some(1);
    let out = case.decide();
    assert_eq!(out.then, [Effect::Expire { tier: crate::api::Tier::Preview, count: true }]);
}

#[test]
fn clock_an_operator_clock_behind_holds_a_ttl_the_api_server_has_reached() {
    let mut case = Case::new(preview("1h"));
    case.now = HOUR - 60;
    case.skew = Some(-120);
    let out = case.decide();
    assert_eq!(cond(&out, condition::EXPIRING), is("False", Reason::ClockSkew));
    assert!(condition(&out, condition::EXPIRING).message.contains("2m0s behind"));
    assert!(out.then.is_empty());
}

#[test]
fn clock_an_unknown_skew_holds_a_reached_ttl() {
    let mut case = Case::new(preview("1h"));
    case.now = HOUR;
    case.skew = None;
    let out = case.decide();
    assert_eq!(cond(&out, condition::EXPIRING), is("False", Reason::ClockSkew));
    assert!(condition(&out, condition::EXPIRING).message.contains("not known"));
    assert!(out.then.is_empty());
}

#[test]
fn clock_a_skew_before_the_end_changes_nothing() {
    let mut case = Case::new(preview("4h"));
    case.skew = Some(3 * HOUR);
    let out = case.decide();
    assert_eq!(cond(&out, condition::EXPIRING), is("True", Reason::Scheduled));
    assert!(out.events().is_empty());
}

#[test]
fn extension_an_unreadable_value_is_ignored_with_a_condition_and_an_event_once() {
    for value in ["not-a-date", "99999-01-01T00:00:00Z"] {
        let mut case = Case::new(annotate(preview("1h"), EXTEND_ANNOTATION, value));
        let out = case.decide();
        assert_eq!(status(&out).expires_at, Some(fixtures::time(HOUR)), "{value}: creation + ttl");
        assert_eq!(cond(&out, condition::EXPIRING), is("True", Reason::ExtensionUnreadable), "{value}");
        let message = &condition(&out, condition::EXPIRING).message;
        assert!(message.contains(value) && message.contains("ignored"), "{message}");
        assert_eq!(out.events(), [Reason::ExtensionUnreadable]);
        case.after(&out);
        assert!(case.decide().events().is_empty(), "{value}: said once");
    }
}

#[test]
fn extension_an_unreadable_value_keeps_the_last_extension_read() {
    let e = with_status(annotate(preview("1h"), EXTEND_ANNOTATION, "tomorrow"), |s| {
        s.expires_at = Some(fixtures::time(5 * HOUR));
    });
    let out = Case::new(e).decide();
    assert_eq!(status(&out).expires_at, Some(fixtures::time(5 * HOUR)));
}

#[test]
fn extension_durations_are_written_as_kubectl_writes_them() {
    let d = jiff::SignedDuration::from_secs;
    assert_eq!(hms(d(3 * HOUR + 2)), "3h0m2s");
    assert_eq!(hms(d(125)), "2m5s");
    assert_eq!(hms(d(5)), "5s");
    assert_eq!(hms(d(-90)), "-1m30s");
    let ms = jiff::SignedDuration::from_millis;
    assert_eq!(hms(ms(3 * HOUR * 1000 - 400)), "3h0m0s", "to the nearest second");
    assert_eq!(hms(ms(-1400)), "-1s");
}
