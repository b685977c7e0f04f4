use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::DedupStore;
use crate::Result;

/// Handled delivery ids in a SQLite file, so duplicates are dropped across restarts.
///
/// The table is `dho_handled_deliveries(delivery_id TEXT PRIMARY KEY, handled_at INTEGER)`.
/// An application that keeps its own data in SQLite should put the table in the same
/// database and record the id in the same transaction as its effect
/// ([`SqliteStore::mark_handled`]): then effect and id commit together and no crash can
/// split them.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// Ids handled longer ago than this are pruned (see [`SqliteStore::keep_for`]).
    keep: Option<Duration>,
    next_prune: Instant,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS dho_handled_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    handled_at INTEGER NOT NULL
) WITHOUT ROWID";

impl SqliteStore {
    /// Opens (creating if needed) the store in the SQLite file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open(path)?;
        // WAL lets the application write the same file from its own connection; FULL
        // makes each insert durable (fsync) before the offset is committed.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Self::create_table(&conn)?;
        Ok(Self {
            conn,
            keep: None,
            next_prune: Instant::now(),
        })
    }

    /// Prunes ids handled longer than `keep` ago, now and then as ids are inserted (about
    /// ten times per `keep`, at most hourly), so the file does not grow without end.
    /// None keeps every id.
    pub fn keep_for(mut self, keep: Option<Duration>) -> Result<Self> {
        self.keep = keep;
        self.prune_if_due()?;
        Ok(self)
    }

    fn prune_if_due(&mut self) -> Result<()> {
        let Some(keep) = self.keep else {
            return Ok(());
        };
        let now = Instant::now();
        if now < self.next_prune {
            return Ok(());
        }
        let keep_millis = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        self.prune_before(dho_schemas::model::now_millis().saturating_sub(keep_millis))?;
        let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        self.next_prune = now + every;
        Ok(())
    }

    /// Creates the store's table in `conn`'s database if it is missing. Call it in the
    /// application's own database before using [`SqliteStore::mark_handled`].
    pub fn create_table(conn: &Connection) -> Result<()> {
        conn.execute_batch(SCHEMA)?;
        Ok(())
    }

    /// Records `delivery_id` as handled through the application's own connection or
    /// transaction (a `rusqlite::Transaction` derefs to a `Connection`). Returns false if
    /// it was already recorded: the effect in the same transaction is then a duplicate and
    /// the application should roll it back or skip it.
    pub fn mark_handled(conn: &Connection, delivery_id: &str) -> Result<bool> {
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO dho_handled_deliveries (delivery_id, handled_at) \
             VALUES (?1, ?2)",
            params![delivery_id, dho_schemas::model::now_millis()],
        )?;
        Ok(inserted == 1)
    }

    /// Forgets ids handled before `millis` (epoch). A router replays only batches it had
    /// not committed, so ids older than the longest router outage can go.
    pub fn prune_before(&mut self, millis: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM dho_handled_deliveries WHERE handled_at < ?1",
            params![millis],
        )?)
    }
}

impl DedupStore for SqliteStore {
    fn contains(&mut self, delivery_id: &str) -> Result<bool> {
        let found = self
            .conn
            .prepare_cached("SELECT 1 FROM dho_handled_deliveries WHERE delivery_id = ?1")?
            .query_row(params![delivery_id], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    fn insert(&mut self, delivery_id: &str) -> Result<()> {
        Self::mark_handled(&self.conn, delivery_id)?;
        self.prune_if_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.db");
        let mut store = SqliteStore::open(&path).unwrap();
        assert!(!store.contains("d-1").unwrap());
        store.insert("d-1").unwrap();
        store.insert("d-1").unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path).unwrap();
        assert!(store.contains("d-1").unwrap());
        assert!(!store.contains("d-2").unwrap());
    }

    #[test]
    fn ids_older_than_the_window_are_pruned_and_recent_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.db");
        let store = SqliteStore::open(&path).unwrap();
        let now = dho_schemas::model::now_millis();
        for (id, age_millis) in [("old", 7_200_000), ("recent", 60_000)] {
            store
                .conn
                .execute(
                    "INSERT INTO dho_handled_deliveries VALUES (?1, ?2)",
                    params![id, now - age_millis],
                )
                .unwrap();
        }
        // Opened with a one-hour window: pruned at once.
        let mut store = store.keep_for(Some(Duration::from_secs(3600))).unwrap();
        assert!(!store.contains("old").unwrap(), "handled two hours ago");
        assert!(store.contains("recent").unwrap(), "handled a minute ago");
        // No window: nothing is pruned.
        store
            .conn
            .execute(
                "INSERT INTO dho_handled_deliveries VALUES ('old', ?1)",
                params![now - 7_200_000],
            )
            .unwrap();
        let mut store = store.keep_for(None).unwrap();
        store.insert("new").unwrap();
        assert!(store.contains("old").unwrap());
    }

    #[test]
    fn an_application_transaction_records_the_id_with_its_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let mut app = Connection::open(&path).unwrap();
        SqliteStore::create_table(&app).unwrap();
        app.execute_batch("CREATE TABLE rows (v TEXT)").unwrap();

        // Rolled back: neither the row nor the id.
        let tx = app.transaction().unwrap();
        tx.execute("INSERT INTO rows VALUES ('a')", []).unwrap();
        assert!(SqliteStore::mark_handled(&tx, "d-1").unwrap());
        drop(tx);
        let mut store = SqliteStore::open(&path).unwrap();
        assert!(!store.contains("d-1").unwrap());

        let tx = app.transaction().unwrap();
        tx.execute("INSERT INTO rows VALUES ('a')", []).unwrap();
        assert!(SqliteStore::mark_handled(&tx, "d-1").unwrap());
        tx.commit().unwrap();
        assert!(store.contains("d-1").unwrap());
        assert!(!SqliteStore::mark_handled(&app, "d-1").unwrap());
    }
}
