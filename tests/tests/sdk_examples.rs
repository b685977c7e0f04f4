//! The consumer SDK's examples, run as the programs they are against the real broker:
//! the home-care journal killed with SIGKILL mid-stream several times while a replaying
//! router re-sends deliveries ends with every delivery journaled exactly once; the GP
//! alert console prints the alerts, with pseudonyms only.
//!
//! The examples are built by `dho_tests::sdk::example` (see there why and how).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dho_consumer::rusqlite::{Connection, OpenFlags};
use dho_schemas::model::VkpSeverity;
use dho_tests::Stack;
use dho_tests::sdk::{
    DeliveryWriter, alert_delivery, committed, example, example_args, high_watermarks,
    measurement_delivery,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const HOME: &str = "bergen-home-care";
const GP: &str = "sentrum-gp";

fn spawn_journal(settings: &dho_kafka::KafkaSettings, db: &Path) -> Child {
    Command::new(example("home_care_journal"))
        .args(example_args(settings, HOME))
        .arg("--db")
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the journal example starts")
}

/// Rows in the journal (0 before the example created it).
fn journal_rows(db: &Path) -> i64 {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap_or(0)
}

async fn wait_rows(db: &Path, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while journal_rows(db) < at_least {
        assert!(
            Instant::now() < deadline,
            "the journal never reached {at_least} rows (has {})",
            journal_rows(db)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_the_journal_survives_sigkill_and_replays_with_every_delivery_exactly_once() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let topic = settings.topics().deliver(HOME);
    let dir = std::env::temp_dir().join(format!("dho-journal-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("journal.db");
    let writer = DeliveryWriter::new(&settings, HOME).await;

    const ROUNDS: i64 = 4;
    const PER_ROUND: i64 = 40;
    let deliveries: Vec<_> = (0..ROUNDS * PER_ROUND)
        .map(|i| measurement_delivery(&settings, HOME, (i % 5) as u64 + 1, i))
        .collect();
    let mut kills_mid_stream = 0;
    for round in 0..ROUNDS as usize {
        let mut child = spawn_journal(&settings, &db);
        let before = journal_rows(&db);
        // This round's deliveries, and the previous round's again with the same ids, as a
        // router replaying an uncommitted batch would send them, written while the
        // journal runs.
        let batch = &deliveries[round * PER_ROUND as usize..(round + 1) * PER_ROUND as usize];
        let replay = if round > 0 {
            &deliveries[(round - 1) * PER_ROUND as usize..round * PER_ROUND as usize]
        } else {
            &[][..]
        };
        for (i, d) in batch.iter().enumerate() {
            writer.send(d).await;
            if let Some(r) = replay.get(i) {
                writer.send(r).await;
            }
        }
        // Kill it as soon as it has made progress, mid-stream as far as it knows.
        wait_rows(&db, before + 5).await;
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "killed, not finished: {status:?}");
        let rows = journal_rows(&db);
        if rows < (round as i64 + 1) * PER_ROUND {
            kills_mid_stream += 1;
        }
        eprintln!("round {round}: killed at {rows} rows");
    }
    assert!(kills_mid_stream > 0, "no kill landed mid-stream");

    // The last round's deliveries are replayed once more; then a final run drains it all
    // and is stopped gracefully.
    for d in &deliveries[((ROUNDS - 1) * PER_ROUND) as usize..] {
        writer.send(d).await;
    }
    let mut child = spawn_journal(&settings, &db);
    wait_rows(&db, ROUNDS * PER_ROUND).await;
    let end = high_watermarks(&settings, &topic);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let offsets = committed(&settings, "dho-subscriber-bergen-home-care", &topic);
        let done = offsets
            .iter()
            .zip(&end)
            .all(|(c, &hw)| hw == 0 || *c == Some(hw));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all committed: {offsets:?} of {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "the journal exited cleanly: {status:?}");

    let conn = Connection::open(&db).unwrap();
    let journaled: Vec<(String, String)> = conn
        .prepare("SELECT delivery_id, event_id FROM journal")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ids: BTreeSet<_> = journaled.iter().map(|(d, _)| d.clone()).collect();
    let events: BTreeSet<_> = journaled.iter().map(|(_, e)| e.clone()).collect();
    let expected: BTreeSet<_> = deliveries.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(journaled.len(), deliveries.len(), "no row lost or doubled");
    assert_eq!(ids, expected, "every delivery, once");
    assert_eq!(events.len(), deliveries.len(), "every reading, once");
    let marked: i64 = conn
        .query_row("SELECT COUNT(*) FROM dho_handled_deliveries", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(marked, deliveries.len() as i64);
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_the_gp_alert_console_prints_each_alert_with_a_pseudonym() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let writer = DeliveryWriter::new(&settings, GP).await;
    let severe = alert_delivery(&settings, GP, 7, 0, VkpSeverity::Severe);
    let reading = measurement_delivery(&settings, GP, 7, 1);
    let critical = alert_delivery(&settings, GP, 8, 2, VkpSeverity::Critical);
    for d in [&severe, &reading, &critical] {
        writer.send(d).await;
    }
    // The same alert re-sent by a replaying router is printed once.
    writer.send(&severe).await;

    let mut child = Command::new(example("gp_alert_console"))
        .args(example_args(&settings, GP))
        .args(["--from", "earliest"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the console starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut alerts = vec![];
    // Both alerts within a minute, then a few quiet seconds in which a duplicate would show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = if alerts.len() >= 2 {
            tokio::time::Instant::now() + Duration::from_secs(3)
        } else {
            deadline
        };
        match tokio::time::timeout_at(quiet, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("ALERT") => alerts.push(line),
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("the console ended: {other:?}"),
            Err(_) => break,
        }
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;

    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let (first, second) = if alerts[0].contains("alert=alert-0") {
        (&alerts[0], &alerts[1])
    } else {
        (&alerts[1], &alerts[0])
    };
    assert!(first.contains("severity=Severe") && first.contains("zone=Red"));
    assert!(first.contains("reading=86%"));
    assert!(second.contains("severity=Critical") && second.contains("alert=alert-2"));
    // Pseudonyms are keyed per process (unless DHO_LOG_PSEUDONYM_KEY is shared), so only
    // their form and that they tell the two patients apart can be checked from here.
    let tag = |line: &str| {
        let tag = line.split("patient=").nth(1).unwrap()[..12].to_string();
        assert!(tag.starts_with("p-") && tag[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        tag
    };
    assert_ne!(tag(first), tag(second));
    let (severe_patient, critical_patient) = (&severe.patient, &critical.patient);
    for line in &alerts {
        assert!(!line.contains(severe_patient.key()) && !line.contains(critical_patient.key()));
    }
}
