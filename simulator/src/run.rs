//! Offering a fixed rate of submissions for a fixed duration to a [`Sink`], and counting
//! what became of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dho_publisher::Publisher;
use dho_schemas::model::now_millis;

use crate::client::GatewayClient;
use crate::fleet::{Fleet, Outcome, SimEvent};

/// Where the simulator publishes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// The publishing library, straight to Kafka.
    Library(Publisher),
    /// The ingest gateway over HTTP.
    Gateway(GatewayClient),
}

impl Sink {
    pub async fn submit(&self, event: &SimEvent) -> Outcome {
        match self {
            Sink::Library(p) => {
                let result = match event {
                    SimEvent::Measurement(m) => p.publish_measurement(m).await,
                    SimEvent::SelfReport(r) => p.publish_self_report(r).await,
                };
                match result {
                    Ok(_) => Outcome::Accepted,
                    Err(dho_publisher::Error::Invalid(_)) => Outcome::Rejected,
                    Err(_) => Outcome::Failed,
                }
            }
            Sink::Gateway(client) => client.submit(event).await,
        }
    }
}

/// Totals of a [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Submissions made.
    pub offered: u64,
    /// Of them, broken on purpose.
    pub malformed: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Malformed submissions that were accepted (must stay 0).
    pub malformed_accepted: u64,
    /// Ticks that found every worker busy (the offered rate was not met).
    pub late_ticks: u64,
}

/// Offers `rate` submissions per second for `duration`, at most `concurrency` at once.
pub async fn run(
    mut fleet: Fleet,
    sink: Sink,
    rate: f64,
    duration: Duration,
    concurrency: usize,
) -> RunStats {
    let counters: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut offered, mut malformed, mut late_ticks) = (0, 0, 0);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let submission = fleet.next_submission(now_millis());
        offered += 1;
        malformed += u64::from(submission.malformed);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                late_ticks += 1;
                permits.clone().acquire_owned().await.expect("never closed")
            }
        };
        let (sink, counters) = (sink.clone(), counters.clone());
        tasks.spawn(async move {
            let outcome = sink.submit(&submission.event).await;
            let slot = match outcome {
                Outcome::Accepted if submission.malformed => 3,
                Outcome::Accepted => 0,
                Outcome::Rejected => 1,
                Outcome::Failed => 2,
            };
            counters[slot].fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    RunStats {
        offered,
        malformed,
        accepted: get(0) + get(3),
        rejected: get(1),
        failed: get(2),
        malformed_accepted: get(3),
        late_ticks,
    }
}
