//! Observable events, after vector's `internal_events`: one type per thing a service
//! reports, whose [`emit`](InternalEvent::emit) writes its log line (at its level,
//! throttled where a flood is possible) and updates its metrics together. A site then
//! cannot count without logging, or log without counting, and the two never drift apart.
//!
//! Each service keeps its events in one module (`dho_router::events`,
//! `dho_gateway::events`, `dho_consumer::events`); the metric names stay in
//! [`crate::names`]. A patient reaches an event only as a [`Pseudonym`](crate::Pseudonym):
//! no event has a string field for one, so an identifier cannot reach a log line by
//! construction.

/// One thing a service reports: emitting it logs and counts.
pub trait InternalEvent: Sized {
    fn emit(self);
}

/// A frequent event whose metric handles are resolved once, when the service starts
/// (vector's registered events): `counter!` with labels hashes its key on every call, too
/// slow per delivery. The handle is made while the metrics recorder is installed.
pub trait RegisteredEvent {
    /// What one occurrence says (for example which reason or category).
    type Data;
    fn emit(&self, data: Self::Data);
}

#[cfg(any(test, feature = "testing"))]
pub use capture::{Observed, capture};

#[cfg(any(test, feature = "testing"))]
mod capture {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// What a closure's events wrote and counted.
    #[derive(Debug)]
    pub struct Observed {
        /// Every log line, at trace level and up, without colours.
        pub logs: String,
        /// The metrics as Prometheus renders them.
        pub metrics: String,
    }

    impl Observed {
        /// The value of the series `name` whose labels include `labels` (the first such
        /// series), or `None` if there is none.
        pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            self.metrics.lines().find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let rest = series.strip_prefix(name)?;
                let labelled = rest.is_empty() || rest.starts_with('{');
                let has_labels = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (labelled && has_labels).then(|| value.parse().ok())?
            })
        }

        /// The log lines holding `text`.
        pub fn lines_with(&self, text: &str) -> usize {
            self.logs.lines().filter(|l| l.contains(text)).count()
        }
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `emit` with a recorder and a log subscriber of its own (on this thread only,
    /// so tests run in parallel), and returns what it logged and counted.
    pub fn capture(emit: impl FnOnce()) -> Observed {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            metrics::with_local_recorder(&recorder, emit)
        });
        let logs = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        Observed {
            logs,
            metrics: handle.render(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pseudonym;
    use dho_schemas::model::PatientIdentifier;

    /// An event as services write them: a pseudonym, a bounded label, a count.
    struct Seen {
        patient: Pseudonym,
        reason: &'static str,
    }

    impl InternalEvent for Seen {
        fn emit(self) {
            metrics::counter!(crate::names::router::WITHHELD, "reason" => self.reason).increment(1);
            tracing::info!(patient = %self.patient, reason = self.reason, "seen");
        }
    }

    #[test]
    fn an_event_logs_its_pseudonym_and_counts_under_its_label() {
        let patient = PatientIdentifier::fnr("01010101006");
        let seen = capture(|| {
            for _ in 0..2 {
                Seen {
                    patient: Pseudonym::from(&patient),
                    reason: "no_consent",
                }
                .emit();
            }
        });
        assert_eq!(seen.lines_with("seen"), 2, "{}", seen.logs);
        assert_eq!(seen.lines_with(&patient.log_tag()), 2, "{}", seen.logs);
        assert!(!seen.logs.contains(&patient.value), "{}", seen.logs);
        let withheld = crate::names::router::WITHHELD;
        assert_eq!(seen.value(withheld, &[("reason", "no_consent")]), Some(2.0));
        assert_eq!(seen.value(withheld, &[("reason", "no_subscription")]), None);
    }
}
