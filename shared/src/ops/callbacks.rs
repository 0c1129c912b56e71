//! `POST /callbacks/{token}`: an external job reports for the phase attempt that waits on
//! it. The token alone authenticates it (no operator's token): only a phase that still
//! waits on that very attempt, with that token's hash, before its deadline, takes it.
//! Nothing else changes on a refusal.

use serde::{Deserialize, Serialize};

use super::{Ops, OpsError};
use crate::domain::callback::Token;
use crate::domain::{Actor, Command, ErrorClass, Millis, PhaseStatus, ProductionStatus};
use crate::ports::{CallOutcome, OutcomeStatus};
use crate::tools::JobFailure;
use crate::write::{OnConflict, Written};

/// What a runner reports.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobReport {
    /// Still working: the next heartbeat (or the result) is due within the heartbeat interval.
    Heartbeat,
    /// Done: `result` is the job's answer (for the coding pipeline, its change set).
    Succeeded { result: serde_json::Value },
    /// Failed: `class` `retryable` (the phase tries again, a new job) or `permanent`.
    Failed { error: ReportedError },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedError {
    pub code: String,
    pub class: ErrorClass,
    pub message: String,
}

/// What the runner is told.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallbackAnswer {
    /// `waiting` (heartbeat taken), `received` (result taken) or `already_received` (a
    /// repeat of a result already taken: nothing changed).
    pub status: String,
    /// When the next heartbeat is due (epoch ms), while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_by: Option<Millis>,
    /// The job's deadline (epoch ms).
    pub deadline: Millis,
}

impl Ops {
    /// Takes a runner's report for the attempt its token names.
    pub async fn callback(
        &self,
        token: &str,
        report: JobReport,
    ) -> Result<CallbackAnswer, OpsError> {
        let forged = || OpsError::Unauthorized("not a valid callback token".into());
        let t = Token::parse(token).ok_or_else(forged)?;
        let actor = Actor(format!("job:{}#{}", t.phase, t.attempt));
        for _ in 0..5 {
            let p = self
                .ports
                .productions
                .get(&t.production)
                .await?
                .ok_or_else(forged)?;
            let ph = p.phase(&t.phase).ok_or_else(forged)?;
            let gone = |why: String| Err(OpsError::Gone(why));
            if ph.attempt != t.attempt {
                return gone(format!(
                    "attempt {} of phase {} no longer waits (the phase is at attempt {}); stop the job",
                    t.attempt, t.phase, ph.attempt
                ));
            }
            let Some(w) = ph.waiting.clone() else {
                return match ph.status {
                    PhaseStatus::Running | PhaseStatus::Queued => Err(forged()),
                    s => gone(format!(
                        "phase {} is {} and waits for no job; stop the job",
                        t.phase,
                        s.as_str()
                    )),
                };
            };
            // The token is the attempt's own (compared by hash: only the hash is kept).
            if w.token_sha256 != t.sha256() {
                return Err(forged());
            }
            if p.status == ProductionStatus::Cancelled {
                return gone(format!("production {} was cancelled; stop the job", p.id));
            }
            let now = self.ports.clock.now();
            if w.arrived_at.is_some() {
                return Ok(CallbackAnswer {
                    status: "already_received".into(),
                    heartbeat_by: None,
                    deadline: w.deadline,
                });
            }
            if now >= w.deadline {
                return gone(format!(
                    "the job's deadline passed at {}; its token expired",
                    crate::view::time(w.deadline)
                ));
            }
            let cmd = match &report {
                JobReport::Heartbeat => Command::Heartbeat {
                    phase: t.phase.clone(),
                    attempt: t.attempt,
                },
                JobReport::Succeeded { result } => {
                    self.record(&w.job, OutcomeStatus::Completed, result.to_string(), now)
                        .await?;
                    Command::Arrive {
                        phase: t.phase.clone(),
                        attempt: t.attempt,
                        succeeded: true,
                    }
                }
                JobReport::Failed { error } => {
                    let failure = JobFailure {
                        code: error.code.clone(),
                        class: error.class,
                        message: crate::domain::redact::excerpt(&error.message, 1000),
                    };
                    let text = serde_json::to_string(&failure).expect("failure serialises");
                    self.record(&w.job, OutcomeStatus::Failed, text, now)
                        .await?;
                    Command::Arrive {
                        phase: t.phase.clone(),
                        attempt: t.attempt,
                        succeeded: false,
                    }
                }
            };
            let written = self
                .transitioner
                .write(p, cmd, &actor, &[], None, OnConflict::GiveUp)
                .await?;
            match written {
                Written::Committed(tr) => {
                    self.dispatch(&tr.production, tr.dispatch.as_ref()).await?;
                    let ph = tr.production.phase(&t.phase).expect("known");
                    let heartbeat = matches!(report, JobReport::Heartbeat);
                    return Ok(CallbackAnswer {
                        status: if heartbeat { "waiting" } else { "received" }.into(),
                        heartbeat_by: if heartbeat { ph.lease_until } else { None },
                        deadline: w.deadline,
                    });
                }
                Written::Refused(e) => return gone(e.to_string()),
                Written::Gone => return Err(forged()),
                Written::Conflicted => continue,
            }
        }
        Err(OpsError::Store(crate::ports::StoreError::Unavailable(
            "the production kept changing; send the callback again".into(),
        )))
    }

    /// Records the job's result (or failure) where the phase's run reads it, keeping the
    /// request hash the run recorded when it sent the job.
    async fn record(
        &self,
        job: &str,
        status: OutcomeStatus,
        result: String,
        now: Millis,
    ) -> Result<(), OpsError> {
        let sent = self.ports.ledger.get(job, now).await?;
        let outcome = CallOutcome {
            request_hash: sent.map(|s| s.request_hash).unwrap_or_default(),
            status,
            result,
            tries: 0,
        };
        // As long as the run's own records are kept.
        let expires = now + 14 * 86_400_000;
        self.ports.ledger.put(job, &outcome, expires).await?;
        Ok(())
    }
}
