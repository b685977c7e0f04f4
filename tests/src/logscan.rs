//! What must never appear in a log line, and a scanner that finds it: a national identity
//! number shape (fødselsnummer or D-nummer: a run of exactly 11 digits), any of the
//! patient numbers a run used (also split as `DDMMYY NNNNN`), and any bearer token the run
//! used or anything that looks like an `Authorization: Bearer` value.

/// Looks for leaks in log lines.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    identifiers: Vec<String>,
    secrets: Vec<String>,
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Patient numbers used in the run.
    pub fn identifiers(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.identifiers.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Tokens (and other secrets) used in the run.
    pub fn secrets(mut self, secrets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.secrets.extend(secrets.into_iter().map(Into::into));
        self
    }

    /// What `line` leaks, if anything (a description, not the value).
    pub fn leak(&self, line: &str) -> Option<String> {
        for id in &self.identifiers {
            if line.contains(id.as_str()) {
                return Some("a patient number of the run".into());
            }
            if id.len() == 11 && line.contains(&format!("{} {}", &id[..6], &id[6..])) {
                return Some("a patient number of the run, split".into());
            }
        }
        for secret in &self.secrets {
            if line.contains(secret.as_str()) {
                return Some("a token of the run".into());
            }
        }
        if eleven_digit_run(line) {
            return Some("an 11-digit number (fødselsnummer or D-nummer shape)".into());
        }
        if bearer_value(line) {
            return Some("a bearer credential".into());
        }
        None
    }

    /// Every leaking line of `text`, with what it leaks.
    pub fn scan<'a>(&self, text: &'a str) -> Vec<(String, &'a str)> {
        text.lines()
            .filter_map(|line| self.leak(line).map(|what| (what, line)))
            .collect()
    }
}

/// A run of exactly 11 ASCII digits (a longer run, such as a timestamp in microseconds, is
/// not an identity number), unless it is part of a hexadecimal string of 32 or more (a
/// UUID without dashes or a hash: one in twenty random UUIDs has such a run).
pub fn eleven_digit_run(line: &str) -> bool {
    let bytes = line.as_bytes();
    let mut run = 0;
    for (at, b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        if b.is_ascii_digit() {
            run += 1;
            continue;
        }
        if run == 11 && !in_long_hex(bytes, at - 11, at) {
            return true;
        }
        run = 0;
    }
    false
}

/// Whether `bytes[start..end]` lies in a run of 32 or more hexadecimal digits.
fn in_long_hex(bytes: &[u8], start: usize, end: usize) -> bool {
    let before = bytes[..start]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    let after = bytes[end..]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    before + (end - start) + after >= 32
}

/// `Bearer ` (any case) followed by at least 16 token characters.
pub fn bearer_value(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.match_indices("bearer").any(|(at, word)| {
        let rest = line[at + word.len()..].trim_start_matches([' ', ':', '=', '"']);
        rest.bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b))
            .count()
            >= 16
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    fn scanner() -> Scanner {
        Scanner::new()
            .identifiers([fixtures::patient(7).value])
            .secrets(["test-platform-token-0123456789abcdef"])
    }

    #[test]
    fn planted_leaks_are_caught() {
        let id = fixtures::patient(7).value;
        let s = scanner();
        for planted in [
            format!(r#"{{"level":"INFO","fields":{{"patient":"{id}"}}}}"#),
            format!(r#"{{"fields":{{"key":"{id}|consent-1"}}}}"#),
            format!("patient {} {} refused", &id[..6], &id[6..]),
            // Not a number of the run, but shaped like one.
            r#"{"fields":{"message":"bad patient 01018012345"}}"#.to_string(),
            r#"{"fields":{"message":"x=01018012345"}}"#.to_string(),
            "01018012345".to_string(),
            // Next to letters, but not in a UUID or a hash.
            r#"{"fields":{"message":"fnr01018012345"}}"#.to_string(),
            r#"{"fields":{"id":"abcdef01018012345"}}"#.to_string(),
            r#"{"fields":{"token":"test-platform-token-0123456789abcdef"}}"#.to_string(),
            r#"{"fields":{"authorization":"Bearer abcdefghijklmnop1234"}}"#.to_string(),
            "authorization: bearer eyJhbGciOiJIUzI1NiJ9.e30".to_string(),
        ] {
            assert!(s.leak(&planted).is_some(), "missed: {planted}");
        }
        let text = format!("clean\n{{\"patient\":\"{id}\"}}\nclean");
        assert_eq!(s.scan(&text).len(), 1);
    }

    #[test]
    fn ordinary_log_lines_are_clean() {
        let s = scanner();
        for clean in [
            r#"{"timestamp":"2026-01-01T10:00:00.123456Z","level":"INFO","fields":{"message":"router connected","group":"dho-router"}}"#,
            r#"{"fields":{"patient":"p-5f67baef21","delivery_id":"6a1f4c2e-9d3b-4e8a-a5c7-123456789012"}}"#,
            r#"{"fields":{"received_time":1767225600123,"offset":41,"orgnr":"964000012"}}"#,
            r#"{"fields":{"message":"request refused by authentication or authorisation","reason":"unknown_token"}}"#,
            r#"{"fields":{"message":"WWW-Authenticate: Bearer"}}"#,
            "1234567890 12345678901234",
            // A random topic suffix (a UUID without dashes) with an 11-digit run in it.
            r#"{"fields":{"topic":"_schemas-7e53a0180e0446e78ee37614106501fc"}}"#,
        ] {
            assert_eq!(s.leak(clean), None, "{clean}");
        }
    }
}
