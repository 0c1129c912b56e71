use super::*;
use crate::domain::*;

const PHASES: [&str; 5] = ["brief", "script", "assets", "voice", "publish"];
const NOW: Millis = 1_000_000;

fn gates() -> GatePolicy {
    GatePolicy {
        phases: vec!["script".into()],
        acknowledge_before: Some("publish".into()),
        auto_approve: false,
        required: vec![],
        ttl: 1000,
        on_expiry: OnExpiry::Fail,
    }
}

fn fresh() -> Production {
    start(
        "p1".into(),
        "acme".into(),
        crate::domain::PipelineVersion::new("content", 1),
        &PHASES,
        gates(),
        "t1".into(),
        NOW - 10_000,
    )
    .production
}

fn set(p: &mut Production, i: usize, status: PhaseStatus, attempt: u32) {
    let ph = &mut p.phases[i];
    ph.status = status;
    ph.attempt = attempt;
    if status == PhaseStatus::Running {
        ph.started_at = Some(NOW - 1000);
        ph.lease_until = Some(NOW + 60_000);
    }
}

/// A production in each status, with its phases as that status implies.
fn fixture(status: ProductionStatus) -> Production {
    use PhaseStatus as Ph;
    use ProductionStatus as S;
    let mut p = fresh();
    p.status = status;
    match status {
        S::Queued => {}
        S::Running | S::Paused => {
            set(&mut p, 0, Ph::Succeeded, 1);
            set(&mut p, 1, Ph::Running, 1);
        }
        S::AwaitingApproval => {
            set(&mut p, 0, Ph::Succeeded, 1);
            set(&mut p, 1, Ph::Succeeded, 1);
            p.approval = Some(Approval {
                kind: GateKind::Approval,
                phase: "script".into(),
                attempt: 1,
                requested_at: NOW - 10,
                expires_at: NOW + 1000,
                renewals: 0,
            });
        }
        S::Failed | S::DeadLettered => {
            set(&mut p, 0, Ph::Succeeded, 1);
            let s = if status == S::Failed {
                Ph::Failed
            } else {
                Ph::DeadLettered
            };
            set(&mut p, 1, s, 1);
        }
        S::Completed => {
            for i in 0..PHASES.len() {
                set(&mut p, i, Ph::Succeeded, 1);
            }
        }
        S::Cancelled => {
            set(&mut p, 0, Ph::Succeeded, 1);
            set(&mut p, 1, Ph::Queued, 1);
        }
    }
    p
}

fn target(p: &Production) -> (String, u32) {
    let ph = p.current_phase().unwrap_or(p.phases.last().unwrap());
    (ph.name.clone(), ph.attempt)
}

/// A worker's claim of `phase` at attempt 1, its lease a minute long.
fn claim_of(phase: &str) -> Command {
    Command::Claim {
        phase: phase.into(),
        attempt: 1,
        lease_until: NOW + 60_000,
    }
}

fn err(code: &str, class: ErrorClass) -> PhaseError {
    PhaseError::new(code, class, "detail")
}

fn commands(p: &Production) -> Vec<(&'static str, Command)> {
    let (phase, attempt) = target(p);
    let fail = |d| Command::Fail {
        phase: phase.clone(),
        attempt,
        error: err("provider_5xx", ErrorClass::Retryable),
        disposition: d,
    };
    vec![
        (
            "claim",
            Command::Claim {
                phase: phase.clone(),
                attempt,
                lease_until: NOW + 60_000,
            },
        ),
        (
            "succeed",
            Command::Succeed {
                phase: phase.clone(),
                attempt,
                output: "OUT#x#1".into(),
                warnings: vec![],
            },
        ),
        ("fail_retry", fail(FailDisposition::Retry)),
        ("fail_dead_letter", fail(FailDisposition::DeadLetter)),
        ("fail_stop", fail(FailDisposition::Stop)),
        ("pause", Command::Act(Act::Pause)),
        ("resume", Command::Act(Act::Resume)),
        ("retry_phase", Command::Act(Act::RetryPhase)),
        ("approve", Command::Act(Act::Approve)),
        (
            "reject",
            Command::Act(Act::Reject {
                feedback: "shorter, please".into(),
                phase: None,
            }),
        ),
        (
            "edit",
            Command::Act(Act::Edit {
                changes: vec!["voice=onyx".parse().unwrap()],
            }),
        ),
        ("cancel", Command::Act(Act::Cancel)),
        (
            "override_skip",
            Command::Act(Act::Override {
                reason: "legal signed off by phone".into(),
                skip_gate: true,
                jump_to: None,
                outputs: vec![],
            }),
        ),
        (
            "override_jump",
            Command::Act(Act::Override {
                reason: "voice vendor fixed".into(),
                skip_gate: false,
                jump_to: Some("voice".into()),
                outputs: vec![],
            }),
        ),
        (
            "redispatch",
            Command::Redispatch {
                phase: phase.clone(),
            },
        ),
        (
            "reconcile",
            Command::Reconcile {
                phase: phase.clone(),
            },
        ),
        ("expire_approval", Command::ExpireApproval),
        (
            "acknowledge_warnings",
            Command::Act(Act::AcknowledgeWarnings),
        ),
    ]
}

/// The whole table: every production status against every command.
#[test]
fn every_status_against_every_command() {
    use ProductionStatus as S;
    // (status, command) -> Ok(resulting status) or Err(error text fragment)
    let expect = |s: S, c: &str| -> Result<S, &'static str> {
        match (s, c) {
            (S::Queued, "claim") => Ok(S::Running),
            (S::Running | S::Paused, "claim") => Err("Duplicate"),
            (S::AwaitingApproval | S::Failed | S::DeadLettered | S::Completed, "claim") => {
                Err("AlreadyFinished")
            }
            (S::Cancelled, "claim") => Err("NotRunnable"),
            (S::Running, "succeed") => Ok(S::AwaitingApproval),
            (S::Paused, "succeed") => Ok(S::Paused),
            (S::Running, "fail_retry") => Ok(S::Running),
            (S::Paused, "fail_retry") => Ok(S::Paused),
            (S::Running | S::Paused, "fail_dead_letter") => Ok(S::DeadLettered),
            (S::Running | S::Paused, "fail_stop") => Ok(S::Failed),
            (_, "succeed" | "fail_retry" | "fail_dead_letter" | "fail_stop") => {
                Err("not the running attempt")
            }
            (S::Queued | S::Running | S::AwaitingApproval, "pause") => Ok(S::Paused),
            (S::Paused, "resume") => Ok(S::Running),
            (S::Failed | S::DeadLettered, "retry_phase") => Ok(S::Running),
            (S::AwaitingApproval, "approve" | "reject") => Ok(S::Running),
            // Reject without a gate re-runs from a phase (seed 001): a paused one stays paused.
            (S::Failed | S::DeadLettered, "reject") => Ok(S::Running),
            (S::Paused, "reject") => Ok(S::Paused),
            (S::AwaitingApproval | S::Paused | S::Failed | S::DeadLettered, "edit") => Ok(s),
            (S::Completed | S::Cancelled, "cancel") => Err("not available"),
            (_, "cancel") => Ok(S::Cancelled),
            (S::AwaitingApproval, "override_skip" | "override_jump") => Ok(S::Running),
            (S::Paused | S::Failed | S::DeadLettered, "override_skip") => Err("no open approval"),
            (S::Paused, "override_jump") => Err("a phase is running"),
            (S::Failed | S::DeadLettered, "override_jump") => Ok(S::Running),
            (S::Queued, "redispatch") => Ok(S::Queued),
            (_, "redispatch") => Err("not waiting for a worker"),
            (_, "reconcile") => Err("no expired lease"),
            (S::AwaitingApproval, "expire_approval") => Err("has not expired"),
            (_, "expire_approval") => Err("no open approval"),
            (_, "acknowledge_warnings") => Err("not available"),
            (_, "pause" | "resume" | "retry_phase" | "approve" | "reject" | "edit")
            | (_, "override_skip" | "override_jump") => Err("not available"),
            _ => unreachable!("{s:?} {c}"),
        }
    };
    let mut checked = 0;
    for status in ProductionStatus::ALL {
        let p = fixture(status);
        for (name, cmd) in commands(&p) {
            let got = decide(&p, cmd, NOW);
            match (expect(status, name), got) {
                (Ok(want), Ok(t)) => {
                    assert_eq!(t.production.status, want, "{status:?} × {name}");
                    assert_eq!(t.production.version, p.version + 1, "{status:?} × {name}");
                }
                (Err(frag), Err(e)) => {
                    let text = format!("{e} {e:?}");
                    assert!(text.contains(frag), "{status:?} × {name}: {text}");
                }
                (want, got) => panic!("{status:?} × {name}: wanted {want:?}, got {got:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 18);
}

#[test]
fn operator_commands_are_accepted_exactly_when_available() {
    for status in ProductionStatus::ALL {
        let p = fixture(status);
        let actions = p.available_actions();
        for (action, cmd) in [
            (Action::Pause, Command::Act(Act::Pause)),
            (Action::Resume, Command::Act(Act::Resume)),
            (Action::RetryPhase, Command::Act(Act::RetryPhase)),
            (Action::Approve, Command::Act(Act::Approve)),
            (
                Action::Reject,
                Command::Act(Act::Reject {
                    feedback: "x".into(),
                    phase: None,
                }),
            ),
            (
                Action::Edit,
                Command::Act(Act::Edit {
                    changes: vec!["tone=calm".parse().unwrap()],
                }),
            ),
            (Action::Cancel, Command::Act(Act::Cancel)),
        ] {
            let ok = decide(&p, cmd, NOW).is_ok();
            assert_eq!(ok, actions.contains(&action), "{status:?} {action:?}");
        }
        // An override is refused unless offered; when offered it may still need a target.
        let jump = Command::Act(Act::Override {
            reason: "r".into(),
            skip_gate: false,
            jump_to: Some("publish".into()),
            outputs: vec![],
        });
        if !actions.contains(&Action::Override) {
            assert!(
                decide(&p, jump, NOW)
                    .unwrap_err()
                    .to_string()
                    .contains("not available")
            );
        }
    }
}

#[test]
fn a_refused_command_changes_nothing() {
    let p = fixture(ProductionStatus::Completed);
    let before = p.clone();
    assert!(decide(&p, Command::Act(Act::Pause), NOW).is_err());
    assert_eq!(p, before);
}

#[test]
fn happy_path_walks_every_phase_and_completes() {
    let t = start(
        "p".into(),
        "a".into(),
        crate::domain::PipelineVersion::new("content", 1),
        &PHASES,
        GatePolicy::default(),
        "t".into(),
        NOW,
    );
    assert_eq!(t.dispatch, dispatch("brief", 1));
    let mut p = t.production;
    for (i, phase) in PHASES.iter().enumerate() {
        let claim = Command::Claim {
            phase: phase.to_string(),
            attempt: 1,
            lease_until: NOW + 1000,
        };
        p = decide(&p, claim, NOW).unwrap().production;
        assert_eq!(p.status, ProductionStatus::Running);
        let t = decide(
            &p,
            Command::Succeed {
                phase: phase.to_string(),
                attempt: 1,
                output: format!("OUT#{phase}#1"),
                warnings: vec![],
            },
            NOW + 10,
        )
        .unwrap();
        p = t.production;
        match PHASES.get(i + 1) {
            Some(next) => {
                assert_eq!(t.dispatch.unwrap().phase, *next);
                assert_eq!(t.audit.len(), 1);
                assert_eq!(p.available_actions(), vec![Action::Pause, Action::Cancel]);
            }
            None => {
                assert_eq!(t.dispatch, None);
                assert_eq!(t.audit[1].kind, "production.completed");
            }
        }
    }
    assert_eq!(p.status, ProductionStatus::Completed);
    assert!(p.available_actions().is_empty());
    assert_eq!(p.version, 11);
}

#[test]
fn a_live_lease_is_a_duplicate_and_an_expired_one_is_reconciled_not_reclaimed() {
    let mut p = fixture(ProductionStatus::Running);
    assert_eq!(
        claim_refusal(&p, "script", 1, NOW),
        Some(ClaimRefusal::Duplicate)
    );
    p.phases[1].lease_until = Some(NOW - 1);
    assert_eq!(
        claim_refusal(&p, "script", 1, NOW),
        Some(ClaimRefusal::LeaseExpired)
    );
    let t = decide(
        &p,
        Command::Reconcile {
            phase: "script".into(),
        },
        NOW,
    )
    .unwrap();
    let types: Vec<&str> = t.audit.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(types, ["tool_call.unknown", "phase.reconciled"]);
    assert_eq!(t.production.phases[1].attempt, 2);
    assert_eq!(claim_refusal(&t.production, "script", 2, NOW), None);
}

#[test]
fn stale_and_unknown_messages_are_refused() {
    let p = fixture(ProductionStatus::Running);
    assert_eq!(
        claim_refusal(&p, "script", 0, NOW),
        Some(ClaimRefusal::Stale)
    );
    assert_eq!(
        claim_refusal(&p, "script", 2, NOW),
        Some(ClaimRefusal::Stale)
    );
    assert_eq!(
        claim_refusal(&p, "render", 1, NOW),
        Some(ClaimRefusal::UnknownPhase)
    );
    assert_eq!(
        claim_refusal(&p, "brief", 1, NOW),
        Some(ClaimRefusal::AlreadyFinished)
    );
}

#[test]
fn retryable_error_requeues_the_same_attempt_and_records_the_error() {
    let p = fixture(ProductionStatus::Running);
    let t = decide(
        &p,
        Command::Fail {
            phase: "script".into(),
            attempt: 1,
            error: err("provider_5xx", ErrorClass::Retryable),
            disposition: FailDisposition::Retry,
        },
        NOW,
    )
    .unwrap();
    let ph = t.production.phase("script").unwrap();
    assert_eq!(
        (ph.status, ph.attempt, ph.error_count),
        (PhaseStatus::Queued, 1, 1)
    );
    assert_eq!(ph.last_error.as_ref().unwrap().at, NOW);
    assert!(t.production.has_errors());
    assert_eq!(t.audit[0].kind, "phase.retry_scheduled");
    assert_eq!(t.dispatch, None, "SQS redelivers; nothing is sent");
    assert_eq!(claim_refusal(&t.production, "script", 1, NOW), None);
}

#[test]
fn a_panic_is_recorded_as_step_unexpected_error_and_fails_the_production() {
    let p = fixture(ProductionStatus::Running);
    let t = decide(
        &p,
        Command::Fail {
            phase: "script".into(),
            attempt: 1,
            error: err("step_unexpected_error", ErrorClass::Unexpected),
            disposition: FailDisposition::Retry,
        },
        NOW,
    )
    .unwrap();
    assert_eq!(t.production.status, ProductionStatus::Failed);
    assert_eq!(t.audit[0].kind, "task.step_unexpected_error");
}

#[test]
fn pause_while_running_holds_the_next_phase_and_resume_dispatches_it() {
    let mut ungated = fixture(ProductionStatus::Running);
    ungated.gates = GatePolicy::default();
    let p = decide(&ungated, Command::Act(Act::Pause), NOW)
        .unwrap()
        .production;
    let t = decide(&p, succeed("script", &[]), NOW).unwrap();
    assert_eq!(t.dispatch, None);
    assert_eq!(t.production.status, ProductionStatus::Paused);
    assert_eq!(
        t.production.phase("assets").unwrap().status,
        PhaseStatus::Pending
    );
    let t = decide(&t.production, Command::Act(Act::Resume), NOW).unwrap();
    assert_eq!(t.dispatch, dispatch("assets", 1));
}

#[test]
fn resume_gives_a_phase_queued_before_the_pause_a_new_attempt() {
    let p = decide(
        &fixture(ProductionStatus::Queued),
        Command::Act(Act::Pause),
        NOW,
    )
    .unwrap()
    .production;
    assert_eq!(
        claim_refusal(&p, "brief", 1, NOW),
        Some(ClaimRefusal::Paused)
    );
    let t = decide(&p, Command::Act(Act::Resume), NOW).unwrap();
    assert_eq!(t.dispatch, dispatch("brief", 2));
    assert_eq!(
        claim_refusal(&t.production, "brief", 1, NOW),
        Some(ClaimRefusal::Stale)
    );
}

#[test]
fn retry_phase_bumps_the_attempt_of_the_failed_phase() {
    let t = decide(
        &fixture(ProductionStatus::DeadLettered),
        Command::Act(Act::RetryPhase),
        NOW,
    )
    .unwrap();
    assert_eq!(t.dispatch, dispatch("script", 2));
    assert_eq!(t.audit[0].kind, "phase.retried");
}

#[test]
fn a_phase_finishing_after_cancel_keeps_the_production_cancelled() {
    let p = decide(
        &fixture(ProductionStatus::Running),
        Command::Act(Act::Cancel),
        NOW,
    )
    .unwrap()
    .production;
    let t = decide(&p, succeed("script", &[]), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Cancelled);
    assert_eq!(t.dispatch, None);
}

#[test]
fn long_error_details_are_cut_on_a_char_boundary() {
    let e = PhaseError::new("x", ErrorClass::Permanent, "é".repeat(400));
    assert!(e.detail.len() <= PhaseError::MAX_DETAIL + '…'.len_utf8());
}

fn awaiting() -> Production {
    fixture(ProductionStatus::AwaitingApproval)
}

#[test]
fn a_gated_phase_waits_for_approval_and_approve_starts_the_next() {
    let t = decide(
        &fixture(ProductionStatus::Running),
        succeed("script", &[]),
        NOW,
    )
    .unwrap();
    assert_eq!(t.production.status, ProductionStatus::AwaitingApproval);
    assert_eq!(t.dispatch, None);
    let a = t.production.approval.clone().unwrap();
    assert_eq!(
        (a.phase.as_str(), a.expires_at),
        ("script", NOW + 1000),
        "every approval expires"
    );
    assert_eq!(t.audit[1].kind, "approval.requested");
    let t = decide(&t.production, Command::Act(Act::Approve), NOW).unwrap();
    assert_eq!(t.dispatch, dispatch("assets", 1));
    assert_eq!(t.production.approval, None);
}

#[test]
fn auto_approve_skips_gates() {
    let mut p = fixture(ProductionStatus::Running);
    p.gates.auto_approve = true;
    let t = decide(&p, succeed("script", &[]), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Running);
    assert_eq!(t.dispatch.unwrap().phase, "assets");
}

#[test]
fn auto_approve_does_not_bypass_errors() {
    let mut p = fixture(ProductionStatus::Running);
    p.gates.auto_approve = true;
    let failed = Command::Fail {
        phase: "script".into(),
        attempt: 1,
        error: PhaseError::new("content_refused", ErrorClass::Permanent, "refused"),
        disposition: FailDisposition::Stop,
    };
    let t = decide(&p, failed, NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Failed);
    assert_eq!(t.dispatch, None, "nothing after the failed phase starts");
    assert_eq!(
        t.production.phase("assets").unwrap().status,
        PhaseStatus::Pending
    );
}

#[test]
fn an_admin_jump_back_regenerates_and_a_jump_forward_does_not() {
    let p = fixture(ProductionStatus::Failed);
    let jump = |to: &str| {
        Command::Act(Act::Override {
            reason: "the brief was wrong".into(),
            skip_gate: false,
            jump_to: Some(to.into()),
            outputs: vec![],
        })
    };
    let back = decide(&p, jump("brief"), NOW).unwrap();
    assert_eq!(back.production.revision, p.revision + 1, "new calls");
    assert!(back.audit[0].detail.contains("jumped back to brief"));
    let forward = decide(&p, jump("assets"), NOW).unwrap();
    assert_eq!(forward.production.revision, p.revision);
    assert_eq!(
        forward.production.phase("script").unwrap().status,
        PhaseStatus::Skipped
    );
}

#[test]
fn auto_approve_does_not_skip_a_required_gate() {
    let mut p = fixture(ProductionStatus::Running);
    p.gates.auto_approve = true;
    p.gates.required = vec!["script".into()];
    let t = decide(&p, succeed("script", &[]), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::AwaitingApproval);
    assert_eq!(t.dispatch, None);
}

#[test]
fn reject_with_feedback_reruns_the_phase_with_the_feedback() {
    let t = decide(
        &awaiting(),
        Command::Act(Act::Reject {
            feedback: "  Re-target teenagers. ".into(),
            phase: None,
        }),
        NOW,
    )
    .unwrap();
    let script = t.production.phase("script").unwrap();
    assert_eq!((script.status, script.attempt), (PhaseStatus::Queued, 2));
    assert_eq!(script.feedback.as_deref(), Some("Re-target teenagers."));
    assert_eq!(t.dispatch, dispatch("script", 2));
    assert_eq!(t.audit[0].kind, "approval.rejected");
    let err = decide(
        &awaiting(),
        Command::Act(Act::Reject {
            feedback: " ".into(),
            phase: None,
        }),
        NOW,
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs feedback"));
    let long = Command::Act(Act::Reject {
        feedback: "x".repeat(MAX_OPERATOR_TEXT + 1),
        phase: None,
    });
    let err = decide(&awaiting(), long, NOW).unwrap_err();
    assert!(err.to_string().contains("at most 2000"), "{err}");
}

/// Waiting for approval of `voice`: brief, script, assets and voice done; publish pending.
fn awaiting_voice() -> Production {
    let mut p = awaiting();
    for i in 0..4 {
        set(&mut p, i, PhaseStatus::Succeeded, 1);
    }
    p.phases[2].feedback = Some("earlier feedback".into());
    let a = p.approval.as_mut().unwrap();
    a.phase = "voice".into();
    p
}

#[test]
fn reject_from_an_earlier_phase_reruns_it_and_every_later_one_keeping_those_before() {
    let p = awaiting_voice();
    let reject_from = |phase: &str, feedback: &str| {
        let act = Act::Reject {
            feedback: feedback.into(),
            phase: Some(phase.into()),
        };
        decide(&p, Command::Act(act), NOW)
    };
    let t = reject_from("assets", "Brighter images.").unwrap();
    let n = &t.production;
    assert_eq!(n.status, ProductionStatus::Running);
    assert_eq!(n.approval, None);
    assert_eq!(n.revision, p.revision + 1, "new inputs: new calls");
    let states: Vec<(PhaseStatus, u32)> =
        n.phases.iter().map(|ph| (ph.status, ph.attempt)).collect();
    use PhaseStatus as S;
    assert_eq!(
        states,
        [
            (S::Succeeded, 1),
            (S::Succeeded, 1),
            (S::Queued, 2),
            (S::Pending, 1),
            (S::Pending, 0)
        ]
    );
    assert_eq!(n.phases[2].feedback.as_deref(), Some("Brighter images."));
    assert_eq!(t.dispatch, dispatch("assets", 2));
    assert_eq!(t.audit[0].kind, "approval.rejected");
    assert_eq!(
        t.audit[0].phase.as_deref(),
        Some("voice"),
        "what was rejected"
    );
    assert_eq!(t.audit[0].detail, "re-run from assets: Brighter images.");

    // The gated phase itself is the default; a later or unknown phase is refused.
    let t = reject_from("voice", "x").unwrap();
    assert_eq!(t.dispatch, dispatch("voice", 2));
    assert_eq!(t.audit[0].detail, "x");
    let err = reject_from("publish", "x").unwrap_err();
    assert!(err.to_string().contains("publish comes after it"), "{err}");
    let err = reject_from("render", "x").unwrap_err();
    assert!(
        matches!(err, DomainError::UnknownPhase(ref ph) if ph == "render"),
        "{err}"
    );
}

#[test]
fn an_expired_approval_fails_the_phase_or_renews_per_policy() {
    let later = NOW + 5000;
    let t = decide(&awaiting(), Command::ExpireApproval, later).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Failed);
    let script = t.production.phase("script").unwrap();
    assert_eq!(script.last_error.as_ref().unwrap().code, "approval_expired");
    assert_eq!(t.production.available_actions()[0], Action::RetryPhase);

    let mut p = awaiting();
    p.gates.on_expiry = OnExpiry::Renew;
    let t = decide(&p, Command::ExpireApproval, later).unwrap();
    assert_eq!(t.production.status, ProductionStatus::AwaitingApproval);
    let a = t.production.approval.unwrap();
    assert_eq!((a.expires_at, a.renewals), (later + 1000, 1));
    assert_eq!(t.audit[0].kind, "approval.renewed");
}

#[test]
fn override_needs_a_reason_and_leaves_a_badge() {
    let skip = |reason: &str| {
        Command::Act(Act::Override {
            reason: reason.into(),
            skip_gate: true,
            jump_to: None,
            outputs: vec![],
        })
    };
    assert!(
        decide(&awaiting(), skip(" "), NOW)
            .unwrap_err()
            .to_string()
            .contains("needs a reason")
    );
    let t = decide(&awaiting(), skip("signed off"), NOW).unwrap();
    let mark = t.production.overridden.clone().unwrap();
    assert_eq!(
        (mark.at, mark.what.as_str(), mark.reason.as_str()),
        (NOW, "skipped the approval gate at script", "signed off")
    );
    assert_eq!(t.audit[0].kind, "override.applied");
    assert_eq!(t.dispatch.unwrap().phase, "assets");
    // An admin clears the badge, with a reason, audited; the course stays.
    let p = t.production;
    assert!(p.available_actions().contains(&Action::ClearOverride));
    let clear = |reason: &str| {
        Command::Act(Act::ClearOverride {
            reason: reason.into(),
        })
    };
    assert!(decide(&p, clear(""), NOW).is_err());
    let t = decide(&p, clear("reviewed after the fact"), NOW + 1).unwrap();
    assert_eq!(t.production.overridden, None);
    assert_eq!(t.production.status, p.status);
    assert_eq!(t.audit[0].kind, "override.cleared");
    assert!(
        t.audit[0].detail.contains("reviewed after the fact"),
        "{}",
        t.audit[0].detail
    );
    assert!(
        !t.production
            .available_actions()
            .contains(&Action::ClearOverride)
    );
    assert!(matches!(
        decide(&t.production, clear("again"), NOW + 2),
        Err(DomainError::ActionUnavailable { .. })
    ));
}

#[test]
fn an_override_stored_as_a_flag_reads_as_a_mark() {
    let mut v = serde_json::to_value(awaiting()).unwrap();
    v["overridden"] = serde_json::json!(true);
    let p: Production = serde_json::from_value(v.clone()).unwrap();
    assert!(p.overridden.unwrap().reason.contains("see the audit"));
    v["overridden"] = serde_json::json!(false);
    let p: Production = serde_json::from_value(v).unwrap();
    assert_eq!(p.overridden, None);
}

#[test]
fn a_jump_takes_supplied_outputs_for_the_phases_it_skips_only() {
    let p = fixture(ProductionStatus::Failed); // brief ok, script failed
    let jump = |phase: &str| {
        Command::Act(Act::Override {
            reason: "script written by hand".into(),
            skip_gate: false,
            jump_to: Some("assets".into()),
            outputs: vec![format!("{phase}={{\"text\": \"x\"}}").parse().unwrap()],
        })
    };
    let t = decide(&p, jump("script"), NOW).unwrap();
    let script = &t.production.phases[1];
    assert_eq!(script.status, PhaseStatus::Skipped);
    assert_eq!(script.attempt, p.phases[1].attempt + 1);
    assert_eq!(
        script.output.as_deref(),
        Some(crate::domain::output_key("script", script.attempt).as_str())
    );
    assert!(
        t.audit[0]
            .detail
            .contains("with the output of script supplied")
    );
    // An output for a phase the jump does not skip is refused.
    let err = decide(&p, jump("brief"), NOW).unwrap_err().to_string();
    assert!(
        err.contains("brief, which this jump does not skip"),
        "{err}"
    );
    assert!(
        "script=nope"
            .parse::<crate::domain::SuppliedOutput>()
            .is_err()
    );
}

#[test]
fn jumping_skips_unfinished_earlier_phases_and_resets_later_ones() {
    let p = fixture(ProductionStatus::Failed); // brief ok, script failed
    let jump = Command::Act(Act::Override {
        reason: "script done by hand".into(),
        skip_gate: false,
        jump_to: Some("assets".into()),
        outputs: vec![],
    });
    let t = decide(&p, jump, NOW).unwrap();
    let st: Vec<_> = t.production.phases.iter().map(|ph| ph.status).collect();
    use PhaseStatus as Ph;
    assert_eq!(
        st,
        vec![
            Ph::Succeeded,
            Ph::Skipped,
            Ph::Queued,
            Ph::Pending,
            Ph::Pending
        ]
    );
    assert_eq!(t.production.current_phase().unwrap().name, "assets");
    let unknown = Command::Act(Act::Override {
        reason: "r".into(),
        skip_gate: false,
        jump_to: Some("render".into()),
        outputs: vec![],
    });
    assert!(matches!(
        decide(&p, unknown, NOW),
        Err(DomainError::UnknownPhase(_))
    ));
}

#[test]
fn an_expired_lease_is_reconciled_with_a_new_attempt() {
    let mut p = fixture(ProductionStatus::Running);
    p.phases[1].lease_until = Some(NOW - 1);
    let t = decide(
        &p,
        Command::Reconcile {
            phase: "script".into(),
        },
        NOW,
    )
    .unwrap();
    assert_eq!(t.dispatch, dispatch("script", 2));
    let kinds: Vec<_> = t.audit.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["tool_call.unknown", "phase.reconciled"]);
    assert_eq!(
        claim_refusal(&t.production, "script", 1, NOW),
        Some(ClaimRefusal::Stale),
        "the lost run's message is stale"
    );
}

#[test]
fn a_lost_dispatch_is_sent_again_with_the_same_attempt() {
    let t = decide(
        &fixture(ProductionStatus::Queued),
        Command::Redispatch {
            phase: "brief".into(),
        },
        NOW,
    )
    .unwrap();
    assert_eq!(t.dispatch, dispatch("brief", 1));
    assert_eq!(t.audit[0].kind, "phase.redispatched");
}

#[test]
fn a_gate_reached_while_paused_is_held_and_resume_returns_to_it() {
    let p = decide(
        &fixture(ProductionStatus::Running),
        Command::Act(Act::Pause),
        NOW,
    )
    .unwrap()
    .production;
    let t = decide(&p, succeed("script", &[]), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Paused);
    assert!(t.production.approval.is_some());
    let t = decide(&t.production, Command::Act(Act::Resume), NOW).unwrap();
    assert_eq!(
        (t.production.status, t.dispatch),
        (ProductionStatus::AwaitingApproval, None)
    );
}

#[test]
fn operator_dispatches_open_approvals_and_leases_are_due() {
    let p = fixture(ProductionStatus::Queued);
    assert_eq!(
        p.due_at,
        Some(NOW - 10_000),
        "a new production is due until its first claim"
    );
    let claimed = decide(&p, claim_of("brief"), NOW).unwrap();
    assert_eq!(
        claimed.production.due_at,
        Some(NOW + 60_000),
        "a claimed phase is due when its lease expires"
    );
    let handed_off = decide(&claimed.production, succeed("brief", &[]), NOW).unwrap();
    assert_eq!(
        handed_off.production.due_at, None,
        "a hand-off is recovered by SQS, not the sweep"
    );
    let waiting = decide(
        &fixture(ProductionStatus::Running),
        succeed("script", &[]),
        NOW,
    )
    .unwrap();
    assert_eq!(
        waiting.production.due_at,
        Some(NOW + 1000),
        "due when the approval expires"
    );
    let retried = decide(
        &fixture(ProductionStatus::Failed),
        Command::Act(Act::RetryPhase),
        NOW,
    )
    .unwrap();
    assert_eq!(retried.production.due_at, Some(NOW));
}

#[test]
fn a_redriven_message_reruns_its_dead_lettered_phase_as_a_new_attempt() {
    let p = fixture(ProductionStatus::DeadLettered);
    let cmd = |attempt| Command::Redrive {
        phase: "script".into(),
        attempt,
        message_id: "m-1".into(),
    };
    let t = decide(&p, cmd(1), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Running);
    assert_eq!(t.dispatch, dispatch("script", 2));
    assert_eq!(t.audit[0].kind, "dlq.redriven");
    assert!(t.audit[0].detail.contains("m-1: attempt 1 -> 2"));
    assert!(
        decide(&t.production, cmd(1), NOW).is_err(),
        "redriving twice runs once"
    );
    assert!(decide(&fixture(ProductionStatus::Running), cmd(1), NOW).is_err());
}

#[test]
fn a_message_dead_lettered_without_a_result_marks_the_phase() {
    let t = decide(
        &fixture(ProductionStatus::Running),
        Command::ObserveDeadLetter {
            phase: "script".into(),
            attempt: 1,
        },
        NOW,
    )
    .unwrap();
    assert_eq!(t.production.status, ProductionStatus::DeadLettered);
    assert_eq!(
        t.production
            .phase("script")
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .code,
        "dead_lettered_unhandled"
    );
    let stale = Command::ObserveDeadLetter {
        phase: "script".into(),
        attempt: 7,
    };
    assert!(decide(&fixture(ProductionStatus::Running), stale, NOW).is_err());
}

/// A production whose voice phase runs, with warnings from assets already recorded.
fn voice_running_with_warnings() -> Production {
    let mut p = fresh();
    p.gates.phases.clear();
    p.status = ProductionStatus::Running;
    for i in 0..3 {
        set(&mut p, i, PhaseStatus::Succeeded, 1);
    }
    set(&mut p, 3, PhaseStatus::Running, 1);
    p.warnings = vec!["assets: scene 2: copyright_risk".into()];
    p
}

fn dispatch(phase: &str, attempt: u32) -> Option<Dispatch> {
    Some(Dispatch {
        phase: phase.into(),
        attempt,
    })
}

fn succeed(phase: &str, warnings: &[&str]) -> Command {
    Command::Succeed {
        phase: phase.into(),
        attempt: 1,
        output: format!("O#{phase}#1"),
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
    }
}

#[test]
fn warnings_let_the_production_proceed_but_hold_publish_until_acknowledged() {
    // Assets raise a warning: voice still starts.
    let mut p = voice_running_with_warnings();
    set(&mut p, 2, PhaseStatus::Running, 1);
    set(&mut p, 3, PhaseStatus::Pending, 0);
    p.warnings.clear();
    let t = decide(&p, succeed("assets", &["scene 2: copyright_risk"]), NOW).unwrap();
    assert_eq!(t.dispatch.unwrap().phase, "voice");
    assert_eq!(t.production.warnings, ["assets: scene 2: copyright_risk"]);

    // Voice succeeds: publish is held for the acknowledgement.
    let t = decide(&voice_running_with_warnings(), succeed("voice", &[]), NOW).unwrap();
    assert_eq!(t.dispatch, None);
    let held = t.production;
    assert_eq!(held.status, ProductionStatus::AwaitingApproval);
    let gate = held.approval.clone().unwrap();
    assert_eq!(
        (gate.kind, gate.phase.as_str()),
        (GateKind::Warnings, "voice")
    );
    assert_eq!(held.phase("publish").unwrap().status, PhaseStatus::Pending);
    assert_eq!(
        held.available_actions(),
        [
            Action::AcknowledgeWarnings,
            Action::Pause,
            Action::Edit,
            Action::Cancel,
            Action::Override
        ]
    );
    assert!(
        decide(&held, Command::Act(Act::Approve), NOW).is_err(),
        "not an approval"
    );
    assert!(
        decide(
            &held,
            Command::Act(Act::Reject {
                feedback: "x".into(),
                phase: None,
            }),
            NOW
        )
        .is_err(),
        "nothing to re-run"
    );

    let t = decide(&held, Command::Act(Act::AcknowledgeWarnings), NOW + 5).unwrap();
    assert_eq!(t.dispatch.unwrap().phase, "publish");
    assert_eq!(t.production.warnings_acknowledged_at, Some(NOW + 5));
    assert_eq!(t.production.approval, None);
    assert_eq!(t.audit[0].kind, "warnings.acknowledged");
    assert!(t.audit[0].detail.contains("copyright_risk"));
}

#[test]
fn a_paused_production_with_warnings_resumes_into_the_acknowledgement() {
    let mut p = voice_running_with_warnings();
    p.status = ProductionStatus::Paused;
    let t = decide(&p, succeed("voice", &[]), NOW).unwrap();
    assert_eq!(
        (t.production.status, t.dispatch.is_none()),
        (ProductionStatus::Paused, true)
    );
    let t = decide(&t.production, Command::Act(Act::Resume), NOW + 1).unwrap();
    assert_eq!(t.dispatch, None, "publish does not start");
    assert_eq!(t.production.status, ProductionStatus::AwaitingApproval);
    assert_eq!(t.production.approval.unwrap().kind, GateKind::Warnings);
}

#[test]
fn an_admin_override_skips_the_acknowledgement() {
    let held = decide(&voice_running_with_warnings(), succeed("voice", &[]), NOW)
        .unwrap()
        .production;
    let t = decide(
        &held,
        Command::Act(Act::Override {
            reason: "legal reviewed the image".into(),
            skip_gate: true,
            jump_to: None,
            outputs: vec![],
        }),
        NOW,
    )
    .unwrap();
    assert_eq!(t.dispatch.unwrap().phase, "publish");
    assert!(t.audit[0].detail.contains("warnings acknowledgement"));
}

#[test]
fn without_warnings_publish_starts_at_once() {
    let mut p = voice_running_with_warnings();
    p.warnings.clear();
    let t = decide(&p, succeed("voice", &[]), NOW).unwrap();
    assert_eq!(t.dispatch.unwrap().phase, "publish");
}

#[test]
fn a_phase_whose_lease_expired_may_be_retried_as_its_next_attempt() {
    let p = fixture(ProductionStatus::Queued);
    let claimed = decide(&p, claim_of("brief"), NOW).unwrap().production;
    // While the lease holds, the worker may still commit: no retry.
    assert!(
        !claimed
            .available_actions_at(NOW + 59_999)
            .contains(&Action::RetryPhase)
    );
    assert!(matches!(
        decide(&claimed, Command::Act(Act::RetryPhase), NOW + 59_999),
        Err(DomainError::ActionUnavailable { .. })
    ));
    let later = NOW + 60_000;
    assert_eq!(claimed.available_actions_at(later)[0], Action::RetryPhase);
    let t = decide(&claimed, Command::Act(Act::RetryPhase), later).unwrap();
    let brief = t.production.phase("brief").unwrap();
    assert_eq!((brief.status, brief.attempt), (PhaseStatus::Queued, 2));
    assert_eq!(t.production.status, ProductionStatus::Running);
    assert!(t.dispatch.is_some());
}

#[test]
fn reject_reworks_a_failed_or_paused_production_from_an_earlier_phase() {
    let reject = |phase: Option<&str>| {
        Command::Act(Act::Reject {
            feedback: "reword the brief: fewer scenes".into(),
            phase: phase.map(String::from),
        })
    };
    for status in [ProductionStatus::Failed, ProductionStatus::DeadLettered] {
        let p = fixture(status);
        assert!(p.available_actions().contains(&Action::Reject));
        let t = decide(&p, reject(Some("brief")), NOW).unwrap();
        let n = &t.production;
        assert_eq!(n.status, ProductionStatus::Running);
        assert_eq!(n.revision, p.revision + 1, "new calls from here on");
        let brief = n.phase("brief").unwrap();
        assert_eq!((brief.status, brief.attempt), (PhaseStatus::Queued, 2));
        assert_eq!(
            brief.feedback.as_deref(),
            Some("reword the brief: fewer scenes")
        );
        assert!(
            n.phases[1..]
                .iter()
                .all(|ph| ph.status == PhaseStatus::Pending)
        );
        assert!(t.dispatch.is_some());
        assert_eq!(t.audit[0].kind, "production.reworked");
        // By default, the phase that broke.
        let t = decide(&p, reject(None), NOW).unwrap();
        assert_eq!(
            t.production.phase("script").unwrap().status,
            PhaseStatus::Queued
        );
        assert_eq!(
            t.production.phase("brief").unwrap().status,
            PhaseStatus::Succeeded,
            "earlier phases untouched"
        );
        // Not past where it stopped.
        let Err(DomainError::Invalid(why)) = decide(&p, reject(Some("voice")), NOW) else {
            panic!("refused")
        };
        assert!(why.contains("voice comes after it"), "{why}");
    }
    // Paused: the plan changes, the production stays paused; resume runs it.
    let p = fixture(ProductionStatus::Paused);
    let t = decide(&p, reject(Some("brief")), NOW).unwrap();
    assert_eq!(t.production.status, ProductionStatus::Paused);
    assert!(t.dispatch.is_none());
    let resumed = decide(&t.production, Command::Act(Act::Resume), NOW).unwrap();
    assert_eq!(
        resumed.dispatch.as_ref().map(|d| d.phase.as_str()),
        Some("brief")
    );
}

/// A running production whose `script` phase (attempt 1) waits for an external job.
fn waiting_on_job() -> Production {
    let p = fixture(ProductionStatus::Running);
    let wait = Wait {
        job: "p1#script#agent#a1".into(),
        token_sha256: "ab".repeat(32),
        since: NOW,
        deadline: NOW + 10_000,
        heartbeat_ms: 3_000,
        heartbeats: 0,
        arrived_at: None,
    };
    let cmd = Command::Wait {
        phase: "script".into(),
        attempt: 1,
        wait,
    };
    decide(&p, cmd, NOW).unwrap().production
}

#[test]
fn a_waiting_phase_holds_a_lease_that_heartbeats_move_but_never_past_the_deadline() {
    let p = waiting_on_job();
    let ph = p.phase("script").unwrap();
    assert!(ph.is_waiting());
    assert_eq!(ph.lease_until, Some(NOW + 3_000));
    assert_eq!(
        p.due_at,
        Some(NOW + 3_000),
        "the sweep looks when it lapses"
    );
    let beat = |p: &Production, at| {
        decide(
            p,
            Command::Heartbeat {
                phase: "script".into(),
                attempt: 1,
            },
            at,
        )
    };
    let p = beat(&p, NOW + 2_000).unwrap().production;
    assert_eq!(p.phase("script").unwrap().lease_until, Some(NOW + 5_000));
    let p = beat(&p, NOW + 8_500).unwrap().production;
    assert_eq!(
        p.phase("script").unwrap().lease_until,
        Some(NOW + 10_000),
        "capped at the deadline"
    );
    assert_eq!(
        p.phase("script")
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .heartbeats,
        2
    );
    assert!(beat(&p, NOW + 10_000).is_err(), "none past the deadline");
    // A heartbeat for another attempt changes nothing.
    let other = decide(
        &p,
        Command::Heartbeat {
            phase: "script".into(),
            attempt: 2,
        },
        NOW,
    );
    assert!(other.is_err());
}

#[test]
fn a_result_sends_the_phase_back_to_a_worker_or_waits_for_resume_when_paused() {
    let arrive = Command::Arrive {
        phase: "script".into(),
        attempt: 1,
        succeeded: true,
    };
    let t = decide(&waiting_on_job(), arrive.clone(), NOW + 4_000).unwrap();
    let ph = t.production.phase("script").unwrap();
    assert_eq!((ph.status, ph.attempt), (PhaseStatus::Queued, 1));
    assert_eq!(t.dispatch.as_ref().unwrap().phase, "script");
    assert!(
        decide(&t.production, arrive.clone(), NOW + 5_000).is_err(),
        "once"
    );

    let paused = decide(&waiting_on_job(), Command::Act(Act::Pause), NOW + 1).unwrap();
    let t = decide(&paused.production, arrive, NOW + 4_000).unwrap();
    assert!(t.dispatch.is_none(), "nothing runs while paused");
    let ph = t.production.phase("script").unwrap();
    assert_eq!((ph.status, ph.lease_until), (PhaseStatus::Running, None));
    let resumed = decide(&t.production, Command::Act(Act::Resume), NOW + 9_000).unwrap();
    let d = resumed.dispatch.unwrap();
    assert_eq!(
        (d.phase.as_str(), d.attempt),
        ("script", 1),
        "the same attempt"
    );
}

#[test]
fn a_silent_job_is_replaced_by_a_new_attempt_and_a_job_past_its_deadline_fails_the_phase() {
    let p = waiting_on_job();
    let reconcile = Command::Reconcile {
        phase: "script".into(),
    };
    let t = decide(&p, reconcile.clone(), NOW + 3_000).unwrap();
    let ph = t.production.phase("script").unwrap();
    assert_eq!((ph.status, ph.attempt), (PhaseStatus::Queued, 2));
    assert!(ph.waiting.is_none(), "a new attempt is a new job");
    assert!(t.audit[0].detail.contains("missed its heartbeat"));

    let t = decide(&p, reconcile, NOW + 10_000).unwrap();
    let ph = t.production.phase("script").unwrap();
    assert_eq!(ph.status, PhaseStatus::Failed);
    assert_eq!(
        ph.last_error.as_ref().unwrap().code,
        ErrorCode::CallbackDeadline
    );
    assert_eq!(t.production.status, ProductionStatus::Failed);
    assert_eq!(t.audit[0].kind, AuditKind::CallbackDeadline);
}

#[test]
fn retry_starts_a_new_job_and_cancel_stops_waiting_for_one() {
    let p = waiting_on_job();
    assert!(p.available_actions_at(NOW).contains(&Action::RetryPhase));
    let t = decide(&p, Command::Act(Act::RetryPhase), NOW + 1).unwrap();
    let ph = t.production.phase("script").unwrap();
    assert_eq!((ph.status, ph.attempt), (PhaseStatus::Queued, 2));
    assert!(ph.waiting.is_none());
    let t = decide(&p, Command::Act(Act::Cancel), NOW + 1).unwrap();
    assert_eq!(t.production.phase("script").unwrap().lease_until, None);
    assert_eq!(t.production.due_at, None, "nothing for the sweep");
}

#[test]
fn a_copy_of_the_message_of_a_phase_waiting_for_its_job_is_never_run_nor_reconciled() {
    let p = waiting_on_job();
    for at in [NOW + 1, NOW + 60_000] {
        assert_eq!(
            claim_refusal(&p, "script", 1, at),
            Some(ClaimRefusal::Duplicate),
            "at {at}"
        );
    }
}
