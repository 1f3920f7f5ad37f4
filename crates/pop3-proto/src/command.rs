//! One command line (without its CRLF) to one [`Command`]. Keywords are case-insensitive; every
//! argument is checked here, so the session code only ever sees well-formed commands and turns a
//! [`ParseError`] into `-ERR` without ending the session.

use crate::types::{MsgNum, Password};

/// A client command of RFC 1939 (plus CAPA from RFC 2449 and STLS from RFC 2595), with
/// validated arguments.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS password`: the rest of the line, spaces included.
    Pass(Password),
    /// `QUIT`
    Quit,
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<MsgNum>),
    /// `RETR msg`
    Retr(MsgNum),
    /// `DELE msg`
    Dele(MsgNum),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `TOP msg n`: the header and the first `n` body lines.
    Top(MsgNum, u32),
    /// `UIDL [msg]`
    Uidl(Option<MsgNum>),
    /// `CAPA` (RFC 2449)
    Capa,
    /// `STLS` (RFC 2595): switch this connection to TLS.
    Stls,
    /// `APOP name digest` (RFC 1939 §7).
    Apop {
        /// The mailbox name, resolved like USER's.
        name: String,
        /// MD5 of the greeting's timestamp and the shared secret.
        digest: ApopDigest,
    },
    /// `AUTH [mechanism [initial-response]]` (RFC 5034): no mechanism asks for the list; the
    /// initial response is decoded (`=` is an empty one).
    Auth {
        /// The mechanism name, upper case.
        mechanism: Option<String>,
        /// The decoded initial response, if the client sent one.
        initial: Option<crate::sasl::SaslResponse>,
    },
    /// `UTF8` (RFC 6856 §2): UTF-8 mode for the rest of the session.
    Utf8,
    /// `LANG [range]` (RFC 6856 §3): no range lists the languages; a range (lower case, or `*`
    /// for the server's default) picks the language of response texts.
    Lang(Option<LanguageRange>),
}

/// An RFC 4647 basic language range (`de`, `de-CH`, `*`), lower-cased: what `LANG` takes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LanguageRange(String);

impl LanguageRange {
    /// `None` unless `range` is `*` or 1 to 8 letters followed by `-`-separated subtags of 1 to
    /// 8 letters or digits (RFC 4647 §2.1).
    pub fn parse(range: &[u8]) -> Option<Self> {
        if range == b"*" {
            return Some(Self("*".into()));
        }
        let mut subtags = range.split(|&b| b == b'-');
        let first = subtags.next()?;
        let len_ok = |t: &[u8]| (1..=8).contains(&t.len());
        let ok = len_ok(first)
            && first.iter().all(u8::is_ascii_alphabetic)
            && subtags.all(|t| len_ok(t) && t.iter().all(u8::is_ascii_alphanumeric));
        ok.then(|| Self(String::from_utf8_lossy(range).to_ascii_lowercase()))
    }

    /// The range in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An APOP digest: 32 hex digits, kept in lower case whatever case the client used. Its `Debug`
/// is redacted: with the greeting's timestamp it allows offline guessing of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApopDigest(String);

impl ApopDigest {
    /// `None` unless `hex` is exactly 32 hex digits.
    pub fn parse(hex: &[u8]) -> Option<Self> {
        (hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit))
            .then(|| Self(String::from_utf8_lossy(hex).to_ascii_lowercase()))
    }

    /// The 32 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApopDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApopDigest(<redacted>)")
    }
}

/// Why a command line was not understood. The `Display` text fits after `-ERR `.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum ParseError {
    /// The client sent an empty line or only spaces and tabs.
    #[error("empty command")]
    Empty,
    /// The client sent a keyword this server does not implement.
    #[error("unknown command")]
    UnknownCommand,
    /// The client left out an argument the command requires.
    #[error("missing argument")]
    MissingArgument,
    /// The client sent a message number that is not 1 to 4294967295, or a line count that is not a number.
    #[error("invalid message number or line count")]
    InvalidArgument,
    /// The client sent more arguments than the command takes.
    #[error("too many arguments")]
    TooManyArguments,
    /// The client sent a user name that is not valid UTF-8.
    #[error("argument is not valid UTF-8")]
    InvalidUtf8,
    /// The client sent an AUTH initial response that is not padded base64.
    #[error("invalid base64")]
    InvalidBase64,
    /// The client sent a `LANG` argument that is not an RFC 4647 language range.
    #[error("invalid language range")]
    InvalidLanguage,
}

#[derive(Clone, Copy)]
enum Keyword {
    User,
    Pass,
    Quit,
    Stat,
    List,
    Retr,
    Dele,
    Noop,
    Rset,
    Top,
    Uidl,
    Capa,
    Stls,
    Apop,
    Auth,
    Utf8,
    Lang,
}

const KEYWORDS: [(&[u8], Keyword); 17] = [
    (b"USER", Keyword::User),
    (b"PASS", Keyword::Pass),
    (b"QUIT", Keyword::Quit),
    (b"STAT", Keyword::Stat),
    (b"LIST", Keyword::List),
    (b"RETR", Keyword::Retr),
    (b"DELE", Keyword::Dele),
    (b"NOOP", Keyword::Noop),
    (b"RSET", Keyword::Rset),
    (b"TOP", Keyword::Top),
    (b"UIDL", Keyword::Uidl),
    (b"CAPA", Keyword::Capa),
    (b"STLS", Keyword::Stls),
    (b"APOP", Keyword::Apop),
    (b"AUTH", Keyword::Auth),
    (b"UTF8", Keyword::Utf8),
    (b"LANG", Keyword::Lang),
];

fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parses one command line, given without its line ending.
///
/// Arguments may be separated by runs of spaces or tabs and followed by trailing blanks, except
/// for PASS, whose password is everything after the one separator following the keyword (so
/// `PASS ` gives an empty password and `PASS a b ` the password `a b `). Argument counts are
/// checked before argument values: `RETR x y` is [`ParseError::TooManyArguments`].
pub fn parse_line(line: &[u8]) -> Result<Command, ParseError> {
    let start = line.iter().position(|&b| !is_sep(b)).unwrap_or(line.len());
    let line = line.get(start..).unwrap_or_default();
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let (word, rest) = match line.iter().position(|&b| is_sep(b)) {
        Some(i) => {
            let (word, tail) = line.split_at(i);
            (word, tail.split_first().map(|(_, rest)| rest))
        }
        None => (line, None),
    };
    let keyword = KEYWORDS
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|&(_, k)| k)
        .ok_or(ParseError::UnknownCommand)?;

    if let Keyword::Pass = keyword {
        let password = rest.ok_or(ParseError::MissingArgument)?;
        return Ok(Command::Pass(Password::new(password.to_vec())));
    }

    let args: Vec<&[u8]> = rest
        .unwrap_or_default()
        .split(|&b| is_sep(b))
        .filter(|arg| !arg.is_empty())
        .collect();
    let args = args.as_slice();
    match keyword {
        Keyword::User => match args {
            [] => Err(ParseError::MissingArgument),
            [name] => std::str::from_utf8(name)
                .map(|name| Command::User(name.to_owned()))
                .map_err(|_| ParseError::InvalidUtf8),
            _ => Err(ParseError::TooManyArguments),
        },
        // Handled above: the password is not split into arguments.
        Keyword::Pass => Err(ParseError::MissingArgument),
        Keyword::Quit => no_args(args, Command::Quit),
        Keyword::Stat => no_args(args, Command::Stat),
        Keyword::Noop => no_args(args, Command::Noop),
        Keyword::Rset => no_args(args, Command::Rset),
        Keyword::Capa => no_args(args, Command::Capa),
        Keyword::Stls => no_args(args, Command::Stls),
        Keyword::Utf8 => no_args(args, Command::Utf8),
        Keyword::Lang => match args {
            [] => Ok(Command::Lang(None)),
            [range] => LanguageRange::parse(range)
                .map(|r| Command::Lang(Some(r)))
                .ok_or(ParseError::InvalidLanguage),
            _ => Err(ParseError::TooManyArguments),
        },
        Keyword::List => optional_msg(args).map(Command::List),
        Keyword::Uidl => optional_msg(args).map(Command::Uidl),
        Keyword::Retr => required_msg(args).map(Command::Retr),
        Keyword::Dele => required_msg(args).map(Command::Dele),
        Keyword::Top => match args {
            [] | [_] => Err(ParseError::MissingArgument),
            [msg, lines] => {
                let lines = parse_u32(lines).ok_or(ParseError::InvalidArgument)?;
                Ok(Command::Top(msg_num(msg)?, lines))
            }
            _ => Err(ParseError::TooManyArguments),
        },
        Keyword::Auth => crate::sasl::parse_auth(args),
        Keyword::Apop => match args {
            [] | [_] => Err(ParseError::MissingArgument),
            [name, digest] => {
                let name = std::str::from_utf8(name).map_err(|_| ParseError::InvalidUtf8)?;
                let digest = ApopDigest::parse(digest).ok_or(ParseError::InvalidArgument)?;
                Ok(Command::Apop {
                    name: name.to_owned(),
                    digest,
                })
            }
            _ => Err(ParseError::TooManyArguments),
        },
    }
}

fn no_args(args: &[&[u8]], command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::TooManyArguments)
    }
}

fn optional_msg(args: &[&[u8]]) -> Result<Option<MsgNum>, ParseError> {
    match args {
        [] => Ok(None),
        [msg] => msg_num(msg).map(Some),
        _ => Err(ParseError::TooManyArguments),
    }
}

fn required_msg(args: &[&[u8]]) -> Result<MsgNum, ParseError> {
    match args {
        [] => Err(ParseError::MissingArgument),
        [msg] => msg_num(msg),
        _ => Err(ParseError::TooManyArguments),
    }
}

fn msg_num(arg: &[u8]) -> Result<MsgNum, ParseError> {
    parse_u32(arg)
        .and_then(MsgNum::new)
        .ok_or(ParseError::InvalidArgument)
}

/// ASCII digits only: `str::parse` would also take a leading `+`, which RFC 1939 numbers never have.
fn parse_u32(arg: &[u8]) -> Option<u32> {
    if arg.is_empty() {
        return None;
    }
    arg.iter().try_fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(n: u32) -> MsgNum {
        MsgNum::new(n).unwrap()
    }

    fn apop(name: &str, digest: &str) -> Command {
        Command::Apop {
            name: name.into(),
            digest: ApopDigest::parse(digest.as_bytes()).unwrap(),
        }
    }

    fn lang(range: &str) -> Command {
        Command::Lang(Some(LanguageRange::parse(range.as_bytes()).unwrap()))
    }

    fn pass(bytes: &[u8]) -> Command {
        Command::Pass(Password::new(bytes.to_vec()))
    }

    #[test]
    fn accepted_commands() {
        let cases: Vec<(&[u8], Command)> = vec![
            (b"USER alice", Command::User("alice".into())),
            (b"user alice", Command::User("alice".into())),
            (b"UsEr alice", Command::User("alice".into())),
            (b"USER  alice  ", Command::User("alice".into())),
            (b"USER\talice\t", Command::User("alice".into())),
            (b"  USER alice", Command::User("alice".into())),
            (
                b"USER john+example.com",
                Command::User("john+example.com".into()),
            ),
            ("USER jürgen".as_bytes(), Command::User("jürgen".into())),
            (b"PASS secret", pass(b"secret")),
            (b"pass secret", pass(b"secret")),
            (b"PASS my secret", pass(b"my secret")),
            (b"PASS my secret ", pass(b"my secret ")),
            (b"PASS  leading", pass(b" leading")),
            (b"PASS ", pass(b"")),
            (b"PASS  ", pass(b" ")),
            (b"PASS\tsecret", pass(b"secret")),
            (b"PASS \xff\xfe\x00", pass(b"\xff\xfe\x00")),
            (b"QUIT", Command::Quit),
            (b"quit", Command::Quit),
            (b"QUIT  ", Command::Quit),
            (b"STAT", Command::Stat),
            (b"sTaT", Command::Stat),
            (b"LIST", Command::List(None)),
            (b"LIST 1", Command::List(Some(m(1)))),
            (b"list  7 ", Command::List(Some(m(7)))),
            (b"RETR 1", Command::Retr(m(1))),
            (b"retr 007", Command::Retr(m(7))),
            (b"RETR 4294967295", Command::Retr(m(u32::MAX))),
            (b"DELE 3", Command::Dele(m(3))),
            (b"NOOP", Command::Noop),
            (b"RSET", Command::Rset),
            (b"TOP 1 0", Command::Top(m(1), 0)),
            (b"TOP 1 99999999", Command::Top(m(1), 99_999_999)),
            (b"top 2\t10 ", Command::Top(m(2), 10)),
            (b"TOP 1 4294967295", Command::Top(m(1), u32::MAX)),
            (b"UIDL", Command::Uidl(None)),
            (b"uidl 4", Command::Uidl(Some(m(4)))),
            (b"CAPA", Command::Capa),
            (b"capa", Command::Capa),
            (b"STLS", Command::Stls),
            (b"UTF8", Command::Utf8),
            (b"utf8 ", Command::Utf8),
            (b"LANG", Command::Lang(None)),
            (b"LANG de", lang("de")),
            (b"lang DE-ch", lang("de-ch")),
            (b"LANG *", lang("*")),
            (b"LANG i-klingon", lang("i-klingon")),
            (b"LANG zh-Hant-TW", lang("zh-hant-tw")),
            (b"stls ", Command::Stls),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                apop("mrose", "c4c9334bac560ecc979e58001b3e22fb"),
            ),
            (
                b"apop  john@example.com\tC4C9334BAC560ECC979E58001B3E22FB ",
                apop("john@example.com", "c4c9334bac560ecc979e58001b3e22fb"),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rejected_commands() {
        use ParseError::*;
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"", Empty),
            (b"   ", Empty),
            (b"\t \t", Empty),
            (b"FOO", UnknownCommand),
            (b"APOP", MissingArgument),
            (b"APOP mrose", MissingArgument),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22f",
                InvalidArgument,
            ),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fbb",
                InvalidArgument,
            ),
            (
                b"APOP mrose g4c9334bac560ecc979e58001b3e22fb",
                InvalidArgument,
            ),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb x",
                TooManyArguments,
            ),
            (b"APOP \xff c4c9334bac560ecc979e58001b3e22fb", InvalidUtf8),
            (b"STLS now", TooManyArguments),
            (b"UTF8 USER", TooManyArguments),
            (b"UTF-8", UnknownCommand),
            (b"LANG de fr", TooManyArguments),
            (b"LANG d\xc3\xa9", InvalidLanguage),
            (b"LANG de_DE", InvalidLanguage),
            (b"LANG -de", InvalidLanguage),
            (b"LANG de-", InvalidLanguage),
            (b"LANG 1de", InvalidLanguage),
            (b"LANG abcdefghi", InvalidLanguage),
            (b"LANG **", InvalidLanguage),
            (b"USERX alice", UnknownCommand),
            (b"US", UnknownCommand),
            (b"\xff\xfe", UnknownCommand),
            (b"USER", MissingArgument),
            (b"USER ", MissingArgument),
            (b"USER \t ", MissingArgument),
            (b"PASS", MissingArgument),
            (b"RETR", MissingArgument),
            (b"RETR ", MissingArgument),
            (b"DELE", MissingArgument),
            (b"TOP", MissingArgument),
            (b"TOP 1", MissingArgument),
            (b"TOP 1 ", MissingArgument),
            (b"RETR 0", InvalidArgument),
            (b"RETR -1", InvalidArgument),
            (b"RETR +1", InvalidArgument),
            (b"RETR 1x", InvalidArgument),
            (b"RETR x", InvalidArgument),
            (b"RETR 1.0", InvalidArgument),
            (b"RETR 4294967296", InvalidArgument),
            (b"RETR 99999999999999999999", InvalidArgument),
            (b"RETR \xd9\xa1", InvalidArgument),
            (b"DELE 0", InvalidArgument),
            (b"LIST 0", InvalidArgument),
            (b"UIDL abc", InvalidArgument),
            (b"TOP 0 1", InvalidArgument),
            (b"TOP x 1", InvalidArgument),
            (b"TOP 1 -1", InvalidArgument),
            (b"TOP 1 x", InvalidArgument),
            (b"TOP 1 4294967296", InvalidArgument),
            (b"USER alice bob", TooManyArguments),
            (b"QUIT now", TooManyArguments),
            (b"STAT 1", TooManyArguments),
            (b"NOOP x", TooManyArguments),
            (b"RSET x", TooManyArguments),
            (b"CAPA x", TooManyArguments),
            (b"LIST 1 2", TooManyArguments),
            (b"UIDL 1 2", TooManyArguments),
            (b"RETR 1 2", TooManyArguments),
            (b"RETR x y", TooManyArguments),
            (b"DELE 1 2", TooManyArguments),
            (b"TOP 1 2 3", TooManyArguments),
            (b"USER \xff", InvalidUtf8),
            (b"user al\xc3ce", InvalidUtf8),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line),
                Err(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn error_texts() {
        use ParseError::*;
        let cases = [
            (Empty, "empty command"),
            (UnknownCommand, "unknown command"),
            (MissingArgument, "missing argument"),
            (InvalidArgument, "invalid message number or line count"),
            (TooManyArguments, "too many arguments"),
            (InvalidUtf8, "argument is not valid UTF-8"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn password_does_not_leak_through_command_debug() {
        let cmd = parse_line(b"PASS hunter2").unwrap();
        assert_eq!(format!("{cmd:?}"), "Pass(Password(<redacted>))");
        let cmd = parse_line(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb").unwrap();
        assert_eq!(
            format!("{cmd:?}"),
            "Apop { name: \"mrose\", digest: ApopDigest(<redacted>) }"
        );
        let Command::Apop { digest, .. } =
            parse_line(b"APOP m C4C9334BAC560ECC979E58001B3E22FB").unwrap()
        else {
            panic!("not APOP");
        };
        assert_eq!(digest.as_str(), "c4c9334bac560ecc979e58001b3e22fb");
    }

    proptest! {
        #[test]
        fn any_line_parses_without_panicking(line in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn message_numbers_match_u32(n in any::<u64>()) {
            let parsed = parse_line(format!("RETR {n}").as_bytes());
            let expected = u32::try_from(n).ok().and_then(MsgNum::new).map(Command::Retr).ok_or(ParseError::InvalidArgument);
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn password_is_the_rest_of_the_line(pw in prop::collection::vec(any::<u8>(), 0..100)) {
            let mut line = b"PASS ".to_vec();
            line.extend_from_slice(&pw);
            prop_assert_eq!(parse_line(&line), Ok(Command::Pass(Password::new(pw))));
        }
    }
}
