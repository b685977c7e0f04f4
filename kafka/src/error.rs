use rdkafka::error::KafkaError;

/// Errors talking to Kafka or the schema registry, classified by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("librdkafka option '{key}' is set by the hub itself and cannot be passed through")]
    ConflictingOption { key: String },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {topic}: {detail}")]
    Topic { topic: String, detail: String },
    #[error(
        "topic {topic} has {actual} partitions but the hub's input topics must all have {expected} \
         (co-partitioning by patient)"
    )]
    PartitionMismatch {
        topic: String,
        expected: i32,
        actual: i32,
    },
    #[error("schema registry refused subject {subject}: {detail}")]
    Registry { subject: String, detail: String },
    #[error("schema registry unreachable or failing ({detail}); retry later")]
    RegistryUnavailable { detail: String },
    #[error("schema id {id} is unknown to the registry")]
    UnknownSchema { id: u32 },
    #[error("schema id {id} is a {found} schema, not {expected}")]
    WrongSchema {
        id: u32,
        expected: &'static str,
        found: String,
    },
    #[error(transparent)]
    Contract(#[from] dho_schemas::Error),
}

impl Error {
    /// Whether retrying the same call later may succeed (broker or registry down) rather
    /// than the input or configuration being wrong.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::RegistryUnavailable { .. } | Error::Kafka(_))
    }

    /// Whether a dependency is down (the registry unreachable, the broker not answering),
    /// which a service waits out, rather than a request or a setting being wrong.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::RegistryUnavailable { .. } => true,
            Error::Kafka(e) => crate::outage::is_transient(e),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
