//! The end-to-end test harness: a real broker (the pinned development broker as a child
//! process) and the project's schema registry, with a fresh topic prefix per stack so
//! tests never see each other's records. A missing broker fails the test with the install
//! command; nothing is skipped.

pub mod deploy;
pub mod foreign;
pub mod ingest;
pub mod logscan;
pub mod sdk;

pub mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_devstack::{Broker, BrokerOptions, TestBroker};
use dho_kafka::KafkaSettings;
use dho_registry::{RegistryConfig, RunningRegistry};
use dho_router::{Router, RouterConfig};
use dho_schemas::codec::AvroRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Partitions per topic in tests: more than one, so partitioning is exercised.
pub const PARTITIONS: i32 = 3;

/// A broker and a registry for one test.
#[allow(missing_debug_implementations)]
pub struct Stack {
    /// The run's shared broker, or (see [`Stack::start_own_broker`]) one of this test's own.
    pub broker: TestBroker,
    /// None while [`Stack::stop_registry`] has it down.
    registry: Option<RunningRegistry>,
    registry_addr: std::net::SocketAddr,
    pub settings: KafkaSettings,
    /// The registry's schemas topic, deleted with the test's own topics.
    schemas_topic: String,
}

impl Stack {
    /// A stack on the test run's shared broker (see [`TestBroker::get`]).
    pub async fn start() -> Stack {
        Self::on(TestBroker::get).await
    }

    /// A stack on a broker of the test's own, which the test may kill and restart.
    pub async fn start_own_broker(options: BrokerOptions) -> Stack {
        Self::on(move || TestBroker::own(options)).await
    }

    /// The test's own broker process (see [`Stack::start_own_broker`]).
    pub fn own_broker(&mut self) -> &mut Broker {
        self.broker
            .own_broker()
            .expect("this test started a broker of its own (Stack::start_own_broker)")
    }

    async fn on(
        broker: impl FnOnce() -> dho_devstack::Result<TestBroker> + Send + 'static,
    ) -> Stack {
        let broker = tokio::task::spawn_blocking(broker)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the development broker is required for this test: {e}"));
        let schemas_topic = format!("_schemas-{}", uuid::Uuid::new_v4().simple());
        let registry = dho_registry::start(
            RegistryConfig::new(broker.bootstrap_servers())
                .with_listen(([127, 0, 0, 1], 0).into())
                .with_topic(schemas_topic.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("the schema registry did not start: {e}"));
        let mut settings = KafkaSettings::new(broker.bootstrap_servers(), registry.url());
        settings.topic_prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        settings.partitions = PARTITIONS;
        Stack {
            broker,
            registry_addr: registry.local_addr(),
            registry: Some(registry),
            settings,
            schemas_topic,
        }
    }

    /// Stops the schema registry: an outage, until [`Stack::start_registry`].
    pub async fn stop_registry(&mut self) {
        let registry = self.registry.take().expect("the registry is running");
        registry.shutdown().await.unwrap();
    }

    /// Starts the schema registry again, at the same address and on the same topic.
    pub async fn start_registry(&mut self) {
        assert!(self.registry.is_none(), "the registry is running");
        let registry = dho_registry::start(
            RegistryConfig::new(self.broker.bootstrap_servers())
                .with_listen(self.registry_addr)
                .with_topic(self.schemas_topic.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("the schema registry did not start again: {e}"));
        self.registry = Some(registry);
    }

    pub async fn publisher(&self) -> dho_publisher::Publisher {
        dho_publisher::Publisher::connect(&self.settings, dho_schemas::Policy::SYNTHETIC_ALLOWED)
            .await
            .expect("publisher connects")
    }

    pub fn router_config(&self, group: &str) -> RouterConfig {
        let mut config = RouterConfig::new(self.settings.clone());
        config.group_id = group.to_string();
        // The tests' patients are synthetic.
        config.allow_synthetic_identifiers = true;
        config
    }

    /// Starts a router instance in this process; stop it with [`RunningRouter::stop`].
    pub async fn spawn_router(&self, group: &str) -> RunningRouter {
        self.spawn_router_with(self.router_config(group)).await
    }

    /// [`spawn_router`](Self::spawn_router) with a configuration of the test's own.
    pub async fn spawn_router_with(&self, config: RouterConfig) -> RunningRouter {
        let router = Router::connect(config).await.expect("router connects");
        let (stop, stopped) = oneshot::channel::<()>();
        let finished = router.finished();
        let task = tokio::spawn(router.run(async {
            let _ = stopped.await;
        }));
        RunningRouter {
            stop,
            task,
            finished,
        }
    }
}

/// A shared broker outlives hundreds of tests: each deletes its topics when it ends, or
/// their files and memory maps would add up.
impl Drop for Stack {
    fn drop(&mut self) {
        if matches!(self.broker, TestBroker::Own(_)) {
            return;
        }
        delete_topics(
            &self.settings.bootstrap_servers,
            &format!("{}.", self.settings.topic_prefix),
            &self.schemas_topic,
        );
    }
}

/// Deletes the topics named `exact` or starting with `prefix` (on a thread of its own: a
/// test's stack is dropped inside its runtime).
fn delete_topics(bootstrap: &str, prefix: &str, exact: &str) {
    let (bootstrap, prefix, exact) = (bootstrap.to_string(), prefix.to_string(), exact.to_string());
    let deleted = std::thread::spawn(move || {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("log_level", "3")
                .create()?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        let names: Vec<&str> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| name.starts_with(&prefix) || *name == exact)
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| rdkafka::error::KafkaError::AdminOpCreation(e.to_string()))?;
        runtime
            .block_on(admin.delete_topics(
                &names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .map(drop)
    })
    .join();
    if let Ok(Err(e)) = deleted {
        eprintln!("could not delete this test's topics: {e}");
    }
}

#[allow(missing_debug_implementations)]
pub struct RunningRouter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<dho_router::Result<dho_router::RunStats>>,
    finished: Arc<AtomicU64>,
}

impl RunningRouter {
    /// Event records finished so far (outputs acknowledged, offsets committed).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Panics with the router's own error if it has stopped.
    pub async fn assert_running(&mut self) {
        if self.task.is_finished() {
            let outcome = (&mut self.task).await.expect("router task");
            panic!("the router stopped by itself: {outcome:?}");
        }
    }

    /// Graceful stop: the batch in hand is finished and committed. Returns what it routed.
    pub async fn stop(self) -> dho_router::RunStats {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("router task")
            .expect("router ran without error")
    }
}

/// This crate's directory: as cargo or nextest tell the running test, else as it was at
/// build time. (Another checkout sharing the target directory may have built this binary,
/// so the path baked in at build time can name a checkout that is gone.)
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The path of a workspace program (`dho-router`, `dho-ingest`, ...), built first with the
/// cargo running this test, into this test binary's target directory and profile (see
/// [`sdk::example`] for why). Each package is built once per process.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let path = build_programs(package, "--bins").join(name);
    assert!(path.exists(), "program {} not found", path.display());
    path
}

/// Features the tests build a program with: the router's injectable faults (inert unless
/// `DHO_ROUTER_FAULT` is set). Only here, never as a dependency feature: cargo would unify
/// it into every workspace build, the release images' included.
fn test_features(package: &str) -> &'static [&'static str] {
    match package {
        "dho-router" => &["--features", "fault-injection"],
        _ => &[],
    }
}

/// Builds `package`'s programs of one kind (`--bins`, `--examples`) once per process, with
/// this test's profile into its target directory; returns `<target>/<profile>`.
pub(crate) fn build_programs(package: &str, kind: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{package} {kind}");
    if !built.contains(&key) {
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev".to_string(),
            other => other.to_string(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = crate_dir().join("../Cargo.toml");
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", package, kind])
            .args(test_features(package))
            .args(["--profile", &profile])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building {package}'s programs ({kind}) failed"
        );
        built.insert(key);
    }
    profile_dir
}

/// Waits (up to a minute) for a spawned program's first line on stdout, where it announces
/// its address, and returns what follows `prefix`.
pub async fn announced(child: &mut tokio::process::Child, program: &str, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{program} did not announce its address in time"))
        .unwrap()
        .unwrap_or_else(|| panic!("{program} printed no address"));
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line of {program}: {line}"))
        .to_string()
}

/// `dho-router` as the program it is, with its operations endpoints on a free port.
#[derive(Debug)]
pub struct RouterProcess {
    pub child: tokio::process::Child,
    /// `http://<addr>` of `/metrics`, `/healthz` and `/readyz`.
    pub ops_url: String,
}

impl RouterProcess {
    /// Starts `dho-router` for `stack` in `group` with `args` added and `RUST_LOG` set to
    /// `rust_log`; its log (stderr) goes to `log`.
    pub async fn start(
        stack: &Stack,
        group: &str,
        args: &[&str],
        rust_log: &str,
        log: &Path,
    ) -> RouterProcess {
        RouterProcess::start_with_env(stack, group, args, &[], rust_log, log).await
    }

    /// [`start`](Self::start) with environment variables added (such as an injected fault).
    pub async fn start_with_env(
        stack: &Stack,
        group: &str,
        args: &[&str],
        env: &[(&str, &str)],
        rust_log: &str,
        log: &Path,
    ) -> RouterProcess {
        let s = &stack.settings;
        let mut child = tokio::process::Command::new(binary("dho-router", "dho-router"))
            .args(["--bootstrap-servers", &s.bootstrap_servers])
            .args(["--schema-registry-url", &s.schema_registry_url])
            .args(["--topic-prefix", &s.topic_prefix])
            .args(["--partitions", &s.partitions.to_string()])
            .args(["--group-id", group])
            .args(["--metrics-listen", "127.0.0.1:0"])
            // The tests' patients are synthetic.
            .args(["--set", "allow_synthetic_identifiers=true"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("dho-router starts");
        let ops_url = announced(&mut child, "dho-router", "operations endpoints on ").await;
        RouterProcess { child, ops_url }
    }

    /// `GET <ops_url><path>`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.ops_url))
            .await
            .expect("the router's operations endpoint answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until `GET path` answers 200, returning the body.
    pub async fn wait_ok(&self, path: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends signal `name` (`TERM`, `KILL`, `STOP`, `CONT`) to the running program.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGTERM, as an orchestrator stops it: it finishes its batch, commits, leaves the
    /// group and exits 0.
    pub async fn terminate(mut self) {
        self.signal("TERM");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("dho-router stopped within 30 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "dho-router exited with {exit}");
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Every record now on `topic` (all partitions, up to each high watermark).
pub fn read_topic(settings: &KafkaSettings, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = settings
        .client_config(&[
            ("group.id", "dho-tests-reader"),
            ("enable.auto.commit", "false"),
        ])
        .unwrap()
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return vec![];
    };
    let mut list = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in meta.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > low {
            remaining.insert(p.id(), high);
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    if remaining.is_empty() {
        return vec![];
    }
    consumer.assign(&list).unwrap();
    let mut records = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // Transaction markers, aborted records and compacted gaps take offsets that no
            // record is handed over for: the reader's position tells when the end is passed.
            if let Ok(position) = consumer.position() {
                for e in position.elements() {
                    if let Offset::Offset(next) = e.offset()
                        && next >= remaining.get(&e.partition()).copied().unwrap_or(i64::MAX)
                    {
                        remaining.remove(&e.partition());
                    }
                }
            }
            continue;
        };
        let message = message.unwrap();
        if message.offset() + 1 >= remaining.get(&message.partition()).copied().unwrap_or(0) {
            remaining.remove(&message.partition());
        }
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    records
}

/// How many records `topic` holds now (sum of high watermarks), without reading them.
pub fn read_topic_sizes(settings: &KafkaSettings, topic: &str) -> i64 {
    let consumer: BaseConsumer = settings.client_config(&[]).unwrap().create().unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return 0;
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .filter_map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .ok()
        })
        .map(|(low, high)| high - low)
        .sum()
}

/// Decodes every record of `topic` as `T`.
pub async fn read_decoded<T: AvroRecord>(settings: &KafkaSettings, topic: &str) -> Vec<T> {
    let serde = dho_kafka::AvroSerde::new(&settings.schema_registry_url);
    let mut out = vec![];
    for record in read_topic(settings, topic) {
        out.push(
            serde
                .decode::<T>(&record.value.expect("a value"))
                .await
                .expect("decodes"),
        );
    }
    out
}

/// Waits until `topic` holds at least `count` records, and returns them decoded.
pub async fn wait_for<T: AvroRecord>(
    settings: &KafkaSettings,
    topic: &str,
    count: usize,
) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = read_decoded::<T>(settings, topic).await;
        if records.len() >= count {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} records on {topic}; found {}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_routed`] for a record the publisher wrote.
pub async fn wait_receipt_routed(
    settings: &KafkaSettings,
    group: &str,
    receipt: &dho_publisher::Receipt,
) {
    wait_routed(
        settings,
        group,
        &receipt.topic,
        receipt.partition,
        receipt.offset,
    )
    .await
}

/// Waits until the router group has committed past `offset` on `topic`/`partition`: every
/// output of that record is acknowledged by then.
pub async fn wait_routed(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .unwrap()
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = consumer
            .committed_offsets(list.clone(), Duration::from_secs(10))
            .unwrap();
        if let Some(Offset::Offset(next)) = committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
            && next > offset
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "router never committed past {topic}/{partition}@{offset}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
