//! The crate's one error type. Every variant knows the Confluent `error_code` and HTTP status
//! it maps to, so the HTTP layer never has to guess (a wrong code breaks client caches, a 5xx
//! for a client error makes clients retry forever).

/// Errors of the registry: client errors (4xx, with Confluent's error codes) and store or
/// start-up errors (5xx or fatal).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found.")]
    VersionNotFound { subject: String, version: String },
    #[error("{0}")]
    SchemaNotFound(String),
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Version {version} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: u32 },
    #[error("Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: u32 },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        messages.join(", ")
    )]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between \
         [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level '{0}'. Valid values are NONE, BACKWARD, FORWARD, FULL, \
         BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE and FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel(String),
    #[error(
        "Invalid mode '{0}'. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT"
    )]
    InvalidMode(String),
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("One or more references exist to the schema {{subject={subject},version={version}}}.")]
    ReferenceExists { subject: String, version: u32 },
    /// A request body that is not JSON of the expected shape.
    #[error("Unprocessable request body: {0}")]
    BadBody(String),
    /// No route for the path (Confluent answers plain 404).
    #[error("HTTP 404 Not Found")]
    RouteNotFound,
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// The schemas topic could not be written or read.
    #[error("Error in the backend data store: {0}")]
    Store(String),
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Invalid registry configuration (start-up only).
    #[error("invalid registry configuration: {0}")]
    Config(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The Confluent `error_code` of the JSON error body.
    pub fn error_code(&self) -> u32 {
        match self {
            Error::SubjectNotFound(_) => 40401,
            Error::VersionNotFound { .. } => 40402,
            Error::SchemaNotFound(_) => 40403,
            Error::SubjectSoftDeleted(_) => 40404,
            Error::SubjectNotSoftDeleted(_) => 40405,
            Error::VersionSoftDeleted { .. } => 40406,
            Error::VersionNotSoftDeleted { .. } => 40407,
            Error::SubjectConfigNotFound(_) => 40408,
            Error::SubjectModeNotFound(_) => 40409,
            Error::Incompatible { .. } => 409,
            Error::InvalidSchema(_) => 42201,
            Error::InvalidVersion(_) => 42202,
            Error::InvalidCompatibilityLevel(_) => 42203,
            Error::InvalidMode(_) => 42204,
            Error::OperationNotPermitted(_) => 42205,
            Error::ReferenceExists { .. } => 42206,
            Error::BadBody(_) => 422,
            Error::RouteNotFound => 404,
            Error::MethodNotAllowed => 405,
            Error::Store(_) | Error::Kafka(_) | Error::Config(_) | Error::Io(_) => 50001,
        }
    }

    /// The HTTP status that goes with [`Error::error_code`].
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            code @ 400..=599 => code as u16,
            code => (code / 100) as u16,
        }
    }

    /// Whether the caller made the mistake (4xx) rather than the registry or its store.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.http_status())
    }
}
