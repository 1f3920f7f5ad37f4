//! LMTP command lines (RFC 2033 over RFC 5321 syntax), parsed without I/O.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lhlo(String),
    /// EHLO/HELO: SMTP greetings, refused on an LMTP port (RFC 2033 §4.1).
    Helo,
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// The client's SIZE= declaration (RFC 1870).
    pub size: Option<u64>,
    /// `SMTPUTF8` (RFC 6531): the envelope may hold UTF-8 addresses, the message UTF-8 headers.
    pub smtputf8: bool,
}

/// A command that cannot be accepted, with the reply that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject(pub &'static str);

pub fn parse(line: &[u8]) -> Result<Command, Reject> {
    let line =
        std::str::from_utf8(line).map_err(|_| Reject("500 5.5.2 Command is not valid UTF-8"))?;
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match verb.to_ascii_uppercase().as_str() {
        "LHLO" if !rest.is_empty() => Ok(Command::Lhlo(rest.to_string())),
        "LHLO" => Err(Reject("501 5.5.4 LHLO needs a host name")),
        "EHLO" | "HELO" => Ok(Command::Helo),
        "MAIL" => {
            let (from, params) = path_arg(rest, "FROM:")?;
            Ok(Command::Mail {
                from,
                params: mail_params(params)?,
            })
        }
        "RCPT" => {
            let (to, params) = path_arg(rest, "TO:")?;
            if !params.trim().is_empty() {
                return Err(Reject("555 5.5.4 RCPT parameters not supported"));
            }
            if to.is_empty() {
                return Err(Reject("501 5.1.3 Empty recipient address"));
            }
            Ok(Command::Rcpt { to })
        }
        "DATA" => Ok(Command::Data),
        "RSET" => Ok(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        _ => Err(Reject("500 5.5.2 Unknown command")),
    }
}

/// `FROM:<path> params`: returns the address inside the angle brackets and the parameters.
fn path_arg<'a>(rest: &'a str, prefix: &str) -> Result<(String, &'a str), Reject> {
    let syntax = Reject("501 5.5.4 Syntax: MAIL FROM:<address> / RCPT TO:<address>");
    let head = rest.get(..prefix.len()).ok_or(syntax.clone())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return Err(syntax);
    }
    let rest = rest[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<').ok_or(syntax.clone())?;
    let (path, params) = rest.split_once('>').ok_or(syntax)?;
    // A source route (<@a,@b:user@c>) is ignored, as RFC 5321 §4.1.1.3 allows.
    let path = path.rsplit_once(':').map_or(path, |(_, p)| p);
    if path.chars().any(|c| c.is_control() || c == ' ' || c == '<') {
        return Err(Reject("501 5.1.7 Bad address syntax"));
    }
    Ok((path.to_string(), params))
}

fn mail_params(params: &str) -> Result<MailParams, Reject> {
    let mut out = MailParams::default();
    for p in params.split_ascii_whitespace() {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                out.size = Some(
                    value
                        .parse()
                        .map_err(|_| Reject("501 5.5.4 Bad SIZE value"))?,
                )
            }
            "BODY"
                if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {
            }
            // RFC 6531 §3.4: a keyword without a value.
            "SMTPUTF8" if !p.contains('=') => out.smtputf8 = true,
            _ => return Err(Reject("555 5.5.4 Unsupported MAIL parameter")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = |l: &str| parse(l.as_bytes()).expect(l);
        assert_eq!(
            ok("LHLO mx.example.net"),
            Command::Lhlo("mx.example.net".into())
        );
        assert_eq!(ok("lhlo x"), Command::Lhlo("x".into()));
        assert_eq!(ok("EHLO x"), Command::Helo);
        assert_eq!(
            ok("MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME"),
            Command::Mail {
                from: "a@b.c".into(),
                params: MailParams {
                    size: Some(100),
                    smtputf8: false
                }
            }
        );
        assert_eq!(
            ok("MAIL FROM:<jöhn@bücher.example> smtputf8 BODY=8BITMIME"),
            Command::Mail {
                from: "jöhn@bücher.example".into(),
                params: MailParams {
                    size: None,
                    smtputf8: true
                }
            }
        );
        assert_eq!(
            ok("RCPT TO:<jöhn@xn--bcher-kva.example>"),
            Command::Rcpt {
                to: "jöhn@xn--bcher-kva.example".into()
            }
        );
        assert_eq!(
            ok("MAIL FROM:<>"),
            Command::Mail {
                from: "".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("mail from: <x@y>"),
            Command::Mail {
                from: "x@y".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("RCPT TO:<John@Example.com>"),
            Command::Rcpt {
                to: "John@Example.com".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay:john@example.com>"),
            Command::Rcpt {
                to: "john@example.com".into()
            }
        );
        for (line, code) in [
            ("LHLO", "501"),
            ("MAIL FROM:a@b", "501"),
            ("MAIL TO:<a@b>", "501"),
            ("MAIL FROM:<a@b> SIZE=x", "501"),
            ("MAIL FROM:<a@b> SMTPUTF8=yes", "555"),
            ("RCPT TO:<a@b> SMTPUTF8", "555"),
            ("RCPT TO:<>", "501"),
            ("RCPT TO:<a b@c>", "501"),
            ("RCPT TO:<a@b> NOTIFY=NEVER", "555"),
            ("BDAT 10", "500"),
            ("", "500"),
        ] {
            let Reject(reply) = parse(line.as_bytes()).expect_err(line);
            assert!(reply.starts_with(code), "{line:?} -> {reply}");
        }
    }
}
