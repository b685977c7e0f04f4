//! The demo: the whole hub on one machine. Starts the development broker and the schema
//! registry, records consents and subscriptions for a fleet of synthetic patients, runs the
//! router, simulates device platforms publishing readings, and prints what each of three
//! care services receives. Patients appear only as pseudonyms. Ctrl-C stops it cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dho_consumer::{Subscriber, SubscriberConfig};
use dho_devstack::Broker;
use dho_kafka::KafkaSettings;
use dho_publisher::Publisher;
use dho_registry::RegistryConfig;
use dho_router::{Router, RouterConfig};
use dho_schemas::model::*;
use dho_schemas::{Policy, fixtures};
use dho_simulator::{Diagnosis, Fleet, SIM_PLAN_NAME, SimEvent, SimPatient};
use dho_telemetry::Readiness;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(about = "Run the DHO event hub demo on this machine")]
struct Args {
    /// Synthetic patients in the fleet.
    #[arg(long, default_value_t = 50)]
    patients: usize,
    /// Readings published per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Where Prometheus metrics are served.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: SocketAddr,
    /// Seed of the simulated fleet.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

struct CareService {
    subscriber_id: &'static str,
    org: OrganisationIdentifier,
}

fn care_services() -> Vec<CareService> {
    vec![
        CareService {
            subscriber_id: "bergen-home-care",
            org: fixtures::home_care(),
        },
        CareService {
            subscriber_id: "sentrum-gp",
            org: fixtures::gp(),
        },
        CareService {
            subscriber_id: "lung-clinic",
            org: fixtures::lung_clinic(),
        },
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,dho_demo=info".into()),
        )
        .init();

    println!(
        "==> starting the development broker (Apache Kafka {})",
        dho_devstack::kafka_version()
    );
    let broker = tokio::task::spawn_blocking(Broker::start_default).await??;
    println!("    broker on {}", broker.bootstrap_servers());
    let registry = dho_registry::start(
        RegistryConfig::new(broker.bootstrap_servers()).with_listen(([127, 0, 0, 1], 0).into()),
    )
    .await
    .context("starting the schema registry")?;
    println!("    schema registry on {}", registry.url());
    // The same operations endpoints as the services: /metrics, /healthz, /readyz.
    let metrics = dho_telemetry::install_recorder()?;
    let listener = tokio::net::TcpListener::bind(args.metrics)
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics))?;
    println!(
        "    Prometheus metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let readiness = Readiness::new();
    let router_connected = readiness.check("router");
    tokio::spawn(dho_telemetry::server::serve(
        listener,
        Some(metrics),
        readiness.clone(),
        std::future::pending(),
    ));

    let settings = KafkaSettings::new(broker.bootstrap_servers(), registry.url());
    let publisher = Publisher::connect(&settings, Policy::SYNTHETIC_ALLOWED).await?;
    let fleet = Fleet::new(args.seed, args.patients);
    record_consents_and_subscriptions(&publisher, &fleet, args.seed).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut router_config = RouterConfig::new(settings.clone());
    // The demo's patients are synthetic (Norway's test populations).
    router_config.allow_synthetic_identifiers = true;
    let router = Router::connect(router_config).await?;
    readiness.watch("state", router.state_loaded());
    router_connected.store(true, std::sync::atomic::Ordering::Relaxed);
    let router = tokio::spawn(router.run(stopped(stop_rx.clone())));
    let mut subscribers = vec![];
    for service in care_services() {
        let subscriber = Subscriber::connect(SubscriberConfig::new(
            settings.clone(),
            service.subscriber_id,
        ))
        .await?;
        let name = service.subscriber_id;
        subscribers.push(tokio::spawn(subscriber.run(
            move |received| async move {
                print_delivery(name, &received.delivery);
                Ok::<(), std::convert::Infallible>(())
            },
            stopped(stop_rx.clone()),
        )));
    }
    let simulator = tokio::spawn(simulate(
        publisher.clone(),
        fleet,
        args.rate,
        stopped(stop_rx.clone()),
    ));
    println!("==> routing; Ctrl-C stops the demo\n");

    match args.duration {
        Some(seconds) => tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        None => tokio::signal::ctrl_c().await?,
    }
    println!("\n==> stopping: finishing the batch in hand, committing, leaving the group");
    stop_tx.send(true)?;
    let published = simulator.await??;
    router.await??;
    for subscriber in subscribers {
        subscriber.await??;
    }
    // Clients go before the broker, or librdkafka reports the broker as down.
    drop(publisher);
    registry.shutdown().await?;
    let mut broker = broker;
    tokio::task::spawn_blocking(move || broker.stop()).await?;
    println!("==> stopped cleanly after publishing {published} readings");
    Ok(())
}

/// Consents differ per patient, as in real life: most allow home care, fewer the GP; COPD
/// patients mostly allow the lung clinic, and a few patients deny the GP outright.
async fn record_consents_and_subscriptions(
    publisher: &Publisher,
    fleet: &Fleet,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let services = care_services();
    let (mut consents, mut subscriptions) = (0, 0);
    for patient in fleet.patients() {
        let mut permitted = vec![];
        if rng.random_bool(0.9) {
            permitted.push(services[0].org.clone());
        }
        if rng.random_bool(0.6) {
            permitted.push(services[1].org.clone());
        }
        if patient.diagnosis == Diagnosis::Copd && rng.random_bool(0.8) {
            permitted.push(services[2].org.clone());
        }
        let mut consent = fixtures::consent(&patient.id, "dho-sharing", &permitted);
        if rng.random_bool(0.1) {
            consent.provisions.push(ConsentProvision::organisation(
                ProvisionKind::Deny,
                services[1].org.clone(),
                vec![
                    DataCategory::Measurement,
                    DataCategory::SelfReport,
                    DataCategory::Alert,
                ],
            ));
        }
        publisher.put_consent(&consent).await?;
        publisher.put_care_plan(&care_plan(patient)).await?;
        consents += 1;
        for service in &services {
            if let Some(subscription) = subscription(patient, service) {
                publisher.put_subscription(&subscription).await?;
                subscriptions += 1;
            }
        }
    }
    println!(
        "    recorded {consents} consents, care plans and {subscriptions} subscriptions for {} patients",
        fleet.patients().len()
    );
    Ok(())
}

/// The patient's self-management plan, under the id the gateway would give it:
/// `<orgnr>.egenbehandlingsplan`, with the number of the organisation that wrote it.
fn care_plan(patient: &SimPatient) -> CarePlan {
    let mut plan = patient.care_plan();
    plan.plan_id = format!("{}.{SIM_PLAN_NAME}", plan.updated_by.value);
    plan
}

/// The care service's subscription for the patient (the lung clinic follows COPD patients
/// only), under an id of the gateway's form `<subscriber_id>.<name>` (the name: the
/// patient's pseudonym, never the number).
fn subscription(patient: &SimPatient, service: &CareService) -> Option<Subscription> {
    if service.subscriber_id == "lung-clinic" && patient.diagnosis != Diagnosis::Copd {
        return None;
    }
    let mut subscription = fixtures::subscription(&patient.id, service.subscriber_id, &service.org);
    subscription.subscription_id = format!("{}.{}", service.subscriber_id, patient.id.log_tag());
    if service.subscriber_id == "sentrum-gp" {
        // The GP asks only for references; it looks values up in its own record.
        subscription.content_level = ContentLevel::Minimal;
    }
    Some(subscription)
}

async fn simulate(
    publisher: Publisher,
    mut fleet: Fleet,
    rate: f64,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u64> {
    let mut stop = std::pin::pin!(stop);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut published = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let result = match fleet.next_event(now_millis()) {
            SimEvent::Measurement(m) => publisher.publish_measurement(&m).await,
            SimEvent::SelfReport(r) => publisher.publish_self_report(&r).await,
        };
        match result {
            Ok(_) => published += 1,
            Err(e) => tracing::warn!(error = %e, "a reading was refused"),
        }
    }
    publisher.flush(Duration::from_secs(10))?;
    Ok(published)
}

fn print_delivery(subscriber: &str, delivery: &Delivery) {
    let who = delivery.patient.log_tag();
    let what = match delivery.payload() {
        Some(Payload::Measurement(m)) => describe(m),
        Some(Payload::SelfReport(r)) => format!(
            "questionnaire '{}' score {}",
            r.questionnaire_id,
            r.score.map_or("-".into(), |s| s.to_string())
        ),
        Some(Payload::Alert(a)) => format!("ALERT {:?} {:?} on {}", a.kind, a.zone, a.code),
        Some(Payload::Reference(r)) => format!(
            "reference to {:?} {} (values withheld: minimal)",
            r.category,
            r.code.as_deref().unwrap_or("-")
        ),
        Some(Payload::SharingEnded(e)) => format!(
            "SHARING ENDED for {:?} (recorded by {})",
            e.categories,
            e.recorded_by.as_ref().map_or("-", |o| o.value.as_str())
        ),
        None => "malformed delivery".into(),
    };
    println!(
        "[{subscriber:>16}] {who}  {what}  (consent {})",
        delivery.consent_id
    );
}

fn describe(m: &Measurement) -> String {
    let name = dho_schemas::codes::lookup(&m.code).map_or(m.code.as_str(), |c| c.display);
    match &m.value {
        Some(q) => format!("{name} {} {}", q.value, q.unit),
        None => {
            let parts: Vec<String> = m
                .components
                .iter()
                .map(|c| format!("{}", c.value.value))
                .collect();
            format!("{name} {} mm[Hg]", parts.join("/"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_gateway::{is_own_care_plan_id, is_own_subscription_id};

    #[test]
    fn the_demos_ids_are_ones_the_gateway_takes_from_their_owners() {
        let fleet = Fleet::new(2026, 50);
        let mut subscriptions = 0;
        for patient in fleet.patients() {
            let plan = care_plan(patient);
            assert!(
                is_own_care_plan_id(&plan.updated_by.value, &plan.plan_id),
                "{}",
                plan.plan_id
            );
            plan.validate(Policy::SYNTHETIC_ALLOWED).unwrap();
            for service in care_services() {
                let Some(s) = subscription(patient, &service) else {
                    continue;
                };
                assert!(
                    is_own_subscription_id(&s.subscriber_id, &s.subscription_id),
                    "{}",
                    s.subscription_id
                );
                assert!(!s.subscription_id.contains(&patient.id.value));
                s.validate(Policy::SYNTHETIC_ALLOWED).unwrap();
                subscriptions += 1;
            }
        }
        assert!(subscriptions > 100, "{subscriptions}");
    }
}
