//! Outbound webhook deliveries over HTTP, and the stack's notification topic (SNS).

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Notifier, SendError, WebhookAnswer, WebhookSender};

/// How much of an answer is read.
const ANSWER_BYTES: usize = 4096;

/// POSTs with a timeout, following no redirect (a redirect is an answer like any other:
/// a receiver that moved updates its subscription), and connecting only to addresses a
/// webhook may reach: a receiver's name is resolved here, and an address the domain
/// refuses (private, link-local, metadata, ...) is never connected to, whatever the name
/// said when the subscription was made.
pub struct HttpSender {
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    allow_loopback: bool,
}

/// Resolves a receiver's name, keeping only the addresses a webhook may reach.
struct Guarded {
    allow_loopback: bool,
}

/// A name that resolved to refused addresses only.
#[derive(Debug)]
struct RefusedName(String);

impl std::fmt::Display for RefusedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedName {}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    match crate::domain::webhooks::refused_address(a.ip(), allow_loopback) {
                        Some(why) => {
                            refused = Some(format!("{host} resolves to {} ({why})", a.ip()));
                            false
                        }
                        None => true,
                    }
                })
                .collect();
            if kept.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(Box::new(RefusedName(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl HttpSender {
    pub fn new(timeout: Duration, allow_loopback: bool) -> Self {
        Self {
            http: std::sync::OnceLock::new(),
            timeout,
            allow_loopback,
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(5).min(self.timeout))
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(std::sync::Arc::new(Guarded {
                    allow_loopback: self.allow_loopback,
                }))
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
    ) -> Result<WebhookAnswer, SendError> {
        // An address written in the URL is not resolved: judge it here, before connecting.
        crate::domain::webhooks::check_url(url, self.allow_loopback).map_err(SendError::Refused)?;
        let mut req = self
            .http()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut res = req.send().await.map_err(|e| {
            // A name that resolved only to refused addresses is refused, not failed.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if let Some(r) = s.downcast_ref::<RefusedName>() {
                    return SendError::Refused(r.0.clone());
                }
                source = s.source();
            }
            SendError::Failed(describe(e))
        })?;
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

/// The most of a watched source's answer read (a feed, a page of issues).
const FETCH_BYTES: usize = 5 * 1024 * 1024;

/// Watchers poll through the same guarded client: only addresses a webhook may reach, no
/// redirects, a timeout.
#[async_trait]
impl crate::ports::Fetch for HttpSender {
    async fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<crate::ports::Fetched, String> {
        crate::domain::webhooks::check_url(url, self.allow_loopback)?;
        let mut req = self.http().get(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut res = req.send().await.map_err(describe)?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(c) = res.chunk().await.map_err(describe)? {
            body.extend_from_slice(&c);
            if body.len() > FETCH_BYTES {
                return Err(format!("the answer is over {FETCH_BYTES} bytes"));
            }
        }
        Ok(crate::ports::Fetched {
            status,
            headers,
            body,
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

#[cfg(test)]
mod tests {
    use reqwest::dns::Resolve as _;

    use super::*;

    fn name(host: &str) -> reqwest::dns::Name {
        host.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_not_connected_to() {
        // `localhost` resolves offline, to loopback: refused where loopback is not allowed.
        let err = match (Guarded {
            allow_loopback: false,
        })
        .resolve(name("localhost"))
        .await
        {
            Err(e) => e.to_string(),
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        };
        assert!(err.contains("localhost resolves to"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        let ok = (Guarded {
            allow_loopback: true,
        })
        .resolve(name("localhost"))
        .await
        .unwrap();
        assert!(ok.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_refused_literal_is_not_sent_and_says_why() {
        let sender = HttpSender::new(Duration::from_secs(1), false);
        for url in [
            "https://[::ffff:169.254.169.254]/latest/meta-data",
            "https://10.0.0.7/in",
            "http://127.0.0.1:9/in",
        ] {
            match sender.post(url, &[], "{}").await {
                Err(SendError::Refused(why)) => assert!(why.contains(url), "{why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        // A name that resolves to loopback, where loopback is not allowed: refused too.
        match sender.post("https://localhost:9/in", &[], "{}").await {
            Err(SendError::Refused(why)) => assert!(why.contains("loopback"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
