use std::net::SocketAddr;

use dho_devstack::TestBroker;
use dho_registry::{RegistryConfig, RunningRegistry};
use reqwest::Method;
use serde_json::Value;

/// A broker, a registry on a fresh topic, and an HTTP client. Keep it alive for the test.
pub struct Env {
    pub broker: TestBroker,
    pub topic: String,
    pub registry: RunningRegistry,
    pub http: reqwest::Client,
}

/// The test run's shared broker, or one of this test's own (see `TestBroker::get`). Fails
/// loudly if Apache Kafka is not installed: never skips.
pub async fn broker() -> TestBroker {
    tokio::task::spawn_blocking(TestBroker::get)
        .await
        .expect("broker start task")
        .unwrap_or_else(|e| panic!("the development broker is required for these tests: {e}"))
}

pub async fn registry(bootstrap_servers: &str, topic: &str) -> RunningRegistry {
    let config = RegistryConfig::new(bootstrap_servers)
        .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_topic(topic);
    dho_registry::start(config).await.expect("registry starts")
}

pub fn random_topic() -> String {
    format!("_schemas-{}", uuid::Uuid::new_v4())
}

impl Env {
    pub async fn start() -> Env {
        let broker = broker().await;
        let topic = random_topic();
        let registry = registry(&broker.bootstrap_servers(), &topic).await;
        Env {
            broker,
            topic,
            registry,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.registry.url(), path)
    }

    /// Sends a request shaped like the Java client's (Content-Type on every request) and
    /// returns status, JSON body and Content-Type.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        Reply::from(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Registers an Avro schema and returns its id (panics unless 200).
    pub async fn register(&self, subject: &str, schema: &str) -> u64 {
        let reply = self
            .post(
                &format!("/subjects/{subject}/versions"),
                serde_json::json!({ "schema": schema }),
            )
            .await;
        reply.ok()["id"].as_u64().expect("id in register response")
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            content_type,
        }
    }

    /// Asserts a 200 with the registry content type and returns the body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        assert_eq!(self.content_type, dho_registry::CONTENT_TYPE);
        &self.body
    }

    /// Asserts a Confluent error body with `error_code` and the matching HTTP status.
    #[track_caller]
    pub fn error(&self, error_code: u64) -> &str {
        let status = if error_code < 1000 {
            error_code
        } else {
            error_code / 100
        };
        assert_eq!(u64::from(self.status), status, "{self:?}");
        assert_eq!(
            self.body["error_code"].as_u64(),
            Some(error_code),
            "{self:?}"
        );
        self.body["message"]
            .as_str()
            .expect("message in error body")
    }
}

pub fn avro_record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Reading","namespace":"dho","fields":[{fields}]}}"#)
}

impl Env {
    /// Shuts the registry down and starts a new one on the same broker and topic.
    pub async fn restart(self) -> Env {
        let Env {
            broker,
            topic,
            registry: old,
            http,
        } = self;
        old.shutdown().await.expect("registry shuts down");
        let registry = registry(&broker.bootstrap_servers(), &topic).await;
        Env {
            broker,
            topic,
            registry,
            http,
        }
    }
}
