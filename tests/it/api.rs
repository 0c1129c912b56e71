//! The HTTP API as a client uses it: served by the local runtime on 127.0.0.1, callers from
//! the token file (the authorizer's part), the same operations as the CLI underneath.

use std::time::Duration;

use serde_json::{Value, json};
use shepherd::domain::ProductionStatus;
use shepherd_it::{Fault, FaultRule, TestStack, brief};

const SETTLE: Duration = Duration::from_secs(60);

fn brief_json(account: &str) -> Value {
    let mut b: Value = serde_json::from_str(&brief(1)).unwrap();
    b["account"] = account.into();
    b
}

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_is_created_approved_and_audited_over_http_with_roles_enforced() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;

    let (status, health) = t.http("GET", "/health", None, None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    // The contract is public, as served: the checked-in one.
    let (status, doc) = t.http("GET", "/openapi.json", None, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(&shepherd_api::openapi_json()).unwrap()
    );
    let (status, err) = t.http("GET", "/productions", None, None).await;
    assert_eq!((status, err["code"].as_str()), (401, Some("unauthorized")));
    let (status, err) = t.http("GET", "/productions", Some("forged"), None).await;
    assert_eq!(status, 401, "{err}");

    // Bad input: a clear 400 naming the problem, nothing created.
    let mut bad = brief_json("acme");
    bad["scenes"] = 0.into();
    let (status, err) = t
        .http("POST", "/productions", Some("operator-acme"), Some(bad))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(err["message"].as_str().unwrap().contains("scenes"), "{err}");
    let (status, _) = t
        .http(
            "POST",
            "/productions",
            Some("viewer-acme"),
            Some(brief_json("acme")),
        )
        .await;
    assert_eq!(status, 403, "viewers do not create");
    let (_, listed) = t
        .http("GET", "/productions", Some("viewer-acme"), None)
        .await;
    assert_eq!(listed["productions"], json!([]), "nothing half-created");

    let (status, created) = t
        .http(
            "POST",
            "/productions",
            Some("operator-acme"),
            Some(brief_json("acme")),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let p = t
        .wait_for(&id, SETTLE, |p| {
            p.status == ProductionStatus::AwaitingApproval
        })
        .await;

    let (_, approvals) = t.http("GET", "/approvals", Some("viewer-acme"), None).await;
    assert_eq!(approvals["approvals"][0]["production_id"], id.as_str());
    assert_eq!(approvals["approvals"][0]["approval"]["phase"], "script");
    let (_, waiting) = t
        .http(
            "GET",
            "/productions?status=awaiting_approval",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(waiting["productions"].as_array().unwrap().len(), 1);
    let (_, none) = t
        .http(
            "GET",
            "/productions?status=completed",
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(none["productions"], json!([]));
    let (status, err) = t
        .http("GET", "/productions?status=done", Some("viewer-acme"), None)
        .await;
    assert_eq!(status, 400, "{err}");

    // A viewer may not approve; an operator may not override; nothing changes.
    let approve = format!("/approvals/{id}/approve");
    let (status, err) = t.http("POST", &approve, Some("viewer-acme"), None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    let override_path = format!("/productions/{id}/actions/override");
    let skip = json!({"reason": "customer waiting", "skip_gate": true});
    let (status, _) = t
        .http(
            "POST",
            &override_path,
            Some("operator-acme"),
            Some(skip.clone()),
        )
        .await;
    assert_eq!(status, 403, "override is admin only");
    let (status, err) = t
        .http(
            "POST",
            &override_path,
            Some("admin-acme"),
            Some(json!({"skip_gate": true})),
        )
        .await;
    assert_eq!(status, 400, "an override needs a reason: {err}");
    // Unavailable now: 409 naming what is available.
    let (status, err) = t
        .http(
            "POST",
            &format!("/productions/{id}/actions/resume"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("conflict")),
        "{err}"
    );
    assert!(
        err["available"]
            .as_array()
            .unwrap()
            .contains(&json!("approve")),
        "{err}"
    );
    let (status, err) = t
        .http(
            "POST",
            &format!("/productions/{id}/actions/reject"),
            Some("operator-acme"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "reject needs feedback: {err}");
    assert_eq!(
        t.ops
            .get(&id, &TestStack::operator())
            .await
            .unwrap()
            .version,
        p.version,
        "nothing changed"
    );

    let (status, after) = t.http("POST", &approve, Some("operator-acme"), None).await;
    assert_eq!(status, 200, "{after}");
    let done = t.wait_settled(&id, SETTLE).await;
    assert_eq!(done.status, ProductionStatus::Completed);

    let (status, shown) = t
        .http(
            "GET",
            &format!("/productions/{id}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "completed");
    assert!(shown["outputs"]["publish"].is_object(), "{shown}");
    assert_eq!(shown["available_actions"], json!([]));
    assert!(shown["summary"].as_str().unwrap().starts_with("Completed"));

    let audit = t.audit_with(&id, "production.completed").await;
    let approved = audit
        .iter()
        .find(|r| r.event_type == "approval.approved")
        .unwrap();
    assert_eq!(approved.actor, "api:operator-acme");
    let (_, trail) = t
        .http(
            "GET",
            &format!("/productions/{id}/audit"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(kinds(&trail).len(), audit.len());
    let (_, by_trace) = t
        .http(
            "GET",
            &format!("/audit?trace={}", done.trace_id),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(kinds(&by_trace), kinds(&trail));
    let (_, by_type) = t
        .http(
            "GET",
            &format!(
                "/audit?type=approval.approved&since={}&until={}",
                approved.at,
                approved.at + 1
            ),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(by_type["events"].as_array().unwrap().len(), 1, "{by_type}");
    let (status, _) = t.http("GET", "/audit", Some("viewer-acme"), None).await;
    assert_eq!(status, 400, "an audit query names a trace or a type");
    let (status, err) = t.http("GET", "/nowhere", Some("viewer-acme"), None).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_production_is_not_found_and_its_alarms_and_dlq_messages_are_hidden() {
    let t = TestStack::start(&[]).await;
    // acme's production dead-letters with a secret in its error: an alarm and a DLQ message.
    t.provider.add_fault(
        FaultRule::new("chat", Fault::Status(503))
            .message("upstream said: Authorization: Bearer abcdefghijklmnopqrstu"),
    );
    let (status, created) = t
        .http(
            "POST",
            "/productions",
            Some("operator-acme"),
            Some(brief_json("acme")),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let p = t.wait_settled(&id, SETTLE).await;
    assert_eq!(p.status, ProductionStatus::DeadLettered);
    t.wait_depth("BriefDeadLetterQueue", 1, SETTLE).await;

    // globex sees none of it, and cannot tell it exists.
    let (status, err) = t
        .http(
            "GET",
            &format!("/productions/{id}"),
            Some("operator-globex"),
            None,
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    for path in [
        format!("/productions/{id}/actions/retry_phase"),
        format!("/productions/{id}/actions/cancel"),
    ] {
        let (status, _) = t.http("POST", &path, Some("admin-globex"), None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = t
        .http(
            "GET",
            &format!("/productions/{id}/audit"),
            Some("operator-globex"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, trace) = t
        .http(
            "GET",
            &format!("/audit?trace={}", p.trace_id),
            Some("operator-globex"),
            None,
        )
        .await;
    assert_eq!(trace["events"], json!([]));
    let (_, list) = t
        .http("GET", "/productions", Some("operator-globex"), None)
        .await;
    assert_eq!(list["productions"], json!([]));
    let (status, _) = t
        .http(
            "POST",
            "/productions",
            Some("operator-globex"),
            Some(brief_json("acme")),
        )
        .await;
    assert_eq!(status, 403, "a brief for another account");
    let (_, dlq) = t.http("GET", "/dlq", Some("admin-globex"), None).await;
    assert_eq!(dlq["messages"], json!([]));
    let (_, alarms) = t
        .http("GET", "/alarms", Some("operator-globex"), None)
        .await;
    assert!(
        alarms["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["subject"] != id.as_str()),
        "{alarms}"
    );
    assert_eq!(
        t.ops
            .get(&id, &TestStack::operator())
            .await
            .unwrap()
            .version,
        p.version,
        "nothing changed"
    );

    // acme sees its alarm and its message, handles the alarm, and resubmits the message.
    let (_, alarms) = t.http("GET", "/alarms", Some("viewer-acme"), None).await;
    let alarm = alarms["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["subject"] == id.as_str())
        .unwrap_or_else(|| panic!("acme's alarm: {alarms}"))
        .clone();
    assert_eq!(alarm["severity"], "critical");
    let alarm_path = format!(
        "/alarms/{}/ack",
        alarm["id"].as_str().unwrap().replace('#', "%23")
    );
    let (status, _) = t.http("POST", &alarm_path, Some("viewer-acme"), None).await;
    assert_eq!(status, 403);
    let (status, _) = t
        .http("POST", &alarm_path, Some("operator-globex"), None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = t
        .http("POST", &alarm_path, Some("operator-acme"), None)
        .await;
    assert_eq!(status, 200, "{body}");

    let (_, dlq) = t
        .http("GET", "/dlq?phase=brief", Some("viewer-acme"), None)
        .await;
    let msg = &dlq["messages"][0];
    assert_eq!(msg["production_id"], id.as_str(), "{dlq}");
    let message_id = msg["message_id"].as_str().unwrap().to_string();
    let (status, shown) = t
        .http(
            "GET",
            &format!("/dlq/messages/{message_id}"),
            Some("viewer-acme"),
            None,
        )
        .await;
    assert_eq!(
        (status, shown["production"]["status"].as_str()),
        (200, Some("dead_lettered"))
    );
    let (status, _) = t
        .http(
            "GET",
            &format!("/dlq/messages/{message_id}"),
            Some("admin-globex"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let discard = format!("/dlq/messages/{message_id}/discard");
    let (status, _) = t
        .http(
            "POST",
            &discard,
            Some("operator-acme"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 403, "discard is admin only");
    let (status, _) = t
        .http(
            "POST",
            &discard,
            Some("admin-globex"),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, 404, "and never another account's");
    let (status, _) = t
        .http(
            "POST",
            "/dlq/redrive",
            Some("operator-globex"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        t.depth("BriefDeadLetterQueue").await,
        1,
        "globex's redrive moved nothing of acme's"
    );

    t.provider.clear_faults();
    let (status, r) = t
        .http(
            "POST",
            &format!("/dlq/messages/{message_id}/resubmit"),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let done = t
        .wait_for(&id, SETTLE, |p| p.status == ProductionStatus::Completed)
        .await;
    assert_eq!(done.phase("brief").unwrap().attempt, 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_when_the_store_or_the_configuration_is_unreachable() {
    // A stack whose store cannot be reached: an SDK pointed at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let sdk = shepherd_local::sdk_config(&dead).await;
    let t = TestStack::start_idle().await;
    let config = t.config.clone();
    let ports = shepherd::wiring::AwsClients::new(&sdk).ports(
        &config.topology,
        None,
        std::time::Duration::from_secs(3),
    );
    let ops = shepherd::ops::Ops::new(ports, config, t.app.pipelines().clone());
    let auth = shepherd_api::Auth::Tokens(std::collections::HashMap::from([(
        "stack-viewer".to_string(),
        shepherd_api::TokenCaller {
            account: String::new(),
            role: shepherd::domain::Role::Viewer,
            stack: true,
            name: "viewer".into(),
        },
    )]));
    for (api, check) in [
        (shepherd_api::Api::new(ops, auth.clone()), "store"),
        (
            shepherd_api::Api::connecting(
                "/shepherd/nowhere/config".into(),
                Some(sdk.clone()),
                auth,
                {
                    let p = t.app.pipelines().clone();
                    move || p.clone()
                },
            ),
            "config",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, shepherd_api::router(api)).into_future());
        // Anyone: the status only.
        let res = reqwest::get(format!("http://{addr}/health")).await.unwrap();
        assert_eq!(res.status().as_u16(), 503);
        let body: Value = res.json().await.unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["request_id", "status"], "{body}");
        assert_eq!(body["status"], "degraded");
        // A verified caller: which check failed, as a code, never the store's own words.
        let res = reqwest::Client::new()
            .get(format!("http://{addr}/health"))
            .bearer_auth("stack-viewer")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 503);
        assert!(res.headers().contains_key("x-request-id"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["checks"][check], "unavailable", "{body}");
        let text = body.to_string();
        for leak in ["127.0.0.1", "dispatch failure", "arn:", "nowhere"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        server.abort();
    }
    t.stop().await;
}

/// Starts acme's production over HTTP as `token` and waits for its approval gate.
async fn awaiting_approval(t: &TestStack, token: &str) -> shepherd::domain::Production {
    let (status, created) = t
        .http(
            "POST",
            "/productions",
            Some(token),
            Some(brief_json("acme")),
        )
        .await;
    assert_eq!(status, 201, "{token}: {created}");
    let id = created["id"].as_str().unwrap().to_string();
    t.wait_for(&id, SETTLE, |p| {
        p.status == ProductionStatus::AwaitingApproval
    })
    .await
}

/// The README's authorization table walked over HTTP: each route for each role of an
/// account, an operator of another account, and the stack's operators. `y`: allowed (the
/// state may still refuse it: 409), `f`: 403, `n`: 404 (another account's things do not
/// exist), `b`: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_table_walked_over_http() {
    let t = TestStack::start(&[("ApprovalPhases", "script")]).await;
    // A stack operator starts for any account.
    let id = awaiting_approval(&t, "stack-operator").await.id;
    let who = [
        "viewer-acme",
        "operator-acme",
        "admin-acme",
        "operator-globex",
        "stack-viewer",
        "stack-operator",
        "stack-admin",
    ];
    let enable = json!({"enabled": true});
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", format!("/productions/{id}"), None, "yyynyyy"),
        (
            "POST",
            format!("/productions/{id}/actions/pause"),
            None,
            "fyynfyy",
        ),
        (
            "POST",
            format!("/productions/{id}/actions/resume"),
            None,
            "fyynfyy",
        ),
        ("GET", "/account?account=acme".into(), None, "yyynyyy"),
        ("GET", "/account".into(), None, "yyyybbb"),
        ("GET", "/productions".into(), None, "yyyybbb"),
        ("GET", "/integrations".into(), None, "yyyyyyy"),
        // What every account shares: the stack's operators alone.
        (
            "PATCH",
            "/integrations/primary".into(),
            Some(enable),
            "fffffyy",
        ),
        ("POST", "/dlq/redrive".into(), Some(json!({})), "fyyyfyy"),
        ("GET", "/alarms".into(), None, "yyyyyyy"),
    ];
    for (method, path, body, expected) in cases {
        for (token, want) in who.iter().zip(expected.chars()) {
            let (status, answer) = t.http(method, &path, Some(token), body.clone()).await;
            let ok = match want {
                'y' => matches!(status, 200 | 201 | 409),
                'f' => status == 403,
                'n' => status == 404,
                'b' => status == 400,
                _ => unreachable!(),
            };
            assert!(
                ok,
                "{method} {path} as {token}: {status} {answer}, expected {want}"
            );
            if status >= 400 {
                assert!(answer["code"].is_string(), "{method} {path}: {answer}");
            }
        }
    }
    let (_, err) = t
        .http(
            "PATCH",
            "/integrations/primary",
            Some("admin-acme"),
            Some(json!({"enabled": false, "reason": "x"})),
        )
        .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("stack's operators"),
        "{err}"
    );
    let (_, list) = t
        .http("GET", "/integrations", Some("viewer-acme"), None)
        .await;
    assert_eq!(
        list["integrations"][0]["health"]["disabled"],
        json!(false),
        "{list}"
    );
    t.stop().await;
}

async fn started(t: &TestStack) -> u32 {
    t.ops
        .account_usage("acme", &TestStack::operator())
        .await
        .unwrap()
        .started_this_month
}

async fn post_keyed(t: &TestStack, key: &str, brief: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/productions", t.api_url()))
        .bearer_auth("operator-acme")
        .header("Idempotency-Key", key)
        .json(brief)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// A client retrying a start (after a timeout, or racing itself) makes one production and
/// spends the allowance once; the same key with another brief is a 409 naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_repeated_or_raced_under_one_idempotency_key_makes_one_production() {
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let brief = brief_json("acme");
    let (status, first) = post_keyed(&t, "order-1", &brief).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post_keyed(&t, "order-1", &brief).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    assert_eq!(started(&t).await, 1, "the repeat spent nothing");

    let mut other = brief.clone();
    other["title"] = "Another film".into();
    let (status, err) = post_keyed(&t, "order-1", &other).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{err}"
    );

    // Eight clients racing with one key: one production, one allowance.
    let racing = (0..8).map(|_| post_keyed(&t, "order-2", &brief));
    let answers = futures::future::join_all(racing).await;
    let ids: std::collections::BTreeSet<_> =
        answers.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 201),
        "{answers:?}"
    );
    assert_eq!(started(&t).await, 2);

    let (status, err) = post_keyed(&t, "bad key", &brief).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_request")),
        "{err}"
    );
    let (_, listed) = t
        .http("GET", "/productions", Some("viewer-acme"), None)
        .await;
    assert_eq!(
        listed["productions"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    t.stop().await;
}

/// Edge inputs a client (or an attacker) may send: each is a JSON 400 naming the problem
/// (never the store's text, never a dropped connection), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_inputs_are_json_400s_and_change_nothing() {
    let t = TestStack::start(&[("ApprovalPhases", "brief")]).await;
    let p = awaiting_approval(&t, "operator-acme").await;
    let id = p.id.clone();
    let mut invisible = brief_json("acme");
    invisible["title"] = "\u{200B}".into();
    let long_id = "a".repeat(300);
    let cases: Vec<(&str, String, &str, Option<Value>, &str)> = vec![
        (
            "GET",
            "/audit?trace=".into(),
            "operator-acme",
            None,
            "trace",
        ),
        (
            "GET",
            "/audit?trace=a%20b".into(),
            "operator-acme",
            None,
            "trace",
        ),
        (
            "GET",
            "/audit?type=phase.failed&until=-9223372036854775808".into(),
            "operator-acme",
            None,
            "until",
        ),
        (
            "GET",
            "/audit?type=phase.failed&since=99999999999999999".into(),
            "operator-acme",
            None,
            "since",
        ),
        (
            "GET",
            "/audit?type=x&limit=0".into(),
            "operator-acme",
            None,
            "limit",
        ),
        (
            "GET",
            "/productions?limit=abc".into(),
            "operator-acme",
            None,
            "limit",
        ),
        (
            "GET",
            "/productions?limit=100000".into(),
            "operator-acme",
            None,
            "limit",
        ),
        (
            "GET",
            format!("/productions/{long_id}"),
            "operator-acme",
            None,
            "production id",
        ),
        (
            "POST",
            "/dlq/redrive".into(),
            "operator-acme",
            Some(json!({"older_than_secs": u64::MAX})),
            "older_than_secs",
        ),
        (
            "POST",
            "/productions".into(),
            "operator-acme",
            Some(invisible),
            "visible",
        ),
        (
            "POST",
            format!("/productions/{id}/actions/reject"),
            "operator-acme",
            Some(json!({"feedback": "\u{200B}\u{200D}"})),
            "feedback",
        ),
        (
            "PATCH",
            "/integrations/primary".into(),
            "stack-operator",
            Some(json!({"enabled": false, "reason": "\u{FEFF}"})),
            "reason",
        ),
    ];
    for (method, path, token, body, names) in cases {
        let (status, err) = t.http(method, &path, Some(token), body).await;
        assert_eq!(status, 400, "{method} {path}: {err}");
        assert_eq!(err["code"], "invalid_request", "{method} {path}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(names), "{method} {path}: {message}");
        assert!(
            !message.contains("ValidationException") && !message.contains("dynamodb"),
            "{message}"
        );
    }
    // A body over the limit is a JSON 413.
    let big = json!({"feedback": "x".repeat(3 << 20)});
    let (status, err) = t
        .http(
            "POST",
            &format!("/productions/{id}/actions/reject"),
            Some("operator-acme"),
            Some(big),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );

    // Nothing changed.
    let now = t.ops.get(&id, &TestStack::operator()).await.unwrap();
    assert_eq!((now.version, now.status), (p.version, p.status));
    let (_, list) = t
        .http("GET", "/productions", Some("viewer-acme"), None)
        .await;
    assert_eq!(list["productions"].as_array().unwrap().len(), 1, "{list}");
    let (_, ints) = t
        .http("GET", "/integrations", Some("viewer-acme"), None)
        .await;
    assert_eq!(
        ints["integrations"][0]["health"]["disabled"],
        json!(false),
        "{ints}"
    );
    t.stop().await;
}
