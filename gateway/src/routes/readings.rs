//! Publishing a reading (a measurement or a self-report, from a Bundle entry or the native
//! form) at most once: a re-send of one published recently gets the original's
//! acknowledgement instead (see [`crate::resent`]).

use std::time::Instant;

use dho_publisher::Receipt;
use dho_schemas::fhir::Ingested;
use dho_schemas::model::*;

use crate::Gateway;
use crate::events::PublishAnswered;
use crate::resent::Claim;
use dho_telemetry::InternalEvent;

impl Gateway {
    pub(super) async fn publish(&self, event: &Ingested) -> dho_publisher::Result<Receipt> {
        let started = Instant::now();
        let result = match event {
            Ingested::Measurement(m) => self.inner.publisher.publish_measurement(m).await,
            Ingested::SelfReport(r) => self.inner.publisher.publish_self_report(r).await,
        };
        PublishAnswered {
            elapsed: started.elapsed(),
        }
        .emit();
        result
    }

    /// Publishes `event` from `platform`, unless it is a re-send of a reading published
    /// recently (see `resent.rs`): then the original's acknowledgement, without publishing
    /// again. The publishing runs in a task of its own, so an answer the client stopped
    /// waiting for (and a handler dropped with it) still leaves the acknowledged reading
    /// in the memory for the re-send that follows.
    pub(super) async fn publish_once(
        &self,
        event: &Ingested,
        platform: &OrganisationIdentifier,
    ) -> dho_publisher::Result<Receipt> {
        loop {
            match self.inner.recent.claim(event, platform) {
                None => return self.publish(event).await,
                Some(Claim::Answered(receipt)) => {
                    tracing::debug!("a re-sent reading answered with the original acknowledgement");
                    return Ok(receipt);
                }
                Some(Claim::Wait(mut in_flight)) => {
                    // Ends when the original's publishing is over, whichever way.
                    let _ = in_flight.changed().await;
                }
                Some(Claim::Publish(ticket)) => {
                    let (gw, event) = (self.clone(), event.clone());
                    let task = tokio::spawn(async move {
                        let result = gw.publish(&event).await;
                        ticket.finish(&result);
                        result
                    });
                    return match task.await {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(dho_publisher::Error::NotAcknowledged(
                            rdkafka::error::KafkaError::Canceled,
                        )),
                    };
                }
            }
        }
    }
}

pub(super) fn data_controller(event: &Ingested) -> &OrganisationIdentifier {
    match event {
        Ingested::Measurement(m) => &m.data_controller,
        Ingested::SelfReport(r) => &r.data_controller,
    }
}

/// Whose reading or self-report it is.
pub(super) fn patient_of(event: &Ingested) -> &PatientIdentifier {
    match event {
        Ingested::Measurement(m) => &m.patient,
        Ingested::SelfReport(r) => &r.patient,
    }
}
