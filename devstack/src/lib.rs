//! The development stack's broker: Apache Kafka (KRaft, one node that is broker and
//! controller), the engine users deploy, run as a child process, so the demo, the tests
//! and the benchmarks talk to the same broker as production, with no Docker.
//!
//! The broker's jars are installed once into a cache outside the repository by `./dev`
//! (Maven, from `devstack/kafka/pom.xml`, where the version is pinned); this crate finds
//! them and runs them with a JDK. A missing JDK or install is an error that says what to
//! do, never a silently skipped test.

pub mod access;
mod broker;
mod shared;

pub use broker::{Broker, BrokerOptions, broker_libs, cache_dir};
pub use shared::{SHARED_BOOTSTRAP_ENV, SHARED_SASL_BOOTSTRAP_ENV, TestBroker};

/// The Apache Kafka release this project is tested against: `kafka.version` in
/// `devstack/kafka/pom.xml`, the one place it is pinned.
pub fn kafka_version() -> &'static str {
    const POM: &str = include_str!("../kafka/pom.xml");
    let start = POM
        .find("<kafka.version>")
        .expect("the pom pins kafka.version")
        + 15;
    let end = start + POM[start..].find('<').expect("kafka.version closes");
    &POM[start..end]
}

/// Errors starting or stopping the development broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Apache Kafka {version} is not installed at {path}: run `./dev install-broker` \
         (it needs a JDK 17 or newer and Maven: `apt-get install openjdk-17-jdk-headless maven`)"
    )]
    NotInstalled { path: String, version: &'static str },
    #[error(
        "no Java runtime found ({java}): Apache Kafka needs a JDK 17 or newer; install one \
         (`apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME"
    )]
    NoJava { java: String },
    #[error("could not start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("formatting the broker's storage failed ({status}); its output: {output}")]
    Format { status: String, output: String },
    #[error("the broker exited during start-up ({status}); its log: {log}")]
    ExitedEarly { status: String, log: String },
    #[error("the broker did not answer metadata requests within {seconds}s; its log: {log}")]
    NotReady { seconds: u64, log: String },
    #[error("making principals and ACLs failed ({status}); the tool's output: {output}")]
    Access { status: String, output: String },
    #[error("i/o error in the development stack: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
