use rdkafka::error::KafkaError;

/// What the caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// A dependency (broker, registry, the handler's own downstream) is unavailable: run
    /// again later. Nothing was committed that was not handled.
    Retry,
    /// The configuration is wrong; retrying with the same configuration will fail again.
    FixConfiguration,
    /// Something needs an operator (an undecodable record, a broken duplicate store): stop
    /// and look before running again.
    Stop,
}

/// SDK errors, each classified by [`Error::action`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fix the configuration; retrying will not help.
    #[error("configuration: {0}")]
    Config(String),
    /// Talking to the broker or the schema registry failed (see [`Error::action`]).
    #[error(transparent)]
    Hub(#[from] dho_kafka::Error),
    /// The consumer or producer failed: usually the broker is unavailable.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A record on the subscriber topic could not be decoded. Under [`FailurePolicy::Stop`]
    /// the consumer stops at it (uncommitted) so an operator can look; under
    /// [`FailurePolicy::Park`] it is parked instead.
    ///
    /// [`FailurePolicy::Stop`]: crate::FailurePolicy::Stop
    /// [`FailurePolicy::Park`]: crate::FailurePolicy::Park
    #[error("delivery at partition {partition} offset {offset} could not be decoded: {detail}")]
    Undecodable {
        partition: i32,
        offset: i64,
        detail: String,
    },
    /// The handler kept failing under [`FailurePolicy::Stop`]: the delivery was not
    /// committed and comes again when the subscriber runs again.
    ///
    /// [`FailurePolicy::Stop`]: crate::FailurePolicy::Stop
    #[error("the handler failed {attempts} times on delivery {delivery_id}: {detail}")]
    HandlerFailed {
        delivery_id: String,
        attempts: u32,
        detail: String,
    },
    /// Parking a delivery on the `.dlq` topic was not acknowledged; it stays uncommitted.
    #[error("parking delivery at partition {partition} offset {offset} failed: {source}")]
    NotParked {
        partition: i32,
        offset: i64,
        source: KafkaError,
    },
    /// The duplicate store failed to read or write; the delivery stays uncommitted.
    #[error("duplicate store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The ingest gateway refused a subscription request. `401`/`403` mean the token is
    /// wrong or not allowed to do this (another service's subscription, a platform token):
    /// fix the configuration. `503` (and `429`) mean it is busy: retry, after
    /// [`Error::retry_after`] if given. Anything else is a request the gateway will not
    /// accept as it is: stop and look. `reason` and `field` are the gateway's bounded
    /// reason and the offending field.
    #[error(
        "the gateway refused the request ({status} {reason}{}): {detail}",
        field_suffix(field)
    )]
    Refused {
        status: u16,
        reason: String,
        field: String,
        detail: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The ingest gateway could not be reached or did not answer in time.
    #[error("the gateway is unreachable: {0}")]
    GatewayUnreachable(#[source] reqwest::Error),
    /// The ingest gateway answered success with something this SDK cannot read (a version
    /// mismatch, or not the gateway at that URL).
    #[error("{detail}")]
    GatewayAnswer { detail: String },
}

fn field_suffix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(" at {field}")
    }
}

impl Error {
    /// What the caller should do.
    pub fn action(&self) -> Action {
        match self {
            Error::Config(_) => Action::FixConfiguration,
            Error::Hub(e) if e.is_retriable() => Action::Retry,
            Error::Hub(_) => Action::FixConfiguration,
            Error::Kafka(_) | Error::NotParked { .. } | Error::HandlerFailed { .. } => {
                Action::Retry
            }
            Error::Undecodable { .. } | Error::Store(_) => Action::Stop,
            Error::Refused {
                status: 401 | 403, ..
            } => Action::FixConfiguration,
            Error::Refused {
                status: 429 | 503, ..
            } => Action::Retry,
            Error::Refused { .. } | Error::GatewayAnswer { .. } => Action::Stop,
            Error::GatewayUnreachable(_) => Action::Retry,
        }
    }

    /// How long the gateway asked the caller to wait before retrying (`Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of a gateway refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Wraps any error of a custom [`DedupStore`](crate::DedupStore).
    pub fn store(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Store(e.into())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        assert_eq!(Error::Config("x".into()).action(), Action::FixConfiguration);
        assert_eq!(
            Error::Hub(dho_kafka::Error::RegistryUnavailable { detail: "x".into() }).action(),
            Action::Retry
        );
        assert_eq!(
            Error::Hub(dho_kafka::Error::ConflictingOption { key: "x".into() }).action(),
            Action::FixConfiguration
        );
        let failed = Error::HandlerFailed {
            delivery_id: "d".into(),
            attempts: 3,
            detail: "down".into(),
        };
        assert_eq!(failed.action(), Action::Retry);
        assert_eq!(Error::store("disk full").action(), Action::Stop);
    }

    fn refused(status: u16, retry_after: Option<u64>) -> Error {
        Error::Refused {
            status,
            reason: "r".into(),
            field: String::new(),
            detail: "d".into(),
            retry_after: retry_after.map(std::time::Duration::from_secs),
        }
    }

    #[test]
    fn gateway_refusals_say_what_to_do() {
        assert_eq!(refused(401, None).action(), Action::FixConfiguration);
        assert_eq!(refused(403, None).action(), Action::FixConfiguration);
        let busy = refused(503, Some(2));
        assert_eq!(busy.action(), Action::Retry);
        assert_eq!(busy.retry_after(), Some(std::time::Duration::from_secs(2)));
        assert_eq!(refused(429, None).action(), Action::Retry);
        assert_eq!(refused(422, None).action(), Action::Stop);
        assert_eq!(refused(400, None).action(), Action::Stop);
        assert_eq!(refused(500, None).action(), Action::Stop);
        assert_eq!(refused(403, None).status(), Some(403));
    }
}
