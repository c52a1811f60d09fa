//! IMAP dates (RFC 9051 §9 `date`, `date-time`).

use time::{Date, Month, OffsetDateTime, UtcOffset};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month(name: &str) -> Option<Month> {
    let i = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    Month::try_from(i as u8 + 1).ok()
}

/// `d-Mon-yyyy` to the UTC midnight that starts it, in seconds since the epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.trim().splitn(3, '-');
    let day: u8 = it.next()?.trim().parse().ok()?;
    let month = month(it.next()?)?;
    let year: i32 = it.next()?.parse().ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` (the quotes already removed) to seconds since the epoch.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let (date, rest) = text.trim_start().split_once(' ')?;
    let (clock, zone) = rest.split_once(' ')?;
    let midnight = parse_date(date)?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 || zone.len() != 5 {
        return None;
    }
    let sign = match &zone[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
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
    }
}
