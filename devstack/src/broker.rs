use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{Error, NISSHI_VERSION, Result};

/// Where expensive installs live: outside the clone, so a fresh clone on the same machine
/// reuses them. `DHO_CACHE_DIR` overrides `$HOME/.cache/dho`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DHO_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("dho")
}

/// The pinned broker binary: `DHO_NISSHI_BIN`, or the cache's install of [`NISSHI_VERSION`].
pub fn broker_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DHO_NISSHI_BIN") {
        return PathBuf::from(bin);
    }
    cache_dir()
        .join(format!("nisshi-{NISSHI_VERSION}"))
        .join("bin")
        .join("nisshi")
}

/// How the broker keeps its records.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Fast, lost when the process stops: the default for tests.
    Memory,
    /// Kept in a SQLite file across broker restarts (crash tests, the demo).
    Sqlite(PathBuf),
}

/// Options for [`Broker::start`].
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub storage: Storage,
    /// Port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// How long to wait for the broker to answer metadata requests.
    pub ready_timeout: Duration,
    /// The broker binary; `None` means [`broker_binary`].
    pub binary: Option<PathBuf>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            storage: Storage::Memory,
            port: None,
            ready_timeout: Duration::from_secs(30),
            binary: None,
        }
    }
}

/// A running broker process; stopped (killed) when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    options: BrokerOptions,
    // Holds the broker's log file (and, for temporary storage, nothing else) alive.
    workdir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with memory storage on a free loopback port.
    pub fn start_default() -> Result<Self> {
        Self::start(BrokerOptions::default())
    }

    /// Starts a broker and waits until it answers metadata requests.
    pub fn start(options: BrokerOptions) -> Result<Self> {
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let workdir = tempfile::Builder::new().prefix("dho-broker-").tempdir()?;
        let mut broker = Self {
            child: None,
            port,
            options,
            workdir,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker process's id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's own log, for error messages.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.path().join("broker.log")
    }

    /// Kills the broker hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the broker again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let binary = self.options.binary.clone().unwrap_or_else(broker_binary);
        if !binary.is_file() {
            return Err(Error::NotInstalled {
                path: binary.display().to_string(),
                version: NISSHI_VERSION,
            });
        }
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        // nisshi resolves a sqlite URL's path against its working directory, so it runs in
        // the database's directory and is given the file name.
        let (storage, workdir) = match &self.options.storage {
            Storage::Memory => (
                "memory://nisshi/".to_string(),
                self.workdir.path().to_path_buf(),
            ),
            Storage::Sqlite(path) => {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (format!("sqlite://{file}"), dir.to_path_buf())
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(&binary);
        command
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &storage])
            // Tests form groups of one or two members: do not wait 3 s for more to join.
            .args(["--group-initial-rebalance-delay", "100ms"])
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The broker reads these from the environment; ours must not leak into it.
        for var in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
        ] {
            command.env_remove(var);
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            path: binary.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(Error::ExitedEarly {
                    status: status.to_string(),
                    log: tail(&self.log_path()),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.answers_metadata()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(Error::NotReady {
                    seconds: self.options.ready_timeout.as_secs(),
                    log: tail(&self.log_path()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answers_metadata(&self) -> bool {
        let consumer: Result<BaseConsumer, _> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("log_level", "3")
            .create();
        consumer
            .map(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
            .unwrap_or(false)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
