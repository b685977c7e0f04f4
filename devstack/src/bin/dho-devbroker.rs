//! Runs the development broker until its parent process ends: `./dev test` starts one for
//! the whole test run. Prints `sasl_bootstrap=<host:port>` (its SASL/SCRAM listener, where
//! ACLs apply) and then `bootstrap=<host:port>` once it is ready.
//!
//! Usage: `dho-devbroker <home>`; the home is the caller's to remove afterwards.

use std::time::Duration;

use dho_devstack::{Broker, BrokerOptions};

fn main() {
    let Some(home) = std::env::args_os().nth(1) else {
        eprintln!("usage: dho-devbroker <home folder>");
        std::process::exit(2);
    };
    let parent = std::os::unix::process::parent_id();
    let broker = match Broker::start(BrokerOptions {
        home: Some(home.into()),
        ..BrokerOptions::default()
    }) {
        Ok(broker) => broker,
        Err(e) => {
            eprintln!("dho-devbroker: {e}");
            std::process::exit(1);
        }
    };
    println!("sasl_bootstrap={}", broker.sasl_bootstrap_servers());
    println!("bootstrap={}", broker.bootstrap_servers());
    // A signal ends this process without dropping the broker; the broker's watchdog then
    // kills the JVM, as it does when the parent is gone and the broker is dropped here.
    while std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(broker);
}
