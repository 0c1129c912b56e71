//! Work that arrives by itself, on the local stack: a GitHub-signed `issues` delivery (the
//! webhook payload reference's shape, `events/github/`) starts a coding job through the
//! API's unauthenticated route; a repeat is deduped and audited; a bad signature stores
//! nothing; a malformed item is refused naming the field, kept, and alarmed when it
//! repeats; a re-submit starts a second production. A Standard Webhooks sender too.

use hmac::Mac as _;
use serde_json::{Value, json};
use shepherd_it::{TestStack, repo_root};

fn fixture() -> Value {
    let path = repo_root().join("events/github/issues-labeled.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `body` to `/events/{connector}` as GitHub does: no token, its headers.
async fn deliver(
    t: &TestStack,
    connector: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/events/{connector}", t.api_url()))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/8f2a3c1")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "501234567")
        .header("x-hub-signature-256", github_signature(secret, &bytes))
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn events(t: &TestStack, query: &str) -> Vec<Value> {
    let (st, page) = t
        .http("GET", &format!("/events{query}"), Some("viewer-acme"), None)
        .await;
    assert_eq!(st, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_issue_starts_a_coding_job_once_and_a_bad_one_is_refused() {
    let t = TestStack::start(&[]).await;
    t.allow("acme", &["acme/*"]).await;
    let spec = json!({"name": "widgets-issues", "account": "acme", "kind": "github",
        "pipeline": "coding", "events": ["issues"],
        "when": {"/action": "labeled", "/label/name": "shepherd"},
        "mapping": {"repository": "/repository/full_name", "task": "/issue/body",
                    "title": "/issue/title"}});
    let (st, e) = t
        .http(
            "POST",
            "/connectors",
            Some("operator-acme"),
            Some(spec.clone()),
        )
        .await;
    assert_eq!(st, 403, "operators do not create connectors: {e}");
    let (st, created) = t
        .http("POST", "/connectors", Some("admin-acme"), Some(spec))
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert_eq!(created["path"], format!("/events/{id}"));

    // A labelled issue starts a coding job, its input mapped from the payload.
    let issue = fixture();
    let delivery = uuid::Uuid::new_v4().to_string();
    let (st, first) = deliver(&t, &id, &secret, "issues", &delivery, &issue).await;
    assert_eq!(st, 202, "{first}");
    assert_eq!(first["outcome"], "started");
    let production = first["production"].as_str().unwrap().to_string();
    let (_, p) = t
        .http(
            "GET",
            &format!("/productions/{production}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(p["pipeline"], "coding", "{p}");
    assert_eq!(p["account"], "acme");

    // The same delivery again: 200, nothing started, visible in the audit.
    let (st, again) = deliver(&t, &id, &secret, "issues", &delivery, &issue).await;
    assert_eq!(
        (st, again["outcome"].as_str()),
        (200, Some("deduped")),
        "{again}"
    );
    assert_eq!(again["duplicate_of"], first["id"]);
    let (st, audit) = t
        .http(
            "GET",
            "/audit?type=event.deduped",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{audit}");
    assert!(audit["events"].to_string().contains(&delivery), "{audit}");

    // A wrong signature: 401, nothing stored.
    let before = events(&t, "").await.len();
    let (st, e) = deliver(&t, &id, "not-the-secret", "issues", "d-forged", &issue).await;
    assert_eq!(st, 401, "{e}");
    assert_eq!(events(&t, "").await.len(), before);

    // A ping is acknowledged and starts nothing; another label is ignored.
    let (st, ping) = deliver(
        &t,
        &id,
        &secret,
        "ping",
        "d-ping",
        &json!({"zen": "Keep it logically awesome."}),
    )
    .await;
    assert_eq!(
        (st, ping["outcome"].as_str()),
        (200, Some("ignored")),
        "{ping}"
    );
    let mut other = issue.clone();
    other["label"]["name"] = "bug".into();
    let (st, ignored) = deliver(&t, &id, &secret, "issues", "d-bug", &other).await;
    assert_eq!(
        (st, ignored["outcome"].as_str()),
        (200, Some("ignored")),
        "{ignored}"
    );

    // Malformed: refused naming the field, kept; three in a row raise the source's alarm.
    let mut bad = issue.clone();
    bad["issue"]["number"] = "seven".into();
    for i in 0..3 {
        let (st, e) = deliver(&t, &id, &secret, "issues", &format!("d-bad-{i}"), &bad).await;
        assert_eq!(st, 400, "{e}");
        assert!(
            e["message"].as_str().unwrap().starts_with("issue.number: "),
            "{e}"
        );
    }
    let failed = events(&t, "?outcome=failed").await;
    assert_eq!(failed.len(), 3);
    assert_eq!(
        failed[0]["payload"]["issue"]["number"], "seven",
        "kept for inspection"
    );
    let alarm = t
        .alarms()
        .await
        .into_iter()
        .find(|a| a.subject == format!("connector:{id}"))
        .expect("the connector's alarm");
    assert!(alarm.detail.contains("issue.number"), "{}", alarm.detail);
    let (_, c) = t
        .http(
            "GET",
            &format!("/connectors/{id}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(
        (
            c["stats"]["started"].as_u64(),
            c["stats"]["deduped"].as_u64(),
            c["stats"]["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(3)),
        "{c}"
    );

    // Re-submitting the first event clears its key and starts a second production.
    let first_id = first["id"].as_str().unwrap();
    let (st, _) = t
        .http(
            "POST",
            &format!("/events/{first_id}/resubmit"),
            Some("viewer-acme"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, re) = t
        .http(
            "POST",
            &format!("/events/{first_id}/resubmit"),
            Some("operator-acme"),
            Some(json!({"reason": "the first job was cancelled by mistake"})),
        )
        .await;
    assert_eq!((st, re["outcome"].as_str()), (200, Some("started")), "{re}");
    assert_eq!(re["resubmitted_from"], first["id"]);
    assert_ne!(re["production"].as_str().unwrap(), production);
    let (_, audit) = t
        .http(
            "GET",
            "/audit?type=event.resubmitted",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert!(
        audit["events"][0]["actor"]
            .as_str()
            .unwrap()
            .contains("operator-acme"),
        "{audit}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_webhooks_sender_is_verified_with_its_timestamp_and_rotated_signatures() {
    let t = TestStack::start(&[]).await;
    let spec = json!({"name": "briefs", "account": "acme", "kind": "standard",
        "events": ["brief.requested"],
        "mapping": {"title": "/data/title", "topic": "/data/topic", "scenes": {"value": 1}}});
    let (st, created) = t
        .http("POST", "/connectors", Some("admin-acme"), Some(spec))
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let old = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let send = |msg: &'static str, ts: i64, body: Value| {
        let bytes = serde_json::to_vec(&body).unwrap();
        // A sender rotating its secret signs with both (space-separated).
        let sig = format!(
            "{} {}",
            old.sign(msg, ts, &bytes).unwrap(),
            wh.sign(msg, ts, &bytes).unwrap()
        );
        reqwest::Client::new()
            .post(format!("{}/events/{id}", t.api_url()))
            .header("webhook-id", msg)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(bytes)
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = json!({"type": "brief.requested", "timestamp": "2026-12-07T10:00:00Z",
        "data": {"title": "Tides", "topic": "Why the sea moves"}});
    let res = send("msg_2Lh9KQ", now, body.clone()).await.unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["outcome"], "started", "{e}");
    // Signed ten minutes ago: outside the 5-minute tolerance, refused, nothing kept.
    let res = send("msg_2Lh9KR", now - 600, body).await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (_, page) = t.http("GET", "/events", Some("viewer-acme"), None).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    t.stop().await;
}
