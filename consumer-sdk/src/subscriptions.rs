//! Subscription management through the ingest gateway: a care service registers, changes
//! and ends its own subscriptions with its bearer token.
//!
//! The gateway (`dho-ingest`) decides what a token may do: only care organisations manage
//! subscriptions, only for their own subscriber ids, and every id made through it is
//! `<subscriber_id>.<name>`. This client speaks that API exactly:
//!
//! | call | request |
//! | --- | --- |
//! | [`SubscriptionClient::create`] | `POST /subscriptions` |
//! | [`SubscriptionClient::update`], [`SubscriptionClient::end`] | `PUT /subscriptions/{id}` |
//! | [`SubscriptionClient::delete`] | `DELETE /subscriptions/{id}` with `{"patient": …}` |
//!
//! The patient is only ever in a request body, never in a URL, and neither the token nor
//! the patient number appears in `Debug` output, errors or logs.

use std::time::Duration;

use dho_schemas::model::*;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// What a care service asks for; the gateway fills in the organisation (from the token),
/// the id (if no [`name`](Self::name) is given) and `updated_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRequest {
    /// One of the token's own subscriber ids.
    pub subscriber_id: String,
    /// The id becomes `<subscriber_id>.<name>`; `None` lets the gateway make one.
    pub name: Option<String>,
    pub patient: PatientIdentifier,
    pub categories: Vec<DataCategory>,
    /// Codes (LOINC) to receive; empty for all codes of the categories.
    pub code_filter: Vec<String>,
    pub content_level: ContentLevel,
    pub active_from: Millis,
    pub active_until: Option<Millis>,
    pub purpose_of_use: String,
}

impl SubscriptionRequest {
    /// Full content of every category, from now on, for treatment (`TREAT`).
    pub fn new(subscriber_id: impl Into<String>, patient: PatientIdentifier) -> Self {
        Self {
            subscriber_id: subscriber_id.into(),
            name: None,
            patient,
            categories: vec![
                DataCategory::Measurement,
                DataCategory::SelfReport,
                DataCategory::Alert,
            ],
            code_filter: vec![],
            content_level: ContentLevel::Full,
            active_from: now_millis(),
            active_until: None,
            purpose_of_use: "TREAT".into(),
        }
    }

    /// Names the subscription: its id is `<subscriber_id>.<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn categories(mut self, categories: impl IntoIterator<Item = DataCategory>) -> Self {
        self.categories = categories.into_iter().collect();
        self
    }

    pub fn code_filter(mut self, codes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.code_filter = codes.into_iter().map(Into::into).collect();
        self
    }

    pub fn content_level(mut self, level: ContentLevel) -> Self {
        self.content_level = level;
        self
    }

    /// The id this request will have, if it is named.
    pub fn subscription_id(&self) -> Option<String> {
        self.name
            .as_ref()
            .map(|name| format!("{}.{name}", self.subscriber_id))
    }

    fn to_json(&self) -> Value {
        let mut body = json!({
            "subscriber_id": self.subscriber_id,
            "patient": self.patient,
            "categories": self.categories,
            "code_filter": self.code_filter,
            "content_level": self.content_level,
            "status": SubscriptionStatus::Active,
            "active_from": self.active_from,
            "active_until": self.active_until,
            "purpose_of_use": self.purpose_of_use,
        });
        if let Some(id) = self.subscription_id() {
            body["subscription_id"] = id.into();
        }
        body
    }
}

/// A typed client for the gateway's subscription endpoints, holding one care
/// organisation's bearer token. Cheap to clone.
#[derive(Clone)]
pub struct SubscriptionClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for SubscriptionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionClient")
            .field("gateway", &self.base.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl SubscriptionClient {
    /// A client for the gateway at `gateway_url` (e.g. `https://ingest.example.no`), with
    /// a 30 s timeout per request. An unusable URL is [`Error::Config`].
    pub fn new(gateway_url: &str, bearer_token: impl Into<String>) -> Result<Self> {
        Self::with_timeout(gateway_url, bearer_token, Duration::from_secs(30))
    }

    /// As [`new`](Self::new) with another per-request timeout.
    pub fn with_timeout(
        gateway_url: &str,
        bearer_token: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut base =
            Url::parse(gateway_url).map_err(|e| Error::Config(format!("gateway url: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(
                "gateway url: expected an http(s) base url".into(),
            ));
        }
        // Path segments are appended below; a trailing slash would leave an empty one.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        let token = bearer_token.into();
        if token.trim().is_empty() {
            return Err(Error::Config("the bearer token is empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(Self { base, token, http })
    }

    /// Registers a subscription (`POST /subscriptions`) and returns it as recorded, with
    /// its id, organisation and `updated_at`. Creating a named one again replaces it.
    pub async fn create(&self, request: &SubscriptionRequest) -> Result<Subscription> {
        let value = self.send(Method::POST, None, &request.to_json()).await?;
        recorded(value)
    }

    /// Replaces a subscription (`PUT /subscriptions/{id}`), typically one returned by
    /// [`create`](Self::create) with fields changed.
    pub async fn update(&self, subscription: &Subscription) -> Result<Subscription> {
        let body = serde_json::to_value(subscription)
            .map_err(|e| Error::Config(format!("subscription: {e}")))?;
        let value = self
            .send(Method::PUT, Some(&subscription.subscription_id), &body)
            .await?;
        recorded(value)
    }

    /// Ends a subscription: records it with status `ENDED` and `active_until` now, so the
    /// router stops delivering under it and the record stays for the audit trail.
    pub async fn end(&self, subscription: &Subscription) -> Result<Subscription> {
        let mut ended = subscription.clone();
        let now = now_millis();
        ended.status = SubscriptionStatus::Ended;
        ended.active_until = Some(ended.active_until.map_or(now, |until| until.min(now)));
        self.update(&ended).await
    }

    /// Deletes a subscription (`DELETE /subscriptions/{id}`, the patient in the body because
    /// it is part of the record's key). The router stops delivering under it.
    pub async fn delete(&self, subscription_id: &str, patient: &PatientIdentifier) -> Result<()> {
        self.send(
            Method::DELETE,
            Some(subscription_id),
            &json!({ "patient": patient }),
        )
        .await
        .map(drop)
    }

    async fn send(&self, method: Method, id: Option<&str>, body: &Value) -> Result<Value> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("subscriptions");
            if let Some(id) = id {
                segments.push(id);
            }
        }
        let response = self
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response.text().await;
        if status.is_success() {
            return serde_json::from_str(&text.map_err(transport)?).map_err(|e| {
                Error::GatewayAnswer {
                    detail: format!("the gateway answered {status} with unreadable JSON: {e}"),
                }
            });
        }
        // A refusal is typed by its status (and Retry-After) even if its body is cut off.
        let text = text.unwrap_or_default();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["error"].clone())
            .unwrap_or(Value::Null);
        let field = |key: &str| error[key].as_str().unwrap_or_default().to_string();
        Err(Error::Refused {
            status: status.as_u16(),
            reason: field("reason"),
            field: field("field"),
            detail: field("detail"),
            retry_after,
        })
    }
}

fn recorded(value: Value) -> Result<Subscription> {
    serde_json::from_value(value).map_err(|e| Error::GatewayAnswer {
        detail: format!("the gateway's answer is not a subscription: {e}"),
    })
}

/// A transport error, without its URL (which could name the subscription).
fn transport(e: reqwest::Error) -> Error {
    Error::GatewayUnreachable(e.without_url())
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    #[test]
    fn a_named_request_carries_its_id_and_no_organisation() {
        let patient = fixtures::patient(1);
        let request = SubscriptionRequest::new("bergen-home-care", patient.clone())
            .name("p1")
            .code_filter(["59408-5"])
            .content_level(ContentLevel::Minimal);
        let body = request.to_json();
        assert_eq!(body["subscription_id"], "bergen-home-care.p1");
        assert_eq!(body["content_level"], "MINIMAL");
        assert_eq!(body["status"], "ACTIVE");
        assert_eq!(body["patient"]["value"], patient.value.as_str());
        assert!(body.get("subscriber_org").is_none());
        let unnamed = SubscriptionRequest::new("bergen-home-care", patient).to_json();
        assert!(unnamed.get("subscription_id").is_none());
    }

    #[test]
    fn neither_token_nor_patient_shows_in_debug() {
        let token = "secret-token-0123456789";
        let client = SubscriptionClient::new("http://127.0.0.1:1/", token).unwrap();
        assert!(!format!("{client:?}").contains(token));
        let patient = fixtures::patient(1);
        let request = SubscriptionRequest::new("gp", patient.clone());
        assert!(!format!("{request:?}").contains(&patient.value));
    }

    #[test]
    fn bad_urls_and_empty_tokens_are_configuration_errors() {
        for (url, token) in [("not a url", "t"), ("ftp://x", "t"), ("http://x", " ")] {
            let e = SubscriptionClient::new(url, token).unwrap_err();
            assert_eq!(e.action(), crate::Action::FixConfiguration, "{url}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_retried() {
        // Port 1 on loopback: nothing listens there.
        let client = SubscriptionClient::new("http://127.0.0.1:1", "t").unwrap();
        let e = client
            .delete("gp.x", &fixtures::patient(1))
            .await
            .unwrap_err();
        assert_eq!(e.action(), crate::Action::Retry);
        assert!(!e.to_string().contains(&fixtures::patient(1).value));
    }

    /// A one-shot HTTP server: answers one request with `response`, returns the request.
    async fn stub(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![];
            let mut buf = [0u8; 4096];
            // Headers, then the body up to Content-Length.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_busy_gateway_is_retried_after_the_time_it_asks_for() {
        let (url, request) = stub(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-type: application/json\r\n\
             content-length: 62\r\nconnection: close\r\n\r\n\
             {\"error\":{\"field\":\"\",\"reason\":\"backpressure\",\"detail\":\"busy\"}}",
        )
        .await;
        let patient = fixtures::patient(2);
        let client = SubscriptionClient::new(&url, "stub-token").unwrap();
        let e = client.delete("gp.a b", &patient).await.unwrap_err();
        assert_eq!(e.action(), crate::Action::Retry);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.status(), Some(503));
        assert!(matches!(&e, Error::Refused { reason, .. } if reason == "backpressure"));
        // DELETE /subscriptions/{id} (escaped), the token as bearer, the patient in the
        // body and not in the URL.
        let request = request.await.unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("DELETE /subscriptions/gp.a%20b HTTP/1.1"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer stub-token")
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body, json!({"patient": patient}));
        assert!(!head.contains(&patient.value));
    }

    #[tokio::test]
    async fn a_created_subscription_is_read_from_the_answer() {
        let recorded = fixtures::subscription(&fixtures::patient(3), "gp", &fixtures::gp());
        let body = serde_json::to_string(&recorded).unwrap();
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, request) = stub(answer).await;
        let client = SubscriptionClient::new(&url, "stub-token").unwrap();
        let request_body = SubscriptionRequest::new("gp", fixtures::patient(3)).name("p3");
        assert_eq!(client.create(&request_body).await.unwrap(), recorded);
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /subscriptions HTTP/1.1"),
            "{request}"
        );
    }
}
