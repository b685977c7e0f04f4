//! A broker that does not answer is waited out, never a reason to stop: a service that
//! exits on an outage does nothing until someone restarts it, and fails no safer for it
//! (nothing is committed while it waits, so nothing is skipped). The router and the
//! consumer SDK share this.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::warn;

/// Whether `e` says the broker is unreachable, busy or electing, rather than that the
/// request itself was wrong.
pub fn is_transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            C::OperationTimedOut
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::Resolve
                | C::TimedOutQueue
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::PreferredLeaderNotAvailable
                | C::BrokerNotAvailable
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::KafkaStorageError
                | C::ReplicaNotAvailable
                | C::NotController
                // A restarted broker's partitions have a newer leader epoch than the
                // client's metadata until it is refreshed.
                | C::FencedLeaderEpoch
                | C::UnknownLeaderEpoch
                | C::OffsetNotAvailable
                | C::UnstableOffsetCommit
                | C::RebalanceInProgress
                | C::ThrottlingQuotaExceeded
                | C::Retry
        )
    )
}

/// The pause after a consumer's error event (see [`Outage::event_pause`]).
const EVENT_PAUSE: Duration = Duration::from_millis(20);

/// Retries, with a growing pause (100 ms to 5 s), while a dependency is unreachable. A
/// warning names what waits on first failure and every 30 s after (an outage of minutes
/// writes a handful of lines, not thousands).
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    pause: Duration,
    since: Option<Instant>,
    warnings: Throttle,
}

/// A repeated warning written now and then, not every time: the first time, then at most
/// once per interval, with the count of the times left unwritten in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unwritten: u64,
}

impl Throttle {
    pub fn every(every: Duration) -> Self {
        Self {
            every,
            last: None,
            unwritten: 0,
        }
    }

    /// Whether to write the warning now; if so, how many times it was left unwritten since
    /// it was last written.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|at| now - at < self.every) {
            self.unwritten += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unwritten))
    }
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            pause: Duration::from_millis(100),
            since: None,
            warnings: Throttle::every(Duration::from_secs(30)),
        }
    }

    /// Notes a failure: the pause to wait before trying again, or the error back if it is
    /// not an outage.
    pub fn failed(&mut self, e: KafkaError) -> Result<Duration, KafkaError> {
        if !is_transient(&e) {
            return Err(e);
        }
        Ok(self.pause_after(&e))
    }

    /// Notes a failure already known to be an outage (of the broker, or of another
    /// dependency such as the schema registry): the pause to wait before trying again.
    pub fn pause_after(&mut self, e: &dyn std::fmt::Display) -> Duration {
        self.warn(e);
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        pause
    }

    /// Notes an error event of a consumer during an outage: the pause before asking for the
    /// next event. Short and constant, unlike [`pause_after`](Self::pause_after): librdkafka
    /// queues an event per broker state change, ahead of the records fetched once the
    /// broker is back, so a growing pause per event would keep a recovered consumer
    /// draining stale errors for minutes; the pause only lets the loop yield.
    pub fn event_pause(&mut self, e: &dyn std::fmt::Display) -> Duration {
        self.warn(e);
        EVENT_PAUSE
    }

    fn warn(&mut self, e: &dyn std::fmt::Display) {
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.warnings.allow().is_some() {
            warn!(
                waiting_for = self.what,
                error = %e,
                seconds = since.elapsed().as_secs(),
                "a dependency does not answer; waiting, nothing is committed meanwhile"
            );
        }
    }

    /// `call` until it succeeds or fails for a reason other than an outage (blocking).
    pub fn wait_blocking<T>(
        what: &'static str,
        mut call: impl FnMut() -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let mut outage = Self::new(what);
        loop {
            match call() {
                Ok(value) => return Ok(value),
                Err(e) => std::thread::sleep(outage.failed(e)?),
            }
        }
    }
}

/// Commits `offsets` synchronously, waiting at most `within`. librdkafka's synchronous
/// commit has no timeout: with the broker gone it never returns, and a service told to stop
/// would hang until it is killed. The commit runs on a thread of its own, left behind if
/// it does not answer; the offsets not confirmed mean records read again and dropped as
/// repeats by their ids, never lost.
pub fn commit_within<C, X>(
    consumer: &std::sync::Arc<C>,
    offsets: rdkafka::TopicPartitionList,
    within: Duration,
) -> Result<(), String>
where
    C: rdkafka::consumer::Consumer<X> + Send + Sync + 'static,
    X: rdkafka::consumer::ConsumerContext + 'static,
{
    let consumer = consumer.clone();
    let (done, answer) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("final commit".into())
        .spawn(move || {
            let result = consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync);
            let _ = done.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("no thread for the commit: {e}"));
    }
    match answer.recv_timeout(within) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", within.as_secs())),
    }
}
