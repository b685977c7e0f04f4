//! The router process is killed with SIGKILL several times in the middle of a stream and
//! restarted. Afterwards every entitled delivery is present, exactly once after the SDK's
//! de-duplication by delivery id, in ingest order per patient; nothing ever reached an
//! unentitled subscriber; and the audit holds one record per distinct delivery.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dho_tests::Stack;
use dho_tests::scenario::{assert_exactly_entitled, stream, two_subscribers, wait_all_routed};

const GROUP: &str = "router-crash";
const PATIENTS: u64 = 12;

fn spawn_router(stack: &Stack) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dho-router"))
        .args(["--bootstrap-servers", &stack.settings.bootstrap_servers])
        .args(["--schema-registry-url", &stack.settings.schema_registry_url])
        .args(["--topic-prefix", &stack.settings.topic_prefix])
        .args(["--partitions", &stack.settings.partitions.to_string()])
        .args(["--group-id", GROUP])
        // The test's patients are synthetic.
        .args(["--set", "allow_synthetic_identifiers=true"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the router binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_router_mid_stream_loses_nothing_and_leaks_nothing() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;

    let mut router = spawn_router(&stack);
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        600,
        Duration::from_millis(4),
    ));
    for pause in [700, 1100, 900, 1300] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        router.kill().unwrap(); // SIGKILL: no shutdown hook runs
        router.wait().unwrap();
        router = spawn_router(&stack);
    }
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, GROUP, &published).await;
    router.kill().unwrap();
    router.wait().unwrap();
    let repeats = assert_exactly_entitled(&stack.settings, &published).await;
    eprintln!("the SDK's de-duplication would drop {repeats} repeated deliveries");
}
