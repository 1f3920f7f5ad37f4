//! The one place that decides which mailbox a login names.

use mailstore::Address;

/// `john@example.com` (domain case-insensitive) names the mailbox john at example.com.
/// `None` when the login cannot name a mailbox; callers treat that exactly like a wrong password.
pub fn parse_login(login: &str) -> Option<Address> {
    Address::parse(login.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        let a = parse_login("john@Example.COM").expect("valid");
        assert_eq!(a.to_string(), "john@example.com");
        assert_eq!(
            parse_login("John@example.com.")
                .map(|a| a.to_string())
                .as_deref(),
            Some("john@example.com")
        );
        for bad in [
            "",
            "john",
            "@example.com",
            "john@",
            "jo hn@example.com",
            "john@exa mple.com",
            "john@-x.com",
        ] {
            assert_eq!(parse_login(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_is_normalising(local in "[a-zA-Z0-9._-]{1,20}", domain in "[a-zA-Z0-9]{1,10}\\.[a-zA-Z]{2,5}") {
            let login = format!("{local}@{domain}");
            if let Some(a) = parse_login(&login) {
                prop_assert_eq!(a.to_string(), login.to_ascii_lowercase());
                prop_assert_eq!(parse_login(&a.to_string()), Some(a));
            }
        }
    }
}
