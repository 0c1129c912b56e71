//! Outbound webhook deliveries over HTTP, and the stack's notification topic (SNS).

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Notifier, WebhookAnswer, WebhookSender};

/// How much of an answer is read.
const ANSWER_BYTES: usize = 4096;

/// POSTs with a timeout, following no redirect (a redirect is an answer like any other:
/// a receiver that moved updates its subscription).
pub struct HttpSender {
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
}

impl HttpSender {
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: std::sync::OnceLock::new(),
            timeout,
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(5).min(self.timeout))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("Shepherd-Webhooks/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("HTTP client builds")
        })
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Result<WebhookAnswer, String> {
        let mut req = self
            .http()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut res = req.send().await.map_err(describe)?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut bytes = Vec::new();
        while bytes.len() < ANSWER_BYTES {
            match res.chunk().await {
                Ok(Some(c)) => bytes.extend_from_slice(&c),
                // The status is the answer; a body cut short is still an answer.
                Ok(None) | Err(_) => break,
            }
        }
        bytes.truncate(ANSWER_BYTES);
        Ok(WebhookAnswer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            retry_after,
        })
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        // Without the URL: it may carry a token in its query.
        e.without_url().to_string()
    }
}

/// The stack's notification topic.
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn notify(&self, subject: &str, message: &str) -> Result<(), String> {
        // SNS subjects: at most 100 printable ASCII characters.
        let subject: String = subject
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(100)
            .collect();
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| super::sdk_error(&e))?;
        Ok(())
    }
}
