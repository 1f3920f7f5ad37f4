//! The one parser of limits (quotas, the most users of a domain), as people type them into the
//! admin UI's forms, the API's JSON and `pophost domain|user set`:
//!
//! - surrounding whitespace is ignored;
//! - `unlimited` (any case), or nothing at all, is no limit;
//! - otherwise a whole number of ASCII digits (no sign, no fraction), optionally followed by one
//!   suffix `K`, `M` or `G` in either case, with or without a space before it;
//! - for bytes the suffixes are binary (`K` = 1024, `10M` = 10 × 1024²); for counts (messages,
//!   users) decimal (`K` = 1000), so `10K` messages are ten thousand;
//! - a value past `u64` is refused, not clipped.
//!
//! `show_limit` writes a limit the way the parser reads it back (the largest exact suffix), for
//! the form fields.

/// What a limit counts, which decides what its suffixes multiply by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Storage: `K`, `M`, `G` are powers of 1024.
    Bytes,
    /// Messages or users: `K`, `M`, `G` are powers of 1000.
    Count,
}

impl Unit {
    const fn base(self) -> u64 {
        match self {
            Unit::Bytes => 1024,
            Unit::Count => 1000,
        }
    }
}

/// Why a typed limit is refused; the text is shown as is by the UI, the API and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("a whole number, optionally with K, M or G; \"unlimited\" or empty for no limit")]
    Malformed,
    #[error("too large")]
    TooLarge,
}

/// The limit `raw` names: `None` is no limit (see the module's rules).
pub fn parse_limit(raw: &str, unit: Unit) -> Result<Option<u64>, LimitError> {
    let s = raw.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let (digits, power) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 2),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 3),
        _ => (s, 0),
    };
    let digits = digits.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LimitError::Malformed);
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit.base().checked_pow(power)?))
        .map(Some)
        .ok_or(LimitError::TooLarge)
}

/// A limit the way `parse_limit` reads it back, with the largest exact suffix; no limit is empty.
pub fn show_limit(value: Option<u64>, unit: Unit) -> String {
    let Some(n) = value else {
        return String::new();
    };
    for (suffix, power) in [("G", 3), ("M", 2), ("K", 1)] {
        let step = unit.base().pow(power);
        if n != 0 && n % step == 0 {
            return format!("{}{suffix}", n / step);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_suffixes() {
        let bytes = |s| parse_limit(s, Unit::Bytes);
        assert_eq!(bytes(""), Ok(None));
        assert_eq!(bytes("  Unlimited "), Ok(None));
        assert_eq!(bytes("UNLIMITED"), Ok(None));
        assert_eq!(bytes("0"), Ok(Some(0)));
        assert_eq!(bytes("1500"), Ok(Some(1500)));
        assert_eq!(bytes("10K"), Ok(Some(10 << 10)));
        assert_eq!(bytes("500M"), Ok(Some(500 << 20)));
        assert_eq!(bytes("1g"), Ok(Some(1 << 30)));
        assert_eq!(bytes("2 K"), Ok(Some(2048)));
        assert_eq!(parse_limit("10K", Unit::Count), Ok(Some(10_000)));
        assert_eq!(parse_limit("2m", Unit::Count), Ok(Some(2_000_000)));
        for bad in [
            "-1", "+5", "1.5G", "K", "10X", "5T", "ten", "1e6", "1 000", "١٢",
        ] {
            assert_eq!(bytes(bad), Err(LimitError::Malformed), "{bad}");
        }
        assert_eq!(bytes("99999999999G"), Err(LimitError::TooLarge));
        assert_eq!(bytes("99999999999999999999"), Err(LimitError::TooLarge));
        assert_eq!(bytes("18446744073709551615"), Ok(Some(u64::MAX)));
    }

    #[test]
    fn limits_show_as_they_parse() {
        for (n, unit, shown) in [
            (None, Unit::Bytes, ""),
            (Some(0), Unit::Bytes, "0"),
            (Some(1500), Unit::Bytes, "1500"),
            (Some(10 << 20), Unit::Bytes, "10M"),
            (Some(3 << 30), Unit::Bytes, "3G"),
            (Some(5000), Unit::Count, "5K"),
            (Some(5120), Unit::Count, "5120"),
        ] {
            assert_eq!(show_limit(n, unit), shown);
            assert_eq!(parse_limit(shown, unit), Ok(n));
        }
    }
}
