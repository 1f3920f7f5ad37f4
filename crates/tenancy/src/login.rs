//! The one place that decides which mailbox a login names. `Login::parse` is pure and handles
//! every accepted form; `resolve` adds what the directory knows (aliases, the domain's allowed
//! forms) and the listener's context (default domain, TLS server name).

use std::collections::HashMap;
use std::net::IpAddr;

use mailstore::{Address, Directory, DomainName, LocalPart, LoginForm, StoreError};

/// A login as typed, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub local: LocalPart,
    /// `None` for a bare `john`: the domain comes from the connection.
    pub domain: Option<DomainName>,
    pub form: LoginForm,
}

impl Login {
    /// `john@example.com` (split at the last `@`), `john%example.com`, `john+example.com` (SDPS:
    /// no `@`, the last `+` separates user and host), or a bare `john`. Local parts and domains
    /// are case-insensitive; domains are IDNA-normalised. `None` when the login cannot name a
    /// mailbox.
    pub fn parse(login: &str) -> Option<Login> {
        let login = login.trim();
        match split(login) {
            Some(((local, domain), form)) => Some(Login {
                local: LocalPart::parse(local).ok()?,
                domain: Some(DomainName::parse(domain).ok()?),
                form,
            }),
            None => Some(Login {
                local: LocalPart::parse(login).ok()?,
                domain: None,
                form: LoginForm::Bare,
            }),
        }
    }
}

/// A login's local part and domain as typed, and its form; `None` for a bare login. The one
/// place the separators are decided (`Login::parse`, and `pophost login explain`'s steps).
pub(crate) fn split(login: &str) -> Option<((&str, &str), LoginForm)> {
    [
        ('@', LoginForm::At),
        ('%', LoginForm::Percent),
        ('+', LoginForm::Plus),
    ]
    .into_iter()
    .find_map(|(sep, form)| login.rsplit_once(sep).map(|parts| (parts, form)))
}

/// What a connection tells about the domain of a bare login.
#[derive(Debug, Clone, Default)]
pub struct LoginContext {
    /// The client's address (from the PROXY header when proxied).
    pub peer_ip: Option<IpAddr>,
    /// The local address the client connected to.
    pub local_ip: Option<IpAddr>,
    /// The TLS server name the client asked for.
    pub sni: Option<DomainName>,
    /// Whether the connection is TLS, for the login history.
    pub tls: bool,
    /// The mechanism of the login under way (`USER`, `PLAIN`, `APOP`, …), set by the frontend
    /// before it asks: with it, a failed login is recorded in the login history
    /// (`Directory::record_failed_login`); without it (the MTA's auth service), it is not.
    pub mechanism: Option<&'static str>,
}

/// Default domains of bare logins, by the local address the client connected to.
#[derive(Debug, Clone, Default)]
pub struct DefaultDomains(pub HashMap<IpAddr, DomainName>);

impl DefaultDomains {
    /// The TLS server name wins over the listener address.
    pub fn for_context(&self, ctx: &LoginContext) -> Option<DomainName> {
        ctx.sni
            .clone()
            .or_else(|| ctx.local_ip.and_then(|ip| self.0.get(&ip).cloned()))
    }
}

/// How a login resolved, step by step (what `pophost login explain` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Not a login any form accepts.
    Malformed,
    /// A bare login on a connection with no default domain.
    NoDomain(Login),
    /// The domain (or alias) does not exist.
    UnknownDomain(Login, DomainName),
    /// The domain does not accept this form of login.
    FormNotAllowed(Login, DomainName),
    /// The mailbox this login names (it may still not exist).
    Mailbox {
        login: Login,
        address: Address,
        /// The alias the login used, when it was one.
        via_alias: Option<DomainName>,
        /// The domain's old POP3 server, when it is in migration mode.
        migrate_from: Option<String>,
    },
}

/// Resolves `login` against the directory.
pub async fn resolve(
    directory: &dyn Directory,
    login: &str,
    defaults: &DefaultDomains,
    ctx: &LoginContext,
) -> Result<Resolution, StoreError> {
    let Some(login) = Login::parse(login) else {
        return Ok(Resolution::Malformed);
    };
    let Some(domain) = login.domain.clone().or_else(|| defaults.for_context(ctx)) else {
        return Ok(Resolution::NoDomain(login));
    };
    let Some(policy) = directory.domain_policy(&domain).await? else {
        return Ok(Resolution::UnknownDomain(login, domain));
    };
    if !policy.login_forms.allows(login.form) {
        return Ok(Resolution::FormNotAllowed(login, policy.name));
    }
    let via_alias = (policy.name != domain).then_some(domain);
    Ok(Resolution::Mailbox {
        address: Address {
            local: login.local.clone(),
            domain: policy.name,
        },
        login,
        via_alias,
        migrate_from: policy.migrate_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Option<(String, Option<String>, LoginForm)> {
        Login::parse(s).map(|l| (l.local.to_string(), l.domain.map(|d| d.to_string()), l.form))
    }

    #[test]
    fn forms() {
        let at = |l: &str, d: &str, f| Some((l.to_string(), Some(d.to_string()), f));
        assert_eq!(
            parse("john@Example.COM"),
            at("john", "example.com", LoginForm::At)
        );
        assert_eq!(
            parse(" John@example.com. "),
            at("john", "example.com", LoginForm::At)
        );
        assert_eq!(
            parse("john+tag@example.com"),
            at("john+tag", "example.com", LoginForm::At)
        );
        assert_eq!(
            parse("a%b@example.com"),
            at("a%b", "example.com", LoginForm::At)
        );
        assert_eq!(
            parse("john%example.com"),
            at("john", "example.com", LoginForm::Percent)
        );
        assert_eq!(
            parse("john+example.com"),
            at("john", "example.com", LoginForm::Plus)
        );
        assert_eq!(
            parse("jo+hn+example.com"),
            at("jo+hn", "example.com", LoginForm::Plus)
        );
        assert_eq!(
            parse("john@bücher.example"),
            at("john", "xn--bcher-kva.example", LoginForm::At)
        );
        assert_eq!(parse("JOHN"), Some(("john".into(), None, LoginForm::Bare)));
        for bad in [
            "",
            "@example.com",
            "john@",
            "jo hn@example.com",
            "john@exa mple.com",
            "john@-x.com",
            "+example.com",
            "john%",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_spelling_of_an_international_mailbox_is_one_login() {
        let want = |form| {
            Some((
                "jöhn".to_string(),
                Some("xn--bcher-kva.example".into()),
                form,
            ))
        };
        for (sep, form) in [
            ('@', LoginForm::At),
            ('%', LoginForm::Percent),
            ('+', LoginForm::Plus),
        ] {
            for local in ["jöhn", "JÖHN", "jo\u{0308}hn", "JO\u{0308}HN"] {
                for domain in ["bücher.example", "BÜCHER.Example", "xn--bcher-kva.example"] {
                    let login = format!("{local}{sep}{domain}");
                    assert_eq!(parse(&login), want(form), "{login:?}");
                }
            }
        }
        // Look-alikes are other names or none.
        assert_eq!(parse("j\u{043E}hn@bücher.example"), None);
        assert_eq!(parse("ｊöhn@bücher.example"), None);
    }

    #[test]
    fn bare_logins_take_the_server_name_then_the_listener_default() {
        let d = |s: &str| DomainName::parse(s).expect("domain");
        let ip: IpAddr = "192.0.2.10".parse().expect("ip");
        let defaults = DefaultDomains(HashMap::from([(ip, d("listener.example"))]));
        let mut ctx = LoginContext {
            local_ip: Some(ip),
            ..LoginContext::default()
        };
        assert_eq!(defaults.for_context(&ctx), Some(d("listener.example")));
        ctx.sni = Some(d("sni.example"));
        assert_eq!(defaults.for_context(&ctx), Some(d("sni.example")));
        let other = LoginContext {
            local_ip: Some("127.0.0.1".parse().expect("ip")),
            ..LoginContext::default()
        };
        assert_eq!(defaults.for_context(&other), None);
    }

    proptest! {
        #[test]
        fn every_form_names_the_same_mailbox(local in "[a-zA-Z0-9._-]{1,20}", domain in "[a-zA-Z0-9]{1,10}\\.[a-zA-Z]{2,5}") {
            prop_assume!(!local.starts_with('.') && !local.ends_with('.') && !local.contains(".."));
            let want = (local.to_ascii_lowercase(), Some(domain.to_ascii_lowercase()));
            for (sep, form) in [('@', LoginForm::At), ('%', LoginForm::Percent), ('+', LoginForm::Plus)] {
                let got = parse(&format!("{local}{sep}{domain}"));
                prop_assert_eq!(got, Some((want.0.clone(), want.1.clone(), form)));
            }
        }

        /// A stored name parses to itself: what NFC, lower case and the checks make of a name
        /// is already normal, so a login typed as stored finds the mailbox.
        #[test]
        fn local_parts_are_normal_forms(s in "[a-zA-Z0-9.+äöüÄÖÜßẞİıΣσςΑω\u{0308}\u{0301}ǅǄ]{1,20}") {
            if let Ok(once) = LocalPart::parse(&s) {
                prop_assert_eq!(LocalPart::parse(once.as_str()).ok(), Some(once));
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Login::parse(&s);
        }
    }
}
