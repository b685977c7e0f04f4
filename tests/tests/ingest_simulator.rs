//! The simulator through the gateway at a fixed offered rate, with late-synced readings
//! and malformed submissions, in the native JSON form and as FHIR Bundles: every malformed
//! one is refused, every other one accepted, and exactly the accepted ones are on Kafka.

use std::time::Duration;

use dho_simulator::{Fleet, GatewayClient, SimOptions, Sink, run};
use dho_tests::ingest::{PLATFORM_TOKEN, gateway_config, start_gateway};
use dho_tests::{Stack, read_topic_sizes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_the_simulated_fleet_through_the_gateway_gets_exactly_its_valid_readings_in() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let options = SimOptions {
        late_fraction: 0.2,
        late_max_hours: 8,
        malformed_fraction: 0.15,
    };
    let topics = stack.settings.topics();
    let mut stored_before = 0;
    for fhir in [false, true] {
        let client = GatewayClient::new(gw.url(), PLATFORM_TOKEN);
        let client = if fhir { client.fhir() } else { client };
        let stats = run(
            Fleet::with_options(5 + u64::from(fhir), 30, options),
            Sink::Gateway(client),
            80.0,
            Duration::from_secs(2),
            16,
        )
        .await;
        assert!(stats.offered >= 140, "fhir={fhir}: {stats:?}");
        assert!(stats.malformed > 0, "fhir={fhir}: {stats:?}");
        assert_eq!(stats.malformed_accepted, 0, "fhir={fhir}: {stats:?}");
        assert_eq!(stats.failed, 0, "fhir={fhir}: {stats:?}");
        assert_eq!(stats.rejected, stats.malformed, "fhir={fhir}: {stats:?}");
        assert_eq!(
            stats.accepted,
            stats.offered - stats.malformed,
            "fhir={fhir}: {stats:?}"
        );
        let stored = read_topic_sizes(&stack.settings, &topics.measurements())
            + read_topic_sizes(&stack.settings, &topics.selfreports());
        assert_eq!(
            (stored - stored_before) as u64,
            stats.accepted,
            "fhir={fhir}"
        );
        stored_before = stored;
    }
    gw.stop().await.unwrap();
}
