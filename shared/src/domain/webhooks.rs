//! Outbound webhooks: which committed changes are events, how a delivery is signed (the
//! Standard Webhooks scheme), when a failed one is tried again, and what ends it. Pure: the
//! caller passes the time, the random bytes of a new secret and the receiver's answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::alarms::{Alarm, Severity};
use super::error::vocabulary;
use super::{AuditKind, Millis, ProductionStatus};

vocabulary! {
    /// What a subscription can ask for.
    EventType {
        ProductionCreated => "production.created",
        ProductionCompleted => "production.completed",
        ProductionFailed => "production.failed",
        ProductionDeadLettered => "production.dead_lettered",
        ProductionCancelled => "production.cancelled",
        PhaseFailed => "phase.failed",
        ApprovalRequested => "approval.requested",
        /// An open approval was renewed because it was about to expire.
        ApprovalExpiring => "approval.expiring",
        ApprovalExpired => "approval.expired",
        WarningsRequested => "warnings.acknowledgement_requested",
        AlarmRaised => "alarm.raised",
        AlarmResolved => "alarm.resolved",
        /// Sent by `shepherd webhooks test` only.
        Test => "webhook.test",
    }
    other
    /// Not an event type Shepherd sends.
    Unknown
}

impl EventType {
    /// Every type a subscription may name (`*` stands for all of them).
    pub const SUBSCRIBABLE: [EventType; 12] = [
        Self::ProductionCreated,
        Self::ProductionCompleted,
        Self::ProductionFailed,
        Self::ProductionDeadLettered,
        Self::ProductionCancelled,
        Self::PhaseFailed,
        Self::ApprovalRequested,
        Self::ApprovalExpiring,
        Self::ApprovalExpired,
        Self::WarningsRequested,
        Self::AlarmRaised,
        Self::AlarmResolved,
    ];

    /// The event an audit event of a committed write is, if any.
    pub fn of_audit(kind: &AuditKind, status: Option<ProductionStatus>) -> Option<Self> {
        Some(match kind {
            AuditKind::ProductionCreated => Self::ProductionCreated,
            AuditKind::ProductionCompleted => Self::ProductionCompleted,
            AuditKind::ProductionCancelled => Self::ProductionCancelled,
            AuditKind::PhaseDeadLettered => Self::ProductionDeadLettered,
            AuditKind::PhaseFailed if status == Some(ProductionStatus::Failed) => {
                Self::ProductionFailed
            }
            AuditKind::PhaseFailed => Self::PhaseFailed,
            // A panic (or an unexpected handler error) fails the phase and, never retried,
            // the production (F-04).
            AuditKind::StepUnexpectedError if status == Some(ProductionStatus::Failed) => {
                Self::ProductionFailed
            }
            AuditKind::StepUnexpectedError => Self::PhaseFailed,
            AuditKind::ApprovalRequested => Self::ApprovalRequested,
            AuditKind::ApprovalRenewed => Self::ApprovalExpiring,
            AuditKind::ApprovalExpired => Self::ApprovalExpired,
            AuditKind::WarningsRequested => Self::WarningsRequested,
            _ => return None,
        })
    }
}

/// Parses a subscription's event list (`*` = every type); names the unknown one.
pub fn parse_events(names: &[String]) -> Result<Vec<EventType>, String> {
    if names.is_empty() {
        return Err("events: name at least one event type (or *)".into());
    }
    let mut out = Vec::new();
    for n in names {
        if n == "*" {
            return Ok(EventType::SUBSCRIBABLE.to_vec());
        }
        let t = EventType::parse(n);
        if !EventType::SUBSCRIBABLE.contains(&t) {
            return Err(format!(
                "events: unknown event type {n:?} (known: {}, or *)",
                EventType::SUBSCRIBABLE
                    .map(|t| t.as_str().to_string())
                    .join(", ")
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Why `ip` may not receive a webhook, if it may not: the delivery function must not be
/// aimed at the network it runs in. Private (10/8, 172.16/12, 192.168/16), carrier-grade
/// NAT (100.64/10), link-local (169.254/16: the instance metadata), loopback (unless the
/// stack is the local one), unspecified, broadcast, multicast and documentation ranges;
/// in IPv6 the same, plus unique-local (fc00::/7), link-local (fe80::/10), site-local
/// (fec0::/10), and IPv4 addresses carried inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`), judged as the
/// IPv4 address they reach.
pub fn refused_address(ip: std::net::IpAddr, allow_loopback: bool) -> Option<&'static str> {
    use std::net::{IpAddr, Ipv4Addr};
    let v4 = |a: Ipv4Addr| -> Option<&'static str> {
        let o = a.octets();
        if a.is_loopback() {
            return (!allow_loopback).then_some("a loopback address");
        }
        if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
            return Some("a private address");
        }
        if a.is_link_local() {
            return Some("a link-local address (the instance metadata's range)");
        }
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || o[0] == 0 {
            return Some("an unspecified, broadcast or multicast address");
        }
        if a.is_documentation() || o[0] >= 240 {
            return Some("a reserved address");
        }
        None
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            let seg = a.segments();
            if a.is_loopback() {
                return (!allow_loopback).then_some("a loopback address");
            }
            if let Some(inner) = a.to_ipv4_mapped() {
                return v4(inner);
            }
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // IPv4-compatible (deprecated) ::a.b.c.d, and NAT64's well-known prefix.
            if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(embedded(seg[6], seg[7])).or(match seg[0] {
                    0 => Some("an IPv4-compatible address"),
                    _ => None,
                });
            }
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
                return Some("a local-use NAT64 address (64:ff9b:1::/48)");
            }
            if a.is_unspecified() || a.is_multicast() {
                return Some("an unspecified or multicast address");
            }
            if (seg[0] & 0xfe00) == 0xfc00 {
                return Some("a unique-local address");
            }
            if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 {
                return Some("a link-local or site-local address");
            }
            if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                return Some("a reserved address");
            }
            None
        }
    }
}

/// A receiver's URL: `https://`, or `http://` to a loopback address where the stack allows
/// loopback receivers (the local stack only: in Lambda, loopback is the function itself).
/// An address written as an IP literal is judged by [`refused_address`]; a name is judged
/// by the addresses it resolves to, when the deliverer connects.
pub fn check_url(url: &str, allow_loopback: bool) -> Result<(), String> {
    let bad = |why: &str| Err(format!("url {url:?}: {why}"));
    if url.len() > 2048 {
        return bad("longer than 2048 characters");
    }
    let Ok(u) = url::Url::parse(url) else {
        return bad("not an absolute URL");
    };
    if !u.username().is_empty() || u.password().is_some() {
        return bad("credentials in the URL are not allowed; the signature authenticates us");
    }
    let host = match u.host() {
        Some(h) => h,
        None => return bad("no host"),
    };
    let ip = match host {
        url::Host::Ipv4(a) => Some(std::net::IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(std::net::IpAddr::V6(a)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost"))
                .then_some(std::net::IpAddr::from([127, 0, 0, 1]))
        }
    };
    let loopback = ip.is_some_and(|ip| {
        ip.is_loopback()
            || matches!(ip, std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()))
    });
    match u.scheme() {
        "https" => {}
        "http" if loopback && allow_loopback => {}
        "http" => {
            return bad(match allow_loopback {
                true => "must be https:// (http:// only to a loopback address)",
                false => "must be https://",
            });
        }
        _ => return bad("must be https://"),
    }
    if let Some(why) = ip.and_then(|ip| refused_address(ip, allow_loopback)) {
        return bad(why);
    }
    Ok(())
}

/// Whether a subscription is delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    Enabled,
    Disabled,
}

/// An endpoint and the events it wants. `account: None` is the stack operators' and receives
/// the events of every account (and alarms about no account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub url: String,
    pub events: Vec<EventType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub state: SubscriptionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    /// The first failed delivery since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Millis>,
    /// The SSM parameter holding its signing secrets.
    pub secret_param: String,
}

impl Subscription {
    /// Whether it wants `event` of a production or alarm of `account`.
    pub fn wants(&self, event: &EventType, account: Option<&str>) -> bool {
        self.state == SubscriptionState::Enabled
            && self.events.contains(event)
            && (self.account.is_none() || self.account.as_deref() == account)
    }
}

/// How long an endpoint may fail every delivery before it is disabled.
pub const DISABLE_AFTER_FAILING_MS: Millis = 5 * 86_400_000;
/// How long the previous secret still signs after a rotation.
pub const ROTATION_OVERLAP_MS: Millis = 24 * 3_600_000;

/// A subscription's signing secrets as kept in SSM: the current one, and during a rotation
/// the previous one until `previous_until` (both sign, so receivers can switch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<Millis>,
}

impl Secrets {
    /// A secret (`whsec_` + base64 of `key`, 24 to 64 random bytes from the caller).
    pub fn new(key: &[u8]) -> Self {
        Self {
            current: secret_string(key),
            previous: None,
            previous_until: None,
        }
    }

    /// Rotated to `key`: the current secret keeps signing beside the new one for `overlap`.
    pub fn rotated(&self, key: &[u8], now: Millis, overlap: Millis) -> Self {
        Self {
            current: secret_string(key),
            previous: Some(self.current.clone()),
            previous_until: Some(now + overlap),
        }
    }

    /// The stored form: the JSON document, or a bare `whsec_` secret (a parameter an
    /// operator wrote by hand, such as the publish webhook's).
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let raw = raw.trim();
        let s = if raw.starts_with("whsec_") {
            Self {
                current: raw.to_string(),
                previous: None,
                previous_until: None,
            }
        } else {
            serde_json::from_str(raw).map_err(|_| {
                SecretError("neither a whsec_ secret nor a Shepherd secret document".into())
            })?
        };
        secret_key(&s.current)?;
        Ok(s)
    }

    /// The secrets that sign at `now`, current first.
    pub fn signing(&self, now: Millis) -> Vec<&str> {
        let mut out = vec![self.current.as_str()];
        if let (Some(p), Some(until)) = (&self.previous, self.previous_until)
            && now < until
        {
            out.push(p);
        }
        out
    }
}

fn secret_string(key: &[u8]) -> String {
    format!("whsec_{}", B64.encode(key))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook secret: {0}")]
pub struct SecretError(String);

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| SecretError("does not start with whsec_".into()))?;
    let key = B64
        .decode(b64)
        .map_err(|_| SecretError("not base64 after whsec_".into()))?;
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError(format!(
            "{} bytes; 24 to 64 expected",
            key.len()
        )));
    }
    Ok(key)
}

/// The `webhook-signature` header value: one `v1,<base64 HMAC-SHA256 of
/// "<id>.<timestamp>.<body>">` per secret, space-separated.
pub fn signature(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SecretError> {
    let mut out = Vec::new();
    for s in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret_key(s)?)
            .map_err(|e| SecretError(e.to_string()))?;
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        out.push(format!("v1,{}", B64.encode(mac.finalize().into_bytes())));
    }
    Ok(out.join(" "))
}

/// One event to deliver to one subscription, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The `webhook-id`: the same for every attempt, for a replay of the stream record that
    /// made it, and for a resend (receivers deduplicate on it).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What it is about: a production id or an alarm id.
    pub subject: String,
    pub account: Option<String>,
    pub at: Millis,
    /// The JSON body sent (`type`, `timestamp`, `data`), fixed when the event is made so that
    /// every attempt signs the same bytes.
    pub body: String,
}

pub fn event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("msg_{}", hex::encode(&h.finalize()[..12]))
}

/// Whether an alarm's opening reaches people by e-mail (the stack's notification topic).
pub fn mails(a: &Alarm) -> bool {
    a.severity == Severity::Critical
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Being tried, or waiting for its next attempt.
    Pending,
    Delivered,
    /// Out of attempts, or its endpoint was disabled.
    Failed,
}

impl DeliveryState {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.into())).ok()
    }
}

/// One try at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Millis,
    /// The receiver's HTTP status; none when it could not be reached or did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The start of the answer (or the transport error), redacted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub excerpt: String,
}

/// An event for one subscription, its attempts and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub subscription: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub created_at: Millis,
    pub state: DeliveryState,
    /// Attempts started (an attempt in flight counts).
    pub attempts_started: u32,
    /// When the next attempt may start.
    pub due: Millis,
    /// Until when the attempt in flight holds the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Millis>,
    pub attempts: Vec<Attempt>,
    /// How many times an operator sent it again (resend, replay).
    #[serde(default)]
    pub resends: u32,
    /// The attempts started before the last resend: a resend starts the schedule again.
    #[serde(default)]
    pub round_start: u32,
    pub body: String,
}

impl Delivery {
    /// The attempt in flight or last made, counted from the last resend (1-based).
    pub fn attempt_in_round(&self) -> u32 {
        self.attempts_started.saturating_sub(self.round_start)
    }

    /// Sent again by an operator: pending from `due`, its schedule from the start. Only a
    /// delivery that is not pending can be.
    pub fn resent(&self, due: Millis) -> Option<Self> {
        if self.state == DeliveryState::Pending {
            return None;
        }
        let mut d = self.clone();
        d.state = DeliveryState::Pending;
        d.due = due;
        d.resends += 1;
        d.round_start = d.attempts_started;
        Some(d)
    }

    pub fn new(subscription: &str, e: Event, now: Millis) -> Self {
        Self {
            id: e.id,
            subscription: subscription.into(),
            kind: e.kind,
            subject: e.subject,
            account: e.account,
            created_at: now,
            state: DeliveryState::Pending,
            attempts_started: 0,
            due: now,
            lease_until: None,
            attempts: vec![],
            resends: 0,
            round_start: 0,
            body: e.body,
        }
    }
}

/// The schedule after the first attempt: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
/// (eight attempts in about 28 hours).
pub const RETRY_SCHEDULE_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER_SECS: u64 = 36_000;

/// What one attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// 410 Gone: the receiver wants no more; the subscription is disabled.
    Gone,
    /// Try again in this many seconds.
    RetryIn(u64),
    /// No attempts left.
    Exhausted,
    /// Not sent: the receiver's address is refused ([`refused_address`]); the
    /// subscription is disabled, as for a 410.
    Refused(String),
}

/// Parses a retry schedule (`5,300,1800`: seconds after each failed attempt); names the bad
/// entry. Empty: no retries.
pub fn parse_schedule(s: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_RETRY_AFTER_SECS * 10)
                .ok_or_else(|| format!("retry schedule entry {p:?} is not a number of seconds"))
        })
        .collect()
}

/// What to do after attempt number `attempt` (1-based, on `schedule`) answered `status` (none: no
/// answer) with `retry_after` seconds asked for (a 429 or 503 may say when to come back;
/// the later of it and the schedule is taken, up to [`MAX_RETRY_AFTER_SECS`]).
pub fn verdict(
    schedule: &[u64],
    attempt: u32,
    status: Option<u16>,
    retry_after: Option<u64>,
) -> Verdict {
    match status {
        Some(s) if (200..300).contains(&s) => return Verdict::Delivered,
        Some(410) => return Verdict::Gone,
        _ => {}
    }
    let Some(&wait) = schedule.get(attempt.saturating_sub(1) as usize) else {
        return Verdict::Exhausted;
    };
    Verdict::RetryIn(wait.max(retry_after.unwrap_or(0).min(MAX_RETRY_AFTER_SECS)))
}

/// `Retry-After` as seconds from `now`: delta-seconds or an HTTP date.
pub fn retry_after(value: &str, now: Millis) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(((ms - now).max(0) / 1000) as u64)
}

/// The longest excerpt of an answer kept in an attempt.
pub const EXCERPT_CHARS: usize = 256;

/// An answer's excerpt as recorded: redacted first (a secret cut in half would no longer be
/// recognised), then cut.
pub fn excerpt(answer: &str) -> String {
    let red = super::redact::redact(answer).text;
    red.chars().take(EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_panic_is_a_failure_event_like_any_stopped_phase() {
        let failed = Some(ProductionStatus::Failed);
        for kind in [AuditKind::PhaseFailed, AuditKind::StepUnexpectedError] {
            assert_eq!(
                EventType::of_audit(&kind, failed),
                Some(EventType::ProductionFailed)
            );
            assert_eq!(
                EventType::of_audit(&kind, Some(ProductionStatus::Paused)),
                Some(EventType::PhaseFailed)
            );
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_id_timestamp_and_body() {
        // The Standard Webhooks specification's example secret and message.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_until_the_overlap_ends() {
        let s = Secrets::new(&KEY);
        let r = s.rotated(&[9; 32], 1000, 500);
        assert_eq!(
            r.signing(1200),
            vec![r.current.as_str(), s.current.as_str()]
        );
        assert_eq!(r.signing(1500), vec![r.current.as_str()]);
        let two = signature(&r.signing(1200), "msg_1", 1, "{}").unwrap();
        assert_eq!(two.split(' ').count(), 2);
        assert!(two.split(' ').all(|p| p.starts_with("v1,")));
    }

    #[test]
    fn secrets_are_whsec_base64_of_enough_bytes() {
        assert!(secret_key(&Secrets::new(&KEY).current).is_ok());
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key(&format!("whsec_{}", B64.encode([1u8; 8]))).is_err());
    }

    #[test]
    fn the_schedule_retries_seven_times_then_gives_up() {
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 1, Some(204), None),
            Verdict::Delivered
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 1, Some(500), None),
            Verdict::RetryIn(5)
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 2, None, None),
            Verdict::RetryIn(300)
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 7, Some(502), None),
            Verdict::RetryIn(36_000)
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 8, Some(500), None),
            Verdict::Exhausted
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 3, Some(410), None),
            Verdict::Gone
        );
        // Retry-After wins when it asks for longer, within its cap.
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 1, Some(429), Some(30)),
            Verdict::RetryIn(30)
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 2, Some(429), Some(30)),
            Verdict::RetryIn(300)
        );
        assert_eq!(
            verdict(&RETRY_SCHEDULE_SECS, 1, Some(503), Some(1 << 40)),
            Verdict::RetryIn(36_000)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after(" 12 ", 0), Some(12));
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40_000),
            Some(60)
        );
        assert_eq!(retry_after("soon", 0), None);
    }

    #[test]
    fn urls_must_be_https_and_not_aim_inside() {
        assert!(check_url("https://hooks.example.com/in", false).is_ok());
        assert!(check_url("https://[2606:4700::1111]/in", false).is_ok());
        // Loopback receivers: the local stack's only.
        assert!(check_url("http://127.0.0.1:9000/in", true).is_ok());
        assert!(check_url("http://localhost:9000/in", true).is_ok());
        for bad in [
            "http://127.0.0.1:9000/in",
            "http://localhost:9000/in",
            "https://127.0.0.1/in",
            "https://[::1]/in",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} in a deployed stack");
        }
        for bad in [
            "http://hooks.example.com/in",
            "ftp://example.com",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://user:pw@example.com/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            // IPv4 inside IPv6: mapped, compatible, NAT64.
            "https://[::ffff:169.254.169.254]/latest/meta-data",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::169.254.169.254]/",
            "https://[64:ff9b::169.254.169.254]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[64:ff9b:1::1]/",
            "not a url",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_named_and_star_means_all() {
        let all = parse_events(&["*".into()]).unwrap();
        assert_eq!(all.len(), EventType::SUBSCRIBABLE.len());
        let err = parse_events(&["production.finished".into()]).unwrap_err();
        assert!(err.contains("production.finished"), "{err}");
        assert!(parse_events(&[]).is_err());
        assert!(parse_events(&["webhook.test".into()]).is_err());
    }

    #[test]
    fn excerpts_are_redacted_before_they_are_cut() {
        let key = format!(
            "{}sk-proj-{}",
            "x".repeat(EXCERPT_CHARS - 10),
            "A".repeat(40)
        );
        let e = excerpt(&key);
        assert!(!e.contains("sk-proj-AAAA"), "{e}");
        assert!(e.chars().count() <= EXCERPT_CHARS);
    }
}
