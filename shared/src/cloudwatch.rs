//! CloudWatch alarms into Shepherd's alarm store. The template's alarms (every DLQ's depth,
//! every phase queue's oldest-message age: the detector of a stuck phase) notify the stack's
//! alarm topic; the alarm-ingest function reads each notification (the JSON CloudWatch
//! publishes to SNS) and records it, so `shepherd alarms` and `GET /alarms` show it with
//! its queue and phase, and for a DLQ the productions whose messages wait there.
//!
//! | notification | alarm |
//! |---|---|
//! | `ALARM`, a DLQ's `ApproximateNumberOfMessagesVisible` | `dlq_not_empty#<queue>` (critical), affecting the productions found in it |
//! | `ALARM`, a phase queue's `ApproximateAgeOfOldestMessage` | `queue_stuck#<queue>` (warning) |
//! | `ALARM`, a function's `Errors` | `function_errors#<function>` (critical) |
//! | `ALARM`, a function's `Throttles` | `function_throttled#<function>` (warning) |
//! | `ALARM`, a stream consumer's `IteratorAge` | `stream_behind#<function>` (warning) |
//! | `ALARM`, anything else | `cloudwatch_alarm#<alarm name>` (warning) |
//! | `OK` | the same alarm resolved |
//! | `INSUFFICIENT_DATA` | nothing |

use std::sync::Arc;

use serde::Deserialize;
use tracing::{info, warn};

use crate::config::Topology;
use crate::domain::Actor;
use crate::domain::alarms::{AlarmKind, AlarmStatus, Raise, Severity};
use crate::ports::{Alarms, Clock, Queue, StoreError};
use crate::protocol::PhaseMessage;

/// A CloudWatch alarm's state change as it publishes it to SNS.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notification {
    pub alarm_name: String,
    #[serde(default)]
    pub alarm_description: Option<String>,
    pub new_state_value: String,
    #[serde(default)]
    pub new_state_reason: String,
    #[serde(default)]
    pub trigger: Option<Trigger>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Trigger {
    #[serde(default)]
    pub metric_name: String,
    #[serde(default)]
    pub namespace: String,
    /// CloudWatch writes these with lowercase keys (`{"value": .., "name": ..}`).
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dimension {
    #[serde(alias = "Name")]
    pub name: String,
    #[serde(alias = "Value")]
    pub value: String,
}

/// What a notification means for the alarm store.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// Record it; `dlq` names the DLQ whose messages say which productions it affects.
    Raise {
        raise: Raise,
        dlq: Option<String>,
    },
    Resolve {
        id: String,
    },
    Ignore(String),
}

/// Where a queue named `name` sits in the stack: (phase, is it the DLQ, its URL).
fn locate<'a>(topology: &'a Topology, name: &str) -> Option<(&'a str, bool, &'a str)> {
    let ends = |url: &str| url.rsplit('/').next() == Some(name);
    let queue = topology.queues.iter().find(|(_, u)| ends(u));
    let dlq = topology.dlqs.iter().find(|(_, u)| ends(u));
    match (queue, dlq) {
        (Some((phase, url)), _) => Some((phase, false, url)),
        (_, Some((phase, url))) => Some((phase, true, url)),
        _ => None,
    }
}

/// The rule of the table above. Pure.
pub fn classify(n: &Notification, topology: &Topology) -> Ingested {
    let queue = n.trigger.as_ref().and_then(|t| {
        (t.namespace == "AWS/SQS")
            .then(|| t.dimensions.iter().find(|d| d.name == "QueueName"))
            .flatten()
            .map(|d| (t.metric_name.as_str(), d.value.as_str()))
    });
    let located = queue.and_then(|(metric, name)| {
        locate(topology, name).map(|(phase, dlq, url)| (metric, name, phase, dlq, url))
    });
    let function = n.trigger.as_ref().and_then(|t| {
        (t.namespace == "AWS/Lambda")
            .then(|| t.dimensions.iter().find(|d| d.name == "FunctionName"))
            .flatten()
            .and_then(|d| {
                let (kind, severity) = match t.metric_name.as_str() {
                    "Errors" => (AlarmKind::FunctionErrors, Severity::Critical),
                    "Throttles" => (AlarmKind::FunctionThrottled, Severity::Warning),
                    "IteratorAge" => (AlarmKind::StreamBehind, Severity::Warning),
                    _ => return None,
                };
                Some((kind, d.value.clone(), severity))
            })
    });
    let (kind, subject, severity, dlq, place) = match (located, function) {
        (_, Some((kind, name, severity))) => {
            let place = format!("function {name}");
            (kind, name, severity, None, place)
        }
        (located, None) => match located {
            Some(("ApproximateNumberOfMessagesVisible", name, phase, true, url)) => (
                AlarmKind::DlqNotEmpty,
                name.to_string(),
                Severity::Critical,
                Some(url.to_string()),
                format!("phase {phase}, queue {name}"),
            ),
            Some(("ApproximateAgeOfOldestMessage", name, phase, false, _)) => (
                AlarmKind::QueueStuck,
                name.to_string(),
                Severity::Warning,
                None,
                format!("phase {phase}, queue {name}"),
            ),
            _ => (
                AlarmKind::parse("cloudwatch_alarm"),
                n.alarm_name.clone(),
                Severity::Warning,
                None,
                queue.map(|(_, q)| format!("queue {q}")).unwrap_or_default(),
            ),
        },
    };
    match n.new_state_value.as_str() {
        "ALARM" => {
            let mut detail = format!("{} ({place}): {}", n.alarm_name, n.new_state_reason);
            if let Some(d) = &n.alarm_description {
                detail.push_str(". ");
                detail.push_str(d);
            }
            Ingested::Raise {
                raise: Raise::new(kind, subject, severity, detail),
                dlq,
            }
        }
        "OK" => Ingested::Resolve {
            id: format!("{kind}#{subject}"),
        },
        other => Ingested::Ignore(format!("{}: state {other}", n.alarm_name)),
    }
}

/// The alarm-ingest function's handler (built in `wiring`).
pub struct AlarmIngest {
    pub alarms: Arc<dyn Alarms>,
    pub queue: Arc<dyn Queue>,
    pub clock: Arc<dyn Clock>,
    pub topology: Topology,
}

impl AlarmIngest {
    /// Records each notification (an SNS message's text). A text that is not a CloudWatch
    /// notification is recorded too, as `unrecognised_notification`: nothing sent to the
    /// alarm topic goes unseen. A store failure fails the batch (SNS retries it).
    pub async fn handle<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, StoreError> {
        let mut recorded = 0;
        for text in messages {
            let ingested = match serde_json::from_str::<Notification>(text) {
                Ok(n) => classify(&n, &self.topology),
                Err(e) => Ingested::Raise {
                    raise: Raise::new(
                        AlarmKind::parse("unrecognised_notification"),
                        "alarm-topic",
                        Severity::Warning,
                        format!(
                            "the alarm topic carried a message that is not a CloudWatch alarm ({e}): {}",
                            crate::domain::redact::excerpt(text, 300)
                        ),
                    ),
                    dlq: None,
                },
            };
            let now = self.clock.now();
            match ingested {
                Ingested::Raise { mut raise, dlq } => {
                    if let Some(url) = dlq {
                        raise.affected = self.productions_in(&url).await;
                    }
                    info!(kind = %raise.kind, subject = %raise.subject, "alarm recorded");
                    self.alarms.raise(&raise, now).await?;
                    recorded += 1;
                }
                Ingested::Resolve { id } => {
                    let by = Actor("system:cloudwatch".into());
                    self.alarms
                        .set_status(&id, AlarmStatus::Resolved, &by, now)
                        .await?;
                    recorded += 1;
                }
                Ingested::Ignore(why) => info!(why, "notification ignored"),
            }
        }
        Ok(recorded)
    }

    /// The productions whose messages are at the front of a DLQ (a peek of up to ten; the
    /// DLQ has no redrive policy, so its receive counts do not matter).
    async fn productions_in(&self, url: &str) -> Vec<String> {
        match self.queue.peek(url, 10).await {
            Ok(msgs) => {
                let mut ids: Vec<String> = msgs
                    .iter()
                    .filter_map(|m| PhaseMessage::production_of(&m.body))
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            }
            Err(e) => {
                warn!(error = %e, "could not peek the DLQ; the alarm names no production");
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn topology() -> Topology {
        Topology {
            state_table: "s".into(),
            idempotency_table: "i".into(),
            audit_table: "a".into(),
            queue_prefix: "http://sqs/000/s-".into(),
            queues: BTreeMap::new(),
            dlqs: BTreeMap::new(),
            artifact_bucket: String::new(),
        }
        .with_phases(["brief", "script"])
    }

    fn note(state: &str, metric: &str, queue: &str) -> Notification {
        serde_json::from_value(serde_json::json!({
            "AlarmName": format!("s-{queue}-alarm"),
            "AlarmDescription": "Inspect with shepherd dlq list.",
            "AWSAccountId": "123456789012",
            "NewStateValue": state,
            "NewStateReason": "Threshold Crossed: 1 datapoint [3.0] was greater than the threshold (0.0).",
            "StateChangeTime": "2026-12-01T10:00:00.000+0000",
            "Region": "US East (N. Virginia)",
            "OldStateValue": "OK",
            "Trigger": {
                "MetricName": metric, "Namespace": "AWS/SQS", "StatisticType": "Statistic",
                "Statistic": "MAXIMUM", "Unit": null,
                "Dimensions": [{"value": queue, "name": "QueueName"}],
                "Period": 60, "EvaluationPeriods": 1,
                "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.0
            }
        }))
        .unwrap()
    }

    /// A function's alarm, as CloudWatch publishes it (namespace `AWS/Lambda`, dimension
    /// `FunctionName`).
    fn function_note(state: &str, metric: &str, function: &str) -> Notification {
        let mut n = note(state, metric, "unused");
        let t = n.trigger.as_mut().unwrap();
        t.namespace = "AWS/Lambda".into();
        t.dimensions = vec![Dimension {
            name: "FunctionName".into(),
            value: function.into(),
        }];
        n
    }

    #[test]
    fn a_functions_errors_throttles_and_lag_name_the_function_and_ok_resolves_them() {
        let t = topology();
        for (metric, kind, severity) in [
            ("Errors", AlarmKind::FunctionErrors, Severity::Critical),
            ("Throttles", AlarmKind::FunctionThrottled, Severity::Warning),
            ("IteratorAge", AlarmKind::StreamBehind, Severity::Warning),
        ] {
            let Ingested::Raise { raise, dlq } = classify(
                &function_note("ALARM", metric, "s-SweeperFunction-1a2b"),
                &t,
            ) else {
                panic!("raised")
            };
            assert_eq!(
                (raise.kind, raise.subject.as_str(), raise.severity, dlq),
                (kind.clone(), "s-SweeperFunction-1a2b", severity, None)
            );
            assert!(raise.detail.contains("function s-SweeperFunction-1a2b"));
            assert_eq!(
                classify(&function_note("OK", metric, "s-SweeperFunction-1a2b"), &t),
                Ingested::Resolve {
                    id: format!("{kind}#s-SweeperFunction-1a2b")
                }
            );
        }
        // Another Lambda metric is kept by its alarm's name.
        let Ingested::Raise { raise, .. } = classify(&function_note("ALARM", "Duration", "f"), &t)
        else {
            panic!("raised")
        };
        assert_eq!(raise.kind.as_str(), "cloudwatch_alarm");
    }

    #[test]
    fn a_dlq_alarm_names_its_phase_and_queue_and_ok_resolves_it() {
        let t = topology();
        let Ingested::Raise { raise, dlq } = classify(
            &note(
                "ALARM",
                "ApproximateNumberOfMessagesVisible",
                "s-script-dlq",
            ),
            &t,
        ) else {
            panic!("raised")
        };
        assert_eq!(
            (raise.kind, raise.subject.as_str(), raise.severity),
            (AlarmKind::DlqNotEmpty, "s-script-dlq", Severity::Critical)
        );
        assert!(
            raise.detail.contains("phase script, queue s-script-dlq"),
            "{}",
            raise.detail
        );
        assert_eq!(dlq.as_deref(), Some("http://sqs/000/s-script-dlq"));
        assert_eq!(
            classify(
                &note("OK", "ApproximateNumberOfMessagesVisible", "s-script-dlq"),
                &t
            ),
            Ingested::Resolve {
                id: "dlq_not_empty#s-script-dlq".into()
            }
        );
    }

    #[test]
    fn an_old_message_is_a_stuck_phase_and_other_alarms_are_kept_by_name() {
        let t = topology();
        let Ingested::Raise { raise, .. } = classify(
            &note("ALARM", "ApproximateAgeOfOldestMessage", "s-brief"),
            &t,
        ) else {
            panic!("raised")
        };
        assert_eq!(
            (raise.kind, raise.subject.as_str()),
            (AlarmKind::QueueStuck, "s-brief")
        );
        let Ingested::Raise { raise, .. } =
            classify(&note("ALARM", "NumberOfMessagesSent", "elsewhere"), &t)
        else {
            panic!("raised")
        };
        assert_eq!(raise.kind.as_str(), "cloudwatch_alarm");
        assert_eq!(raise.subject, "s-elsewhere-alarm");
        assert!(matches!(
            classify(&note("INSUFFICIENT_DATA", "x", "s-brief"), &t),
            Ingested::Ignore(_)
        ));
    }
}
