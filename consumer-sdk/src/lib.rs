//! The consumer SDK: what a municipality, GP or hospital system embeds to receive the
//! deliveries the hub routed to it, decoded into typed values with their envelope.
//!
//! Processing is at-least-once on the wire and once for the handler: the offset is
//! committed only after the handler succeeded, and deliveries already handled (same
//! delivery id, e.g. re-sent after a router crash) are dropped before the handler sees them.
//!
//! ```no_run
//! # async fn example() -> Result<(), dho_consumer::Error> {
//! use dho_consumer::{Subscriber, SubscriberConfig};
//! use dho_kafka::KafkaSettings;
//!
//! let settings = KafkaSettings::new("localhost:9092", "http://localhost:8081");
//! let subscriber = Subscriber::connect(SubscriberConfig::new(settings, "gp-sentrum")).await?;
//! subscriber
//!     .run(|received| async move {
//!         println!("{:?}", received.delivery.payload());
//!         Ok::<(), std::io::Error>(())
//!     }, std::future::pending())
//!     .await
//! # }
//! ```

mod dedup;
mod subscriber;

pub use dedup::RecentIds;
pub use subscriber::{Error, Received, Result, Subscriber, SubscriberConfig};
