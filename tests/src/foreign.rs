//! The integrator examples (`examples/`) as the programs they are: Python in the venv and
//! Java from the jar that `./dev test` prepares (`DHO_EXAMPLES_PYTHON`,
//! `DHO_EXAMPLES_JAVA_JAR`). A missing one fails the test with what to run, never skips it.
//! Each program's stderr goes to a log file of the test's own, removed when it passes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// How long one example may run: each is a few seconds of work.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A test's examples and their logs.
#[derive(Debug)]
pub struct Examples {
    python: PathBuf,
    jar: PathBuf,
    logs: PathBuf,
    passed: bool,
}

/// What `./dev test` prepared, or a panic naming what is missing and how to get it.
fn prepared_path(var: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: {what} is prepared by `./dev test`; run the tests through it")
    });
    assert!(
        path.exists(),
        "{what} is missing at {} ({var}): `./dev test` prepares it",
        path.display()
    );
    path
}

impl Examples {
    /// The examples as `./dev test` prepared them, with a fresh log folder.
    pub fn prepared() -> Self {
        let logs = std::env::temp_dir().join(format!("dho-examples-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            python: prepared_path("DHO_EXAMPLES_PYTHON", "the Python examples' venv"),
            jar: prepared_path("DHO_EXAMPLES_JAVA_JAR", "the Java example's jar"),
            logs,
            passed: false,
        }
    }

    /// `examples/<example>/<script>` with the venv's Python.
    pub fn python(&self, example: &str, script: &str) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg("-u")
            .arg(
                crate::crate_dir()
                    .join("../examples")
                    .join(example)
                    .join(script),
            )
            // No __pycache__ written into the clone.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        command
    }

    /// The Java example's `no.dho.examples.<class>`, its clients logging warnings only.
    pub fn java(&self, class: &str) -> Command {
        let mut command = Command::new("java");
        command
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(&self.jar)
            .arg(format!("no.dho.examples.{class}"));
        command
    }

    /// The log file of the program called `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `command` as `name` with `stdin` written to it, stdout piped, stderr to its log.
    pub async fn spawn(&self, mut command: Command, name: &str, stdin: &str) -> Child {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log(name)).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child
    }

    /// Waits for `child` (started as `name`) to exit 0 and returns its stdout; else panics
    /// with the end of its log.
    pub async fn finish(&self, child: Child, name: &str) -> String {
        let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish within {RUN_LIMIT:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            panic!(
                "{name} failed ({}); stdout:\n{stdout}\nend of its log:\n{}",
                output.status,
                self.log_tail(name)
            );
        }
        stdout
    }

    /// [`spawn`](Self::spawn) and [`finish`](Self::finish).
    pub async fn run(&self, command: Command, name: &str, stdin: &str) -> String {
        let child = self.spawn(command, name, stdin).await;
        self.finish(child, name).await
    }

    /// The last 4,000 characters of `name`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
        let start = text.len().saturating_sub(4_000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// Every log so far, for a leak scan.
    pub fn all_logs(&self) -> String {
        std::fs::read_dir(&self.logs)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The test passed: its logs go.
    pub fn passed(mut self) {
        self.passed = true;
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

impl Drop for Examples {
    fn drop(&mut self) {
        if !self.passed {
            eprintln!("the examples' logs are kept in {}", self.logs.display());
        }
    }
}

/// The lines of `stdout` that start with `word`, split into their remaining fields.
pub fn lines_of<'a>(stdout: &'a str, word: &str) -> Vec<Vec<&'a str>> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(word)).then(|| fields.collect())
        })
        .collect()
}
