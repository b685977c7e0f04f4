//! The consumer SDK: what a municipality, GP or hospital system embeds to receive the
//! deliveries the hub routed to it, decoded into typed values with their envelope
//! (delivery id, patient, subscription, consent reference, source position).
//!
//! # Usage
//!
//! ```no_run
//! # async fn example() -> Result<(), dho_consumer::Error> {
//! use dho_consumer::{FailurePolicy, StartFrom, Subscriber, SubscriberConfig};
//! use dho_schemas::model::Payload;
//!
//! let config = SubscriberConfig::builder("kafka:9092", "http://registry:8081", "gp-sentrum")
//!     .librdkafka("security.protocol", "SASL_SSL") // TLS/SASL pass-through
//!     .start_from(StartFrom::Timestamp(1_767_225_600_000)) // backfill, new group only
//!     .failure_policy(FailurePolicy::Park) // or Stop (the default)
//!     .dedup_sqlite("/var/lib/gp/dho-dedup.db"); // default: ~/.local/state/dho/…
//! let subscriber = Subscriber::connect(config).await?;
//! subscriber
//!     .run(|received| async move {
//!         if let Some(Payload::Alert(alert)) = received.delivery.payload() {
//!             println!("{:?} alert for {}", alert.severity, alert.patient.log_tag());
//!         }
//!         Ok::<(), std::io::Error>(())
//!     }, std::future::pending())
//!     .await
//! # }
//! ```
//!
//! # Retractions and corrections
//!
//! A device platform may later send a reading it sent before as `entered-in-error` or
//! `amended`/`corrected`. The hub then sends every subscriber that received the original
//! a delivery of its own kind ([`Received::kind`]): [`DeliveryKind::Retraction`] (disregard
//! the earlier delivery, and any alert it raised) or [`DeliveryKind::Correction`] (its
//! values supersede the earlier ones), each naming the delivery it replaces
//! ([`Replaces`]). Its payload is the reading with that FHIR status, so [`ToFhir`] gives
//! the `Observation` with `status` `entered-in-error`, `amended` or `corrected`; a
//! subscriber no longer entitled to new values gets a correction as a reference only.
//!
//! # Sharing ended
//!
//! When a consent change (a deny, a withdrawn permit) ends this subscriber's deliveries of
//! a patient, the hub says so: one delivery of kind [`DeliveryKind::SharingEnded`], without
//! clinical content, with who recorded the change and when ([`SharingEnded`]), and the
//! categories no longer delivered. So an ended flow is never mistaken for a quiet patient.
//! Its `consent_id` is the consent that changed; [`ToFhir`] answers
//! [`NotConvertible::SharingEnded`]. A subscription the organisation ended itself gets no
//! such notice.
//!
//! `next()` and `commit()` are the same steps for applications that drive the loop
//! themselves. Errors say what to do next: [`Error::action`] is retry, fix the
//! configuration, or stop.
//!
//! # Subscriptions
//!
//! [`SubscriptionClient`] registers, changes, ends and deletes the service's own
//! subscriptions through the ingest gateway with the organisation's bearer token
//! (`POST /subscriptions`, `PUT|DELETE /subscriptions/{id}`, ids `<subscriber_id>.<name>`);
//! refusals are [`Error::Refused`], classified like every other error (401/403: fix the
//! configuration; 503: retry after [`Error::retry_after`]).
//!
//! ```no_run
//! # async fn example(patient: dho_schemas::PatientIdentifier) -> Result<(), dho_consumer::Error> {
//! use dho_consumer::{SubscriptionClient, SubscriptionRequest};
//!
//! let client = SubscriptionClient::new("https://ingest.example.no", "token from the vault")?;
//! let request = SubscriptionRequest::new("gp-sentrum", patient).name("copd-follow-up");
//! let subscription = client.create(&request).await?; // id "gp-sentrum.copd-follow-up"
//! client.end(&subscription).await?; // status ENDED: deliveries stop
//! # Ok(()) }
//! ```
//!
//! # FHIR R4
//!
//! [`Received::to_fhir`] (and [`ToFhir`] for a bare `Delivery`) gives a measurement as the
//! VKP-shaped `Observation` and a self-report as a `QuestionnaireResponse`, with the same
//! mapping the gateway reads; a MINIMAL delivery is [`NotConvertible::NoValues`] and an
//! alert [`NotConvertible::AlertNotYetConvertible`], never a made-up resource.
//!
//! # Once for the handler
//!
//! The hub delivers at least once: a router that crashed before committing its input
//! re-sends the batch with the *same delivery ids* at new offsets, and a subscriber that
//! crashed before committing reads the same offsets again. For each record the SDK
//!
//! 1. looks the delivery id up in the [`DedupStore`]; if present, commits the offset and
//!    drops the record (`dho_consumer_duplicates_dropped_total`);
//! 2. calls the handler, retrying with backoff; on the last failure applies the
//!    [`FailurePolicy`] (stop uncommitted, or park on `<topic>.dlq` and go on);
//! 3. after success (or parking) inserts the id into the store, durably for
//!    [`SqliteStore`];
//! 4. only then commits the offset.
//!
//! A crash between 3 and 4 is harmless: the record comes again and step 1 drops it. The
//! **remaining window is between the handler's effect and step 3**: if the process dies
//! after the handler's effect became durable but before the store's insert did, the
//! handler sees that delivery once more after the restart.
//!
//! **The default store is durable**: a [`SqliteStore`] in `dho-dedup-<group id>.sqlite`
//! under [`default_state_dir`] (`$DHO_STATE_DIR`, else `$XDG_STATE_HOME/dho`, else
//! `~/.local/state/dho`; in a container, mount a volume there or set the path with
//! [`SubscriberConfig::dedup_sqlite`]). It forgets ids handled longer ago than the
//! delivery topic's retention (read from the broker at connect; never, for a topic kept
//! forever), since older deliveries can no longer be read again; `Dedup::Sqlite { keep }`
//! sets another window. The in-memory store ([`SubscriberConfig::dedup_in_memory`])
//! forgets everything on restart, so it only covers router replays while the subscriber
//! keeps running.
//!
//! **Recommended: close the window in the application.** Record the delivery id in the
//! same transaction as the effect, with a unique constraint: then effect and id commit
//! together or not at all. With SQLite, put the store's table in the application's own
//! database and call [`SqliteStore::mark_handled`] inside the transaction; open the
//! [`SqliteStore`] on the same file so step 1 sees the ids the application recorded
//! (`examples/home_care_journal.rs` does exactly this). With another database, keep a
//! `delivery_id` unique column next to the effect and implement [`DedupStore`] over it.
//!
//! # Metrics
//!
//! Names are in [`metrics`]: deliveries handled, handler duration and
//! failures, duplicates dropped, parked deliveries, the end-to-end latency from the
//! gateway's acknowledgement to the hand-over (`dho_consumer_end_to_end_latency_seconds`),
//! and consumer lag and broker round-trip time from librdkafka's statistics. Install any
//! `metrics` recorder to export them (latencies are histograms: give the exporter buckets,
//! for example `dho_telemetry::server::recorder_builder`).

mod config;
mod dedup;
mod error;
mod events;
pub mod fhir;
pub mod metrics;
mod subscriber;
pub mod subscriptions;

pub use config::{Dedup, FailurePolicy, StartFrom, SubscriberConfig, default_state_dir};
pub use dedup::{DedupStore, MemoryStore, RecentIds, SqliteStore};
pub use dho_schemas::model::{DeliveryKind, Replaces, SharingEnded};
pub use error::{Action, Error, Result};
pub use fhir::{NotConvertible, ToFhir};
/// The SQLite binding [`SqliteStore`] uses, so applications share its version.
pub use rusqlite;
pub use subscriber::{Received, Subscriber};
pub use subscriptions::{SubscriptionClient, SubscriptionRequest};

/// Headers of a parked record on the `.dlq` topic: the hub's dead-letter headers plus the
/// delivery id and the number of handler attempts.
pub mod headers {
    pub use dho_schemas::topics::headers::*;
    /// The parked delivery's id (absent for an undecodable record).
    pub const DELIVERY_ID: &str = "dho.delivery.id";
    /// How many times the handler was tried (0 for an undecodable record).
    pub const ATTEMPTS: &str = "dho.deadletter.attempts";
    /// The `COMPONENT` value of records the SDK parked.
    pub const COMPONENT_CONSUMER: &str = "consumer-sdk";
}
