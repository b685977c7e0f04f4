//! Norwegian identifiers: fødselsnummer / D-nummer / felles hjelpenummer check digits
//! (including the rule that applies from 2032), organisation numbers, the synthetic test
//! population (Tenor: month + 80, NAV: month + 40), and pseudonyms for logs.

use std::sync::LazyLock;

use rand::Rng;
use sha2::{Digest, Sha256};

const K1_WEIGHTS: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const K2_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
const ORGNR_WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// Why a national identifier was refused. Never carries the number itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be exactly 11 digits")]
    NotElevenDigits,
    #[error("must be exactly 9 digits")]
    NotNineDigits,
    #[error("the date part is not a valid date")]
    BadDate,
    #[error("the first check digit (k1) is wrong")]
    BadK1,
    #[error("the second check digit (k2) is wrong")]
    BadK2,
    #[error("the check digit is wrong")]
    BadCheckDigit,
    #[error("a felles hjelpenummer starts with 8 or 9")]
    NotHelpNumber,
    #[error("synthetic test identities are refused by this deployment")]
    SyntheticRefused,
}

/// What kind of person a valid number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Population {
    /// A real person (or at least not a number from a test population).
    Real,
    /// Skatteetaten's synthetic population (Tenor): month + 80.
    SyntheticTenor,
    /// NAV's test data: month + 40.
    SyntheticNav,
}

fn digits<const N: usize>(value: &str) -> Option<[u32; N]> {
    let bytes = value.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = [0; N];
    for (slot, byte) in out.iter_mut().zip(bytes) {
        *slot = u32::from(byte - b'0');
    }
    Some(out)
}

fn weighted(digits: &[u32], weights: &[u32]) -> u32 {
    digits.iter().zip(weights).map(|(d, w)| d * w).sum()
}

/// The classic mod-11 control digit; `None` where the result is 10 (no valid number).
fn mod11_control(sum: u32) -> Option<u32> {
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

/// Checks both control digits. k1 accepts the classic value and, from the 2032 rule, any of
/// the four values {11,12,13,14} minus the weighted sum, mod 11 (the classic value is one of them).
fn check_digits(d: &[u32; 11]) -> Result<(), IdError> {
    let s = weighted(&d[..9], &K1_WEIGHTS) % 11;
    let k1_ok = (11..=14).any(|base| (base - s) % 11 == d[9]);
    if !k1_ok {
        return Err(IdError::BadK1);
    }
    match mod11_control(weighted(&d[..10], &K2_WEIGHTS)) {
        Some(k2) if k2 == d[10] => Ok(()),
        _ => Err(IdError::BadK2),
    }
}

fn valid_day(day: u32, month: u32) -> bool {
    let max = match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return false,
    };
    (1..=max).contains(&day)
}

/// Validates a fødselsnummer (`dnumber = false`) or D-nummer (`dnumber = true`).
pub fn validate_birth_number(value: &str, dnumber: bool) -> Result<Population, IdError> {
    let d = digits::<11>(value).ok_or(IdError::NotElevenDigits)?;
    let mut day = d[0] * 10 + d[1];
    if dnumber {
        if day < 41 {
            return Err(IdError::BadDate);
        }
        day -= 40;
    }
    let raw_month = d[2] * 10 + d[3];
    let (month, population) = match raw_month {
        81..=92 => (raw_month - 80, Population::SyntheticTenor),
        41..=52 => (raw_month - 40, Population::SyntheticNav),
        m => (m, Population::Real),
    };
    if !valid_day(day, month) {
        return Err(IdError::BadDate);
    }
    check_digits(&d)?;
    Ok(population)
}

/// Validates a felles hjelpenummer: 11 digits, first 8 or 9, mod-11 check digits.
pub fn validate_help_number(value: &str) -> Result<Population, IdError> {
    let d = digits::<11>(value).ok_or(IdError::NotElevenDigits)?;
    if d[0] < 8 {
        return Err(IdError::NotHelpNumber);
    }
    check_digits(&d)?;
    Ok(Population::Real)
}

/// Validates a 9-digit organisation number (Enhetsregisteret, mod-11 with weights 3,2,7,6,5,4,3,2).
pub fn validate_orgnr(value: &str) -> Result<(), IdError> {
    let d = digits::<9>(value).ok_or(IdError::NotNineDigits)?;
    match mod11_control(weighted(&d[..8], &ORGNR_WEIGHTS)) {
        Some(k) if k == d[8] => Ok(()),
        _ => Err(IdError::BadCheckDigit),
    }
}

/// Completes nine digits with the classic check digits; `None` if no valid number exists.
fn complete(first9: [u32; 9]) -> Option<String> {
    let k1 = mod11_control(weighted(&first9, &K1_WEIGHTS))?;
    let mut first10 = [0u32; 10];
    first10[..9].copy_from_slice(&first9);
    first10[9] = k1;
    let k2 = mod11_control(weighted(&first10, &K2_WEIGHTS))?;
    Some(
        first10
            .iter()
            .chain(std::iter::once(&k2))
            .map(|d| char::from(b'0' + *d as u8))
            .collect(),
    )
}

/// A valid synthetic fødselsnummer in Skatteetaten's Tenor form (month + 80): it cannot
/// belong to a real person. Used by the demo, the simulator and the tests.
pub fn synthetic_fnr(rng: &mut impl Rng) -> String {
    loop {
        let day = rng.random_range(1..=28u32);
        let month = rng.random_range(1..=12u32) + 80;
        let year = rng.random_range(0..=99u32);
        let individual = rng.random_range(0..=999u32);
        let first9 = [
            day / 10,
            day % 10,
            month / 10,
            month % 10,
            year / 10,
            year % 10,
            individual / 100,
            individual / 10 % 10,
            individual % 10,
        ];
        if let Some(number) = complete(first9) {
            return number;
        }
    }
}

/// A valid organisation number from eight leading digits (for tests and the demo).
pub fn orgnr_from(first8: u32) -> Option<String> {
    let text = format!("{:08}", first8 % 100_000_000);
    let d = digits::<8>(&text)?;
    let k = mod11_control(weighted(&d, &ORGNR_WEIGHTS))?;
    Some(format!("{text}{k}"))
}

/// A key for log pseudonyms: `DHO_LOG_PSEUDONYM_KEY` (so several services agree), otherwise
/// random per process. A plain hash would not do: 11-digit numbers are easy to enumerate.
static PSEUDONYM_KEY: LazyLock<Vec<u8>> =
    LazyLock::new(|| match std::env::var("DHO_LOG_PSEUDONYM_KEY") {
        Ok(key) if !key.is_empty() => key.into_bytes(),
        _ => rand::rng().random::<[u8; 32]>().to_vec(),
    });

/// A short keyed pseudonym of an identifier, for logs and traces.
pub fn pseudonym(value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&*PSEUDONYM_KEY);
    hasher.update(value.as_bytes());
    let digest = hasher.finalize();
    format!(
        "p-{:02x}{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3], digest[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn known_numbers() {
        // Published example numbers used widely in Norwegian test suites.
        assert_eq!(
            validate_birth_number("01010101006", false),
            Ok(Population::Real)
        );
        assert_eq!(
            validate_birth_number("01010101007", false),
            Err(IdError::BadK2)
        );
        assert_eq!(
            validate_birth_number("0101010100", false),
            Err(IdError::NotElevenDigits)
        );
        assert_eq!(
            validate_birth_number("0101010100a", false),
            Err(IdError::NotElevenDigits)
        );
        assert_eq!(
            validate_birth_number("32010101006", false),
            Err(IdError::BadDate)
        );
        assert_eq!(validate_orgnr("974760673"), Ok(())); // Brønnøysundregistrene
        assert_eq!(validate_orgnr("974760672"), Err(IdError::BadCheckDigit));
        assert_eq!(validate_orgnr("97476067"), Err(IdError::NotNineDigits));
    }

    #[test]
    fn d_number_adds_forty_to_the_day() {
        // 01010101006 with day 01 -> 41; recompute check digits for the new base.
        let d = (0..1000u32)
            .find_map(|i| complete([4, 1, 0, 1, 0, 1, i / 100, i / 10 % 10, i % 10]))
            .unwrap();
        assert_eq!(validate_birth_number(&d, true), Ok(Population::Real));
        assert_eq!(validate_birth_number(&d, false), Err(IdError::BadDate));
        assert_eq!(
            validate_birth_number("01010101006", true),
            Err(IdError::BadDate)
        );
    }

    #[test]
    fn the_2032_rule_accepts_the_four_k1_values_and_nothing_else() {
        let first9 = [1, 5, 0, 8, 3, 2, 0, 1, 2];
        let s = weighted(&first9, &K1_WEIGHTS) % 11;
        let allowed: Vec<u32> = (11..=14)
            .map(|b| (b - s) % 11)
            .filter(|k| *k < 10)
            .collect();
        for k1 in 0..10u32 {
            let mut first10 = [0u32; 10];
            first10[..9].copy_from_slice(&first9);
            first10[9] = k1;
            let Some(k2) = mod11_control(weighted(&first10, &K2_WEIGHTS)) else {
                continue;
            };
            let number: String = first10
                .iter()
                .chain(std::iter::once(&k2))
                .map(|d| char::from(b'0' + *d as u8))
                .collect();
            let ok = validate_birth_number(&number, false).is_ok();
            assert_eq!(ok, allowed.contains(&k1), "k1={k1} allowed={allowed:?}");
        }
    }

    #[test]
    fn synthetic_numbers_are_valid_and_marked_synthetic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let n = synthetic_fnr(&mut rng);
            assert_eq!(
                validate_birth_number(&n, false),
                Ok(Population::SyntheticTenor),
                "{n}"
            );
        }
    }

    #[test]
    fn pseudonyms_are_stable_and_do_not_contain_the_number() {
        let p = pseudonym("01010101006");
        assert_eq!(p, pseudonym("01010101006"));
        assert_ne!(p, pseudonym("01010101014"));
        assert!(!p.contains("0101010"));
    }

    proptest! {
        #[test]
        fn any_single_digit_change_is_caught(seed in any::<u64>(), pos in 0usize..11, delta in 1u8..10) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let n = synthetic_fnr(&mut rng);
            let mut bytes = n.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            // k1 has four valid values under the 2032 rule, so a change *of k1 alone* may pass;
            // any change elsewhere must fail.
            if pos != 9 {
                prop_assert!(validate_birth_number(&changed, false).is_err(), "{changed}");
            }
        }

        #[test]
        fn orgnr_generator_validates(first8 in 0u32..100_000_000) {
            if let Some(n) = orgnr_from(first8) {
                prop_assert_eq!(validate_orgnr(&n), Ok(()));
            }
        }
    }
}
