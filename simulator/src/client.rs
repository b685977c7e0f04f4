//! A device platform's HTTP client for the ingest gateway.

use crate::fleet::{Outcome, SimEvent};

/// A device platform's HTTP client for the gateway: the native JSON endpoints, or (after
/// [`GatewayClient::fhir`]) one-entry FHIR batch Bundles as a VKP client sends them.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base_url: String,
    pub(crate) token: String,
    fhir: bool,
}

impl GatewayClient {
    /// `base_url` like `http://127.0.0.1:8090`; `token` the platform's bearer token.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            fhir: false,
        }
    }

    /// Sends FHIR Bundles (`POST /fhir/Bundle`) instead of the native JSON form.
    pub fn fhir(mut self) -> Self {
        self.fhir = true;
        self
    }

    pub async fn submit(&self, event: &SimEvent) -> Outcome {
        if self.fhir {
            return self.submit_fhir(event).await;
        }
        let (path, body) = match event {
            SimEvent::Measurement(m) => ("measurements", serde_json::to_value(m)),
            SimEvent::SelfReport(r) => ("selfreports", serde_json::to_value(r)),
        };
        let Ok(body) = body else {
            return Outcome::Rejected;
        };
        let response = self
            .http
            .post(format!("{}/{path}", self.base_url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await;
        match response.map(|r| r.status()) {
            Ok(s) if s.is_success() => Outcome::Accepted,
            Ok(s) if s.is_client_error() => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }
}

impl GatewayClient {
    async fn submit_fhir(&self, event: &SimEvent) -> Outcome {
        use dho_schemas::fhir;
        let resource = match event {
            SimEvent::Measurement(m) => fhir::observation_from_measurement(m),
            SimEvent::SelfReport(r) => fhir::questionnaire_response_from_self_report(r),
        };
        let bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{
                "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }],
        });
        let response = self
            .http
            .post(format!("{}/fhir/Bundle", self.base_url))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .json(&bundle)
            .send()
            .await;
        let Ok(response) = response else {
            return Outcome::Failed;
        };
        if !response.status().is_success() {
            return Outcome::Failed;
        }
        let Ok(answer) = response.json::<serde_json::Value>().await else {
            return Outcome::Failed;
        };
        let status = answer["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or_default();
        match status.as_bytes().first() {
            Some(b'2') => Outcome::Accepted,
            Some(b'4') => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }
}
