//! Shepherd's OpenAI client against answers in the shapes OpenAI's API reference defines
//! (`tests/fixtures/openai`, see its README), served as a provider would serve them; and
//! the local fake provider checked against the same shapes, so neither the client nor the
//! fake is tested only against the other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use shepherd::adapters::memory::Memory;
use shepherd::adapters::providers::ProviderClient;
use shepherd::domain::{ErrorClass, ErrorCode};
use shepherd::ports::{ChatMessage, ChatRequest, ImageRequest, Provider, SpeechRequest};
use shepherd_local::provider::ProviderServer;

const NOW: i64 = 1_800_000_000_000;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

#[derive(Clone, Default)]
struct Served {
    /// By path.
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    /// request bodies received, by path
    asked: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn serve(State(s): State<Served>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.asked.lock().unwrap().push((path.clone(), json));
    let Some((status, headers, body)) = s.answers.lock().unwrap().get(&path).cloned() else {
        return (StatusCode::NOT_FOUND, "no fixture").into_response();
    };
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (StatusCode::from_u16(status).unwrap(), h, body).into_response()
}

/// A server answering fixtures, and a client of it.
struct Provider1 {
    served: Served,
    origin: String,
    client: ProviderClient,
}

impl Provider1 {
    async fn start() -> Self {
        let served = Served::default();
        let app = Router::new().fallback(serve).with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mem = Arc::new(Memory::new(NOW));
        mem.set_param("/fixture/key", "sk-fixture");
        let client = ProviderClient::new(
            mem.clone(),
            mem,
            format!("{origin}/v1"),
            "/fixture/key",
            Duration::from_secs(5),
        );
        Self {
            served,
            origin,
            client,
        }
    }

    fn answer(&self, path: &str, status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.served
            .answers
            .lock()
            .unwrap()
            .insert(path.into(), (status, headers, body.into()));
    }

    fn json(&self, path: &str, status: u16, headers: &[(&str, &str)], name: &str) {
        let body = fixture(name).replace("{origin}", &self.origin);
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.answer(path, status, &h, body);
    }

    fn asked(&self, path: &str) -> Vec<Value> {
        self.served
            .asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn image(model: &str) -> ImageRequest {
    ImageRequest {
        model: model.into(),
        prompt: "the tide".into(),
        n: 1,
        size: "1024x1024".into(),
        output_format: Some("png".into()),
    }
}

fn chat() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage::user("Answer with JSON.")],
        response_format: Some(json!({"type": "json_object"})),
    }
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test]
async fn a_gpt_image_answer_is_base64_and_its_request_has_no_response_format() {
    let p = Provider1::start().await;
    p.json("/v1/images/generations", 200, &[], "images-gpt-image.json");
    let img = p.client.image(&image("gpt-image-1"), "k1").await.unwrap();
    assert!(img.bytes.starts_with(PNG), "decoded PNG bytes");
    assert_eq!(img.content_type, "image/png");
    let asked = &p.asked("/v1/images/generations")[0];
    assert!(
        asked.get("response_format").is_none(),
        "GPT image models refuse response_format: {asked}"
    );
    assert_eq!(asked["output_format"], "png");
}

#[tokio::test]
async fn dall_e_is_asked_for_base64_and_a_url_answer_is_downloaded_in_the_call() {
    let p = Provider1::start().await;
    p.json(
        "/v1/images/generations",
        200,
        &[],
        "images-dall-e-3-url.json",
    );
    let png = shepherd_local::provider::png(b"scene");
    p.answer(
        "/files/scene.png",
        200,
        &[("content-type", "image/png")],
        png.clone(),
    );
    let img = p.client.image(&image("dall-e-3"), "k2").await.unwrap();
    assert_eq!(img.bytes, png);
    assert!(img.revised_prompt.unwrap().contains("watercolour"));
    let asked = &p.asked("/v1/images/generations")[0];
    assert_eq!(asked["response_format"], "b64_json");
    assert!(
        asked.get("output_format").is_none(),
        "DALL-E takes no output_format"
    );
}

#[tokio::test]
async fn a_chat_answer_is_its_content_and_a_refusal_is_a_content_refusal() {
    let p = Provider1::start().await;
    p.json("/v1/chat/completions", 200, &[], "chat-completion.json");
    let text = p.client.chat(&chat(), "k3").await.unwrap();
    assert!(text.starts_with("{\"title\""), "{text}");
    p.json("/v1/chat/completions", 200, &[], "chat-refusal.json");
    let e = p.client.chat(&chat(), "k4").await.unwrap_err();
    assert_eq!(
        (e.code, e.class),
        (ErrorCode::ContentRefused, ErrorClass::Permanent)
    );
    assert!(e.detail.contains("can't assist"));
}

#[tokio::test]
async fn speech_is_audio_bytes_of_the_answered_media_type() {
    let p = Provider1::start().await;
    p.answer(
        "/v1/audio/speech",
        200,
        &[("content-type", "audio/mpeg")],
        b"ID3\x04audio".to_vec(),
    );
    let req = SpeechRequest {
        model: "gpt-4o-mini-tts".into(),
        input: "The tide turns.".into(),
        voice: "nova".into(),
        response_format: "mp3".into(),
    };
    let audio = p.client.speech(&req, "k5").await.unwrap();
    assert_eq!(
        (audio.bytes.as_slice(), audio.content_type.as_str()),
        (&b"ID3\x04audio"[..], "audio/mpeg")
    );
}

#[tokio::test]
async fn documented_errors_are_classified_as_the_reference_says() {
    let p = Provider1::start().await;
    let path = "/v1/chat/completions";
    p.json(path, 429, &[("retry-after", "20")], "error-rate-limit.json");
    let e = p.client.chat(&chat(), "k").await.unwrap_err();
    assert_eq!(
        (e.code.clone(), e.class),
        (ErrorCode::ProviderRateLimited, ErrorClass::Retryable)
    );
    assert_eq!(e.retry_at, Some(NOW + 20_000), "Retry-After in seconds");
    assert_eq!(e.provider_status, Some(429));

    p.json(
        path,
        429,
        &[("x-ratelimit-reset-requests", "6m0s")],
        "error-rate-limit.json",
    );
    let e = p.client.chat(&chat(), "k").await.unwrap_err();
    assert_eq!(
        e.retry_at,
        Some(NOW + 360_000),
        "the reset header when Retry-After is absent"
    );

    p.json(path, 429, &[], "error-insufficient-quota.json");
    let e = p.client.chat(&chat(), "k").await.unwrap_err();
    assert_eq!(
        (e.code.clone(), e.class),
        (ErrorCode::ProviderQuotaExhausted, ErrorClass::Permanent),
        "no wait cures an empty quota: {e:?}"
    );
    assert!(
        e.detail.contains("/fixture/key"),
        "names the key's parameter: {}",
        e.detail
    );
    assert!(!e.detail.contains("sk-fixture"), "never the key");

    p.json(
        "/v1/images/generations",
        400,
        &[],
        "error-moderation-blocked.json",
    );
    let e = p
        .client
        .image(&image("gpt-image-1"), "k")
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.clone(), e.class),
        (ErrorCode::ContentRefused, ErrorClass::Permanent)
    );

    p.json(path, 500, &[], "error-server.json");
    let e = p.client.chat(&chat(), "k").await.unwrap_err();
    assert_eq!(
        (e.code.clone(), e.class),
        (ErrorCode::ProviderUnavailable, ErrorClass::Retryable)
    );

    p.json(path, 401, &[], "error-invalid-key.json");
    let before = p.asked(path).len();
    let e = p.client.chat(&chat(), "k").await.unwrap_err();
    assert_eq!(
        (e.code.clone(), e.class),
        (ErrorCode::ProviderAuth, ErrorClass::Permanent)
    );
    assert_eq!(
        p.asked(path).len() - before,
        2,
        "the key is re-read once, then refused"
    );
}

#[tokio::test]
async fn an_image_is_moderated_as_a_data_url_and_every_categorys_score_is_read() {
    let p = Provider1::start().await;
    p.json("/v1/moderations", 200, &[], "moderation-image.json");
    let url = "data:image/png;base64,iVBORw0KGgo=";
    let m = p
        .client
        .moderate("omni-moderation-latest", url, "k1")
        .await
        .unwrap();
    assert_eq!(m.model, "omni-moderation-2024-09-26");
    assert_eq!(m.scores.len(), 13, "{:?}", m.scores);
    assert_eq!(m.scores["violence"], 0.8731);
    assert_eq!(m.applied["violence"], ["image"]);
    assert!(m.applied["hate"].is_empty());
    let asked = p.asked("/v1/moderations");
    assert_eq!(
        asked[0],
        json!({"model": "omni-moderation-latest",
               "input": [{"type": "image_url", "image_url": {"url": url}}]})
    );
    // A provider that answers no result is a bad answer, not an image without flags.
    p.answer(
        "/v1/moderations",
        200,
        &[("content-type", "application/json")],
        r#"{"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": []}"#,
    );
    let err = p
        .client
        .moderate("omni-moderation-latest", url, "k2")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ProviderBadResponse);
}

/// The keys of every object in `v`, by path (`data[]`, `choices[].message`, ...).
fn shape(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                out.insert(here.clone());
                shape(x, &here, out);
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                shape(first, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    shape(v, "", &mut out);
    out
}

#[tokio::test]
async fn the_fake_provider_answers_in_the_reference_shapes() {
    let fake = ProviderServer::start("127.0.0.1:0".parse().unwrap(), "sk-local")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}/{path}", fake.base_url()))
            .bearer_auth("sk-local")
            .json(&body)
            .send()
    };
    let fixture_keys = |name: &str| keys(&serde_json::from_str(&fixture(name)).unwrap());

    let chat: Value = post(
        "chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Answer in JSON"}],
               "response_format": {"type": "json_object"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let want = fixture_keys("chat-refusal.json");
    assert!(
        want.is_subset(&keys(&chat)),
        "missing: {:?}",
        want.difference(&keys(&chat)).collect::<Vec<_>>()
    );

    let img: Value = post(
        "images/generations",
        json!({"model": "gpt-image-1", "prompt": "tide"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let want = fixture_keys("images-gpt-image.json");
    assert_eq!(
        keys(&img),
        want,
        "a GPT image answer: b64_json, format, usage"
    );
    let refused = post(
        "images/generations",
        json!({"model": "gpt-image-1", "prompt": "tide", "response_format": "url"}),
    )
    .await
    .unwrap();
    assert_eq!(
        refused.status(),
        400,
        "GPT image models refuse response_format"
    );
    let err: Value = refused.json().await.unwrap();
    assert_eq!(keys(&err), fixture_keys("error-server.json"));
    assert_eq!(err["error"]["param"], "response_format");

    let dalle: Value = post(
        "images/generations",
        json!({"model": "dall-e-3", "prompt": "tide"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(keys(&dalle), fixture_keys("images-dall-e-3-url.json"));
    let url = dalle["data"][0]["url"].as_str().unwrap();
    let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert!(bytes.starts_with(PNG), "the URL serves the image");

    let png = base64::engine::general_purpose::STANDARD.encode(PNG);
    let moderated: Value = post(
        "moderations",
        json!({"model": "omni-moderation-latest",
               "input": [{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(keys(&moderated), fixture_keys("moderation-image.json"));
    let not_an_image = post(
        "moderations",
        json!({"model": "omni-moderation-latest",
               "input": [{"type": "image_url", "image_url": {"url": "not a url"}}]}),
    )
    .await
    .unwrap();
    assert_eq!(not_an_image.status(), 400);

    let speech = post(
        "audio/speech",
        json!({"model": "gpt-4o-mini-tts", "input": "hello", "voice": "nova", "response_format": "wav"}),
    )
    .await
    .unwrap();
    assert_eq!(speech.headers()["content-type"], "audio/wav");
    let unknown_voice = post(
        "audio/speech",
        json!({"model": "gpt-4o-mini-tts", "input": "hello", "voice": "robot"}),
    )
    .await
    .unwrap();
    assert_eq!(unknown_voice.status(), 400);

    fake.add_fault(shepherd_local::provider::FaultRule::new(
        "chat",
        shepherd_local::provider::Fault::RateLimit { reset_secs: 7 },
    ));
    let limited = post(
        "chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(limited.headers()["x-ratelimit-reset-requests"], "7s");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(keys(&body), fixture_keys("error-rate-limit.json"));
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}
