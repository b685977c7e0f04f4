//! One broker for a whole test run: `./dev test` starts it (`dho-devbroker`) and names it
//! in [`SHARED_BOOTSTRAP_ENV`]; each test keeps to topics of its own prefix. A test run
//! without it (plain `cargo test`) starts a broker per test instead: slower, same result.

use crate::{Broker, BrokerOptions, Result};

/// The variable naming the test run's shared broker (`host:port`).
pub const SHARED_BOOTSTRAP_ENV: &str = "DHO_TEST_BOOTSTRAP_SERVERS";

/// The variable naming the shared broker's SASL listener (`host:port`), where ACLs apply.
pub const SHARED_SASL_BOOTSTRAP_ENV: &str = "DHO_TEST_SASL_BOOTSTRAP_SERVERS";

/// The broker a test talks to.
#[derive(Debug)]
pub enum TestBroker {
    /// The run's shared broker, at this address.
    Shared(String),
    /// A broker of the test's own, stopped with it: for tests that restart or kill it.
    Own(Box<Broker>),
}

impl TestBroker {
    /// The shared broker if the run has one, else a broker of the test's own.
    pub fn get() -> Result<Self> {
        match std::env::var(SHARED_BOOTSTRAP_ENV) {
            Ok(bootstrap) if !bootstrap.is_empty() => Ok(Self::Shared(bootstrap)),
            _ => Broker::start_default().map(|b| Self::Own(Box::new(b))),
        }
    }

    /// A broker of the test's own, whatever the run shares.
    pub fn own(options: BrokerOptions) -> Result<Self> {
        Broker::start(options).map(|b| Self::Own(Box::new(b)))
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Shared(bootstrap) => bootstrap.clone(),
            Self::Own(broker) => broker.bootstrap_servers(),
        }
    }

    /// The SASL/SCRAM listener, where the broker's ACLs apply (see [`crate::access`]).
    /// A shared broker announced without one is a broken test run: this panics, naming
    /// the variable, rather than test access control on the wrong listener.
    pub fn sasl_bootstrap_servers(&self) -> String {
        match self {
            Self::Shared(_) => std::env::var(SHARED_SASL_BOOTSTRAP_ENV)
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    panic!(
                        "{SHARED_BOOTSTRAP_ENV} is set but {SHARED_SASL_BOOTSTRAP_ENV} is not: \
                         run the tests with ./dev test"
                    )
                }),
            Self::Own(broker) => broker.sasl_bootstrap_servers(),
        }
    }

    /// The broker process, if it is the test's own.
    pub fn own_broker(&mut self) -> Option<&mut Broker> {
        match self {
            Self::Shared(_) => None,
            Self::Own(broker) => Some(broker),
        }
    }
}
