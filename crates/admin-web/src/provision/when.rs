//! The one way a time typed by an admin is read, for the UI, the API and the CLI alike (a bin
//! restore's range, a bulletin's time).

use super::Error;

/// Unix milliseconds of a time as an admin gives it: Unix milliseconds; RFC 3339
/// (`2026-12-24T22:00:00Z`, `…+01:00`, fractions of a second allowed); or without offset, which
/// means UTC, and then seconds or the whole clock may be left out (`YYYY-MM-DD HH:MM`,
/// `YYYY-MM-DD`; a browser's `datetime-local` field sends `YYYY-MM-DDTHH:MM`).
pub fn parse_time(raw: &str) -> Result<i64, Error> {
    let raw = raw.trim();
    parse(raw).ok_or_else(|| {
        Error::Invalid(format!(
            "{raw:?} is not a time: give 2026-12-24T22:00:00Z (RFC 3339), YYYY-MM-DD HH:MM[:SS] \
             (UTC) or Unix milliseconds"
        ))
    })
}

fn parse(raw: &str) -> Option<i64> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().ok();
    }
    let (date, rest) = raw.split_once(['T', 't', ' ']).unwrap_or((raw, "00:00"));
    let mut d = date.splitn(3, '-');
    let year: i32 = d.next()?.parse().ok()?;
    let month: u8 = d.next()?.parse().ok()?;
    let day: u8 = d.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (clock, offset) = rest.split_at(pos);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        (clock, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let mut c = clock.splitn(3, ':');
    let hour: u8 = c.next()?.parse().ok()?;
    let minute: u8 = c.next()?.parse().ok()?;
    let (second, millis) = match c.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let millis = if frac.is_empty() {
                0
            } else {
                if !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                format!("{frac:0<3}")[..3].parse::<i64>().ok()?
            };
            (whole.parse::<u8>().ok()?, millis)
        }
    };
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let clock = time::Time::from_hms(hour, minute, second).ok()?;
    let utc = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Some((utc.unix_timestamp() - i64::from(offset_secs)) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn rfc3339_times() {
        let parse = |s| parse_time(s).ok();
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(parse("1970-01-01T00:01"), Some(60_000));
        assert_eq!(parse("2026-12-24T22:00:00Z"), Some(1_798_149_600_000));
        assert_eq!(parse("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse("tomorrow"), None);
        assert_eq!(parse("2026-12-24T25:00:00Z"), None);
    }

    #[test]
    fn times_parse_in_utc() {
        assert_eq!(parse_time("1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-02").ok(), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01 01:00").ok(), Some(3_600_000));
        assert_eq!(parse_time("1970-01-01T00:00:30Z").ok(), Some(30_000));
        for bad in ["", "yesterday", "1970-13-01", "1970-01-01 25:00", "1970-01"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
