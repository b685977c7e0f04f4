//! FHIR `dateTime` / `instant` text to and from [`Millis`], without a calendar dependency:
//! the hub needs only UTC offsets and the proleptic Gregorian calendar.

use crate::model::Millis;

/// Why a FHIR time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// A valid year or year-month, but readings need at least a day.
    Imprecise,
    /// Not a FHIR dateTime (or a time without a time zone, which FHIR forbids).
    Malformed,
}

fn number(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const HOUR: Millis = 3_600_000;
const DAY: Millis = 24 * HOUR;

/// The last Sunday of `month`, as days since 1970-01-01 (a Thursday).
fn last_sunday(year: i64, month: u32) -> i64 {
    let last = days_from_civil(year, month, days_in_month(year, month));
    last - (last + 4).rem_euclid(7)
}

/// Europe/Oslo's offset from UTC at `at`: summer time (+2 h) from the last Sunday of March
/// to the last Sunday of October, each at 01:00 UTC (the EU rule, in force since 1996),
/// else +1 h.
pub fn oslo_offset(at: Millis) -> Millis {
    let (year, _, _) = civil_from_days(at.div_euclid(DAY));
    let summer_from = last_sunday(year, 3) * DAY + HOUR;
    let summer_until = last_sunday(year, 10) * DAY + HOUR;
    if (summer_from..summer_until).contains(&at) {
        2 * HOUR
    } else {
        HOUR
    }
}

/// The instant the day `days` (since 1970-01-01) begins in Oslo. Oslo's clocks change at
/// 02:00 and 03:00 local time, never at midnight, so the offset two hours before UTC
/// midnight is the one at local midnight.
fn oslo_day_start(days: i64) -> Millis {
    let utc_midnight = days * DAY;
    utc_midnight - oslo_offset(utc_midnight - 2 * HOUR)
}

/// A FHIR `Period` bound as an instant, for a period that holds from its start (inclusive)
/// to its end (exclusive), as the hub's consent rules do. FHIR's own end is inclusive, to
/// the end's precision, and a date means a whole day where the patient lives: so a
/// date-only start is the day's first instant in Oslo, a date-only end the next day's
/// first instant, and a dateTime end the instant after it (a second for a time in
/// seconds, a millisecond for one with a fraction).
pub fn period_bound(text: &str, is_end: bool) -> Result<Millis, TimeError> {
    let at = parse(text)?;
    if text.len() == 10 {
        let day = at.div_euclid(DAY);
        return Ok(oslo_day_start(if is_end { day + 1 } else { day }));
    }
    if !is_end {
        return Ok(at);
    }
    let precision = if text.contains('.') { 1 } else { 1000 };
    Ok(at + precision)
}

/// Parses a FHIR `dateTime` or `instant` of at least day precision. A date without a time
/// is taken as 00:00 UTC (the day is what matters for such readings).
pub fn parse(text: &str) -> Result<Millis, TimeError> {
    use TimeError::*;
    let b = text.as_bytes();
    let year = b.get(..4).and_then(number).ok_or(Malformed)?;
    if b.len() == 4 {
        return Err(Imprecise);
    }
    if b.get(4) != Some(&b'-') {
        return Err(Malformed);
    }
    let month = b
        .get(5..7)
        .and_then(number)
        .filter(|m| (1..=12).contains(m));
    let month = month.ok_or(Malformed)?;
    if b.len() == 7 {
        return Err(Imprecise);
    }
    let year = i64::from(year);
    let day = b
        .get(7..10)
        .filter(|d| d[0] == b'-')
        .and_then(|d| number(&d[1..]));
    let day = day
        .filter(|d| (1..=days_in_month(year, month)).contains(d))
        .ok_or(Malformed)?;
    let date_millis = days_from_civil(year, month, day) * 86_400_000;
    if b.len() == 10 {
        return Ok(date_millis);
    }
    // hh:mm:ss[.fff...](Z|+hh:mm|-hh:mm): FHIR requires the zone whenever a time is given.
    let time = b
        .get(10..19)
        .filter(|t| t[0] == b'T' && t[3] == b':' && t[6] == b':');
    let time = time.ok_or(Malformed)?;
    let (hour, minute, second) = (
        number(&time[1..3]).filter(|h| *h < 24),
        number(&time[4..6]).filter(|m| *m < 60),
        // 60 is a leap second; FHIR allows it, the hub folds it into the next second.
        number(&time[7..9]).filter(|s| *s <= 60),
    );
    let (Some(hour), Some(minute), Some(second)) = (hour, minute, second) else {
        return Err(Malformed);
    };
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(Malformed);
        }
        // Finer than a millisecond is truncated.
        for (i, d) in fraction[..digits.min(3)].iter().enumerate() {
            millis += i64::from(d - b'0') * [100, 10, 1][i];
        }
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = number(&[*h1, *h2]).filter(|h| *h <= 14).ok_or(Malformed)?;
            let minutes = number(&[*m1, *m2]).filter(|m| *m < 60).ok_or(Malformed)?;
            let total = i64::from(hours * 60 + minutes);
            if *sign == b'-' { -total } else { total }
        }
        _ => return Err(Malformed),
    };
    let seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(date_millis + seconds * 1000 + millis - offset_minutes * 60_000)
}

/// Formats as a FHIR `instant` in UTC with milliseconds, e.g. `2024-05-01T10:00:00.000Z`.
pub fn format(at: Millis) -> String {
    let days = at.div_euclid(86_400_000);
    let ms = at.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_period_bound_of_a_date_is_a_whole_day_in_oslo_summer_and_winter() {
        // Summer time began 2022-03-27: 31 March ends at 22:00 UTC.
        assert_eq!(
            period_bound("2022-03-31", true),
            parse("2022-03-31T22:00:00Z")
        );
        assert_eq!(
            period_bound("2022-03-31", false),
            parse("2022-03-30T22:00:00Z")
        );
        // Winter: 15 January ends at 23:00 UTC.
        assert_eq!(
            period_bound("2022-01-15", true),
            parse("2022-01-15T23:00:00Z")
        );
        // The change days themselves: 27 March 2022 starts in winter time and ends in
        // summer time (a 23-hour day); 30 October 2022 the other way (25 hours).
        assert_eq!(
            period_bound("2022-03-27", false),
            parse("2022-03-26T23:00:00Z")
        );
        assert_eq!(
            period_bound("2022-03-27", true),
            parse("2022-03-27T22:00:00Z")
        );
        assert_eq!(
            period_bound("2022-10-30", true),
            parse("2022-10-30T23:00:00Z")
        );
        // A dateTime end is inclusive to its precision.
        assert_eq!(
            period_bound("2022-03-31T12:00:00+02:00", true),
            parse("2022-03-31T10:00:01Z")
        );
        assert_eq!(
            period_bound("2022-03-31T12:00:00.250Z", true),
            parse("2022-03-31T12:00:00.251Z")
        );
        assert_eq!(
            period_bound("2022-03-31T12:00:00Z", false),
            parse("2022-03-31T12:00:00Z")
        );
    }

    #[test]
    fn known_times() {
        assert_eq!(parse("1970-01-01"), Ok(0));
        assert_eq!(parse("2024-02-29T12:00:00Z"), Ok(1_709_208_000_000));
        assert_eq!(parse("2024-02-29T13:00:00+01:00"), Ok(1_709_208_000_000));
        assert_eq!(parse("2024-02-29T12:00:00.5Z"), Ok(1_709_208_000_500));
        assert_eq!(parse("2024-02-29T12:00:00.123456Z"), Ok(1_709_208_000_123));
        assert_eq!(format(1_709_208_000_123), "2024-02-29T12:00:00.123Z");
        assert_eq!(parse("2024"), Err(TimeError::Imprecise));
        assert_eq!(parse("2024-05"), Err(TimeError::Imprecise));
        for bad in [
            "",
            "24-05-01",
            "2023-02-29",
            "2024-13-01",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00+1:00",
            "2024-05-01T10:00:00Zx",
            "２０２４-05-01",
        ] {
            assert_eq!(parse(bad), Err(TimeError::Malformed), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(at in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse(&format(at)), Ok(at));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_near_misses(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]{0,14}[Z+-]?[0-9:]{0,5})?") {
            let _ = parse(&text);
        }
    }
}
