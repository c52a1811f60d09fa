//! IMAP dates (RFC 9051 §9 `date`, `date-time`).

use time::{Date, Month, OffsetDateTime, UtcOffset};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month(name: &str) -> Option<Month> {
    let i = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    Month::try_from(i as u8 + 1).ok()
}

/// Digits only (no sign, no spaces), `min..=max` of them.
fn digits<T: std::str::FromStr>(s: &str, min: usize, max: usize) -> Option<T> {
    let ok = (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok()).flatten()
}

/// `d-Mon-yyyy` to the UTC midnight that starts it, in seconds since the epoch
/// (RFC 9051 §9: date-day = 1*2DIGIT, date-year = 4DIGIT).
pub fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.trim().splitn(3, '-');
    let day: u8 = digits(it.next()?.trim(), 1, 2)?;
    let month = month(it.next()?)?;
    let year: i32 = digits(it.next()?, 4, 4)?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` (the quotes already removed) to seconds since the epoch.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let (date, rest) = text.trim_start().split_once(' ')?;
    let (clock, zone) = rest.split_once(' ')?;
    let midnight = parse_date(date)?;
    // RFC 9051 §9: time = 2DIGIT ":" 2DIGIT ":" 2DIGIT, zone = ("+" / "-") 4DIGIT.
    let mut hms = clock.split(':').map(|p| digits::<i64>(p, 2, 2));
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 || zone.len() != 5 || !zone.is_ascii() {
        return None;
    }
    let sign = match &zone[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let zh: i64 = digits(&zone[1..3], 2, 2)?;
    let zm: i64 = digits(&zone[3..5], 2, 2)?;
    Some(midnight + h * 3600 + m * 60 + s - sign * (zh * 3600 + zm * 60))
}

/// INTERNALDATE as sent (RFC 9051 §9 `date-time`), in UTC.
pub fn format_date_time(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(UtcOffset::UTC);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1-Feb-1994"), Some(760060800));
        assert_eq!(parse_date("31-Feb-1994"), None);
        assert_eq!(
            parse_date_time("17-Jul-1996 02:44:25 -0700"),
            Some(837596665)
        );
        assert!(parse_date_time(" 7-Jul-1996 02:44:25 -0700").is_some());
        assert_eq!(format_date_time(837596665), "17-Jul-1996 09:44:25 +0000");
        assert_eq!(parse_date_time("17-Jul-1996 25:00:00 +0000"), None);
        // Found by fuzzing: a sign where digits belong, a multi-byte zone.
        assert_eq!(parse_date_time("1-Jan--9999 -5:00:00 +0000"), None);
        assert_eq!(parse_date_time("1-Jan-2026 10:00:00 é123"), None);
        assert_eq!(parse_date_time("1-Jan-2026 10:00:00 +-100"), None);
    }
}
