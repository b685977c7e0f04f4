//! Bearer-token authentication. Each device platform and each care organisation has its
//! own token; the config holds only its SHA-256.
//!
//! Why a plain SHA-256 and not a password hash (argon2, bcrypt): the tokens are machine
//! credentials of 256 random bits (`dho-admin token` makes them), not human passwords.
//! Nobody can guess or brute-force a preimage of such a token, so a slow, salted hash buys
//! nothing, while a fast one keeps authentication off the hot path's profile. A leaked
//! config file still reveals no usable token.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use dho_schemas::OrganisationIdentifier;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::GatewayConfig;

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// A device platform: may publish readings and self-reports as itself.
    Platform {
        /// The operator-given name (for logs and audit; not a secret).
        name: String,
        org: OrganisationIdentifier,
    },
    /// A care organisation: may record consent and care plans (as itself) and manage its
    /// own subscriptions.
    CareOrganisation {
        /// The operator-given name (for logs and audit; not a secret).
        name: String,
        org: OrganisationIdentifier,
        subscriber_ids: Vec<String>,
    },
    /// The patient's own channel: a patient portal's integration (such as a national
    /// portal's), recording consent on behalf of the patient who signed in there. May
    /// record any consent change for any patient; nothing else.
    PatientChannel {
        /// The operator-given name (for logs and audit; not a secret).
        name: String,
        /// The portal operator's organisation (the recorder of the consents it sends).
        org: OrganisationIdentifier,
    },
}

impl Principal {
    pub fn org(&self) -> &OrganisationIdentifier {
        match self {
            Principal::Platform { org, .. }
            | Principal::CareOrganisation { org, .. }
            | Principal::PatientChannel { org, .. } => org,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Principal::Platform { name, .. }
            | Principal::CareOrganisation { name, .. }
            | Principal::PatientChannel { name, .. } => name,
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Platform { .. } => "platform",
            Principal::CareOrganisation { .. } => "care_organisation",
            Principal::PatientChannel { .. } => "patient_channel",
        }
    }
}

/// Why a request was not authenticated (always 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that matches no credential.
    Unknown,
}

impl AuthFailure {
    /// A bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::Unknown => "unknown_token",
        }
    }
}

/// The known credentials, by token hash.
#[derive(Debug, Clone)]
pub struct Credentials {
    entries: Vec<([u8; 32], Principal)>,
}

impl Credentials {
    /// Checks every credential of the config: hashes are 64 hex digits, organisation
    /// numbers valid, subscriber ids topic-safe, no hash used twice.
    pub fn from_config(config: &GatewayConfig) -> Result<Self, Error> {
        let mut entries: Vec<([u8; 32], Principal)> = vec![];
        let org = |name: &str, orgnr: &str| {
            let org = OrganisationIdentifier::orgnr(orgnr, name);
            dho_schemas::validate::organisation("orgnr", &org)
                .map_err(|e| Error::Config(format!("credential '{name}': {e}")))?;
            Ok::<_, Error>(org)
        };
        let hash = |name: &str, hex: &str| {
            parse_hex32(hex).ok_or_else(|| {
                Error::Config(format!(
                    "credential '{name}': token_sha256 must be 64 hex digits"
                ))
            })
        };
        for p in &config.platforms {
            entries.push((
                hash(&p.name, &p.token_sha256)?,
                Principal::Platform {
                    name: p.name.clone(),
                    org: org(&p.name, &p.orgnr)?,
                },
            ));
        }
        // A subscriber id names a delivery topic: two credentials listing one would read
        // each other's deliveries and manage each other's subscriptions.
        let mut subscriber_ids: BTreeMap<&str, &str> = BTreeMap::new();
        for c in &config.care_organisations {
            for id in &c.subscriber_ids {
                dho_schemas::validate::subscriber_id(id)
                    .map_err(|e| Error::Config(format!("credential '{}': {e}", c.name)))?;
                if let Some(first) = subscriber_ids.insert(id, &c.name) {
                    return Err(Error::Config(format!(
                        "credentials '{first}' and '{}' both list subscriber id '{id}': a \
                         subscriber id (and its delivery topic) belongs to one credential",
                        c.name
                    )));
                }
            }
            entries.push((
                hash(&c.name, &c.token_sha256)?,
                Principal::CareOrganisation {
                    name: c.name.clone(),
                    org: org(&c.name, &c.orgnr)?,
                    subscriber_ids: c.subscriber_ids.clone(),
                },
            ));
        }
        for c in &config.patient_channels {
            entries.push((
                hash(&c.name, &c.token_sha256)?,
                Principal::PatientChannel {
                    name: c.name.clone(),
                    org: org(&c.name, &c.orgnr)?,
                },
            ));
        }
        for (i, (h, p)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(other, _)| other == h) {
                return Err(Error::Config(format!(
                    "credential '{}' reuses another credential's token",
                    p.name()
                )));
            }
        }
        Ok(Self { entries })
    }

    /// The principal behind the request's bearer token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Principal, AuthFailure> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let presented = sha256(token);
        // Every credential is compared, each in constant time, so the answer's timing
        // tells nothing about which (or how much of a) hash matched.
        let mut found = None;
        for (hash, principal) in &self.entries {
            if constant_time_eq(hash, &presented) && found.is_none() {
                found = Some(principal);
            }
        }
        found.ok_or(AuthFailure::Unknown)
    }
}

/// SHA-256 of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hex SHA-256 of a token, as the config file holds it.
pub fn hash_token(token: &str) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, URL-safe hex) for a platform or organisation.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CareOrganisationCredential, PlatformCredential};
    use axum::http::HeaderValue;
    use dho_kafka::KafkaSettings;
    use dho_schemas::fixtures;

    fn config(token_a: &str, token_b: &str) -> GatewayConfig {
        let mut config = GatewayConfig::new(KafkaSettings::new("x:1", "http://x"));
        config.platforms.push(PlatformCredential {
            name: "a".into(),
            orgnr: fixtures::platform().value,
            token_sha256: hash_token(token_a),
        });
        config.care_organisations.push(CareOrganisationCredential {
            name: "b".into(),
            orgnr: fixtures::home_care().value,
            token_sha256: hash_token(token_b).to_uppercase(),
            subscriber_ids: vec!["bergen-home-care".into()],
        });
        config
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_map_to_their_principals_and_others_are_refused() {
        let (a, b) = (new_token(), new_token());
        let creds = Credentials::from_config(&config(&a, &b)).unwrap();
        assert_eq!(creds.authenticate(&bearer(&a)).unwrap().kind(), "platform");
        assert!(
            creds
                .authenticate(&bearer(&b))
                .unwrap()
                .org()
                .same_entity(&fixtures::home_care())
        );
        assert_eq!(
            creds.authenticate(&bearer(&new_token())),
            Err(AuthFailure::Unknown)
        );
        assert_eq!(
            creds.authenticate(&HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(creds.authenticate(&basic), Err(AuthFailure::Missing));
    }

    #[test]
    fn bad_hashes_orgnrs_and_reused_tokens_are_config_errors() {
        let mut c = config("x", "y");
        c.platforms[0].token_sha256 = "abc".into();
        assert!(Credentials::from_config(&c).is_err());
        let mut c = config("x", "y");
        c.platforms[0].orgnr = "123456789".into();
        assert!(Credentials::from_config(&c).is_err());
        let c = config("same", "same");
        assert!(Credentials::from_config(&c).is_err());
        let mut c = config("x", "y");
        c.care_organisations[0].subscriber_ids = vec!["Not Safe".into()];
        assert!(Credentials::from_config(&c).is_err());
    }

    #[test]
    fn a_subscriber_id_listed_by_two_credentials_is_a_config_error_naming_both() {
        let mut c = config("x", "y");
        let mut second = c.care_organisations[0].clone();
        second.name = "c".into();
        second.token_sha256 = hash_token("z");
        second.subscriber_ids = vec!["own".into(), "bergen-home-care".into()];
        c.care_organisations.push(second);
        let Err(Error::Config(message)) = Credentials::from_config(&c) else {
            panic!("a shared subscriber id was accepted");
        };
        assert!(
            message.contains("'b' and 'c'") && message.contains("'bergen-home-care'"),
            "{message}"
        );
        // Listed twice by one credential: the same mistake.
        let mut c = config("x", "y");
        c.care_organisations[0]
            .subscriber_ids
            .push("bergen-home-care".into());
        assert!(Credentials::from_config(&c).is_err());
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
