//! The normalisation a login goes through on its way to a mailbox name, step by step, for
//! `pophost login explain`: the form's separator, then for the local part Unicode NFC and lower
//! case (`LocalPart::parse`), for the domain the IDNA mapping of U-labels to A-labels
//! (`DomainName::parse`). The steps only describe: the names themselves come from those two
//! parsers, so what is shown is what a login does.

use mailstore::{DomainName, LocalPart, LoginForm};
use unicode_normalization::UnicodeNormalization;

/// One line per step of normalising `login` (trimmed, as `Login::parse` trims it).
pub fn normalisation_steps(login: &str) -> Vec<String> {
    let login = login.trim();
    let mut steps = vec![format!("typed: {login:?}")];
    let (local, domain) = match crate::login::split(login) {
        Some(((local, domain), form)) => {
            let how = match form {
                LoginForm::At => "user@domain",
                LoginForm::Percent => "user%domain (SDPS)",
                LoginForm::Plus => "user+domain (SDPS: the last '+' splits)",
                LoginForm::Bare => "bare",
            };
            steps.push(format!(
                "split as {how}: local part {local:?}, domain {domain:?}"
            ));
            (local, Some(domain))
        }
        None => {
            steps.push(format!("no separator: bare local part {login:?}"));
            (login, None)
        }
    };

    let nfc: String = local.nfc().collect();
    steps.push(step("local part, Unicode NFC", local, &nfc));
    let lower = nfc.to_lowercase();
    steps.push(step("local part, lower case", &nfc, &lower));
    steps.push(match LocalPart::parse(local) {
        Ok(l) => format!("local part: {l}"),
        Err(_) => "local part refused: not a mailbox name (controls, spaces, symbols, \
                   compatibility or mixed-script look-alikes are not accepted)"
            .to_string(),
    });

    if let Some(domain) = domain {
        steps.push(match DomainName::parse(domain) {
            Ok(d) => {
                let (unicode, _) = idna::domain_to_unicode(d.as_str());
                if unicode == d.as_str() {
                    format!("domain: {d}")
                } else {
                    format!("domain, U-label {unicode} -> A-label {d}")
                }
            }
            Err(_) => "domain refused: not a valid (IDNA) domain name".to_string(),
        });
    }
    steps
}

fn step(what: &str, before: &str, after: &str) -> String {
    if before == after {
        format!("{what}: {after:?} (unchanged)")
    } else {
        format!("{what}: {before:?} -> {after:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_shown() {
        // A decomposed ö (o + U+0308), upper case, an upper-case U-label domain.
        let steps = normalisation_steps(" Jo\u{0308}hn@Bücher.Example ");
        assert_eq!(
            steps,
            [
                // Debug escapes the combining mark, so it can be seen.
                "typed: \"Jo\\u{308}hn@Bücher.Example\"",
                "split as user@domain: local part \"Jo\\u{308}hn\", domain \"Bücher.Example\"",
                "local part, Unicode NFC: \"Jo\\u{308}hn\" -> \"Jöhn\"",
                "local part, lower case: \"Jöhn\" -> \"jöhn\"",
                "local part: jöhn",
                "domain, U-label bücher.example -> A-label xn--bcher-kva.example",
            ]
        );
    }

    #[test]
    fn sdps_and_a_labels_and_refusals() {
        let steps = normalisation_steps("jöhn+xn--bcher-kva.example");
        assert!(
            steps[1].starts_with("split as user+domain (SDPS"),
            "{steps:?}"
        );
        assert_eq!(steps[2], "local part, Unicode NFC: \"jöhn\" (unchanged)");
        assert_eq!(
            steps[5],
            "domain, U-label bücher.example -> A-label xn--bcher-kva.example"
        );
        let steps = normalisation_steps("p\u{0430}ypal%example.com");
        assert!(steps[1].starts_with("split as user%domain"), "{steps:?}");
        assert!(steps[4].starts_with("local part refused"), "{steps:?}");
        assert_eq!(steps[5], "domain: example.com");
        let steps = normalisation_steps("JOHN");
        assert_eq!(steps[1], "no separator: bare local part \"JOHN\"");
        assert_eq!(steps.len(), 5);
    }
}
