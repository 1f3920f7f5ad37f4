//! The language of response texts (RFC 6856 §3, `LANG`) and the UTF-8 mode of `UTF8` (§2),
//! applied in one place: `Session::queue` passes every reply through [`Speech::localise`], so a
//! text is translated wherever in the session it was written. The table below is the only
//! translation there is: English is the key, a missing entry stays English. Until the client
//! has sent `UTF8`, a translated text is spelled in ASCII (`ü` as `ue`): a client that never
//! asked for UTF-8 gets none, in response texts as in RFC 1939.

use std::borrow::Cow;

use pop3_proto::{LanguageRange, Reply};

/// A language the response texts come in.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Language {
    #[default]
    English,
    German,
}

impl Language {
    /// Every language, the default first, for the `LANG` listing.
    const ALL: [Language; 2] = [Language::English, Language::German];

    /// The RFC 5646 tag.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::German => "de",
        }
    }

    /// The language's name in itself, for the `LANG` listing.
    fn name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::German => "Deutsch",
        }
    }

    /// RFC 4647 §3.4 lookup: the range, then the range with its last subtag cut off, and so on
    /// (`de-ch` finds `de`); `*` is the default. `None` when nothing matches.
    pub(crate) fn lookup(range: &LanguageRange) -> Option<Language> {
        let mut range = range.as_str();
        if range == "*" {
            return Some(Language::default());
        }
        loop {
            if let Some(lang) = Self::ALL.into_iter().find(|l| l.tag() == range) {
                return Some(lang);
            }
            range = range.rsplit_once('-')?.0;
        }
    }
}

/// English text → German text. `{}` stands for a number in both (`message {} already deleted`).
const GERMAN: &[(&str, &str)] = &[
    // The parser's `ParseError` texts.
    ("empty command", "leerer Befehl"),
    ("unknown command", "unbekannter Befehl"),
    ("missing argument", "Argument fehlt"),
    (
        "invalid message number or line count",
        "ungültige Nachrichtennummer oder Zeilenzahl",
    ),
    ("too many arguments", "zu viele Argumente"),
    (
        "argument is not valid UTF-8",
        "Argument ist kein gültiges UTF-8",
    ),
    ("invalid base64", "ungültiges Base64"),
    ("invalid language range", "ungültiger Sprachbereich"),
    // The session's own.
    ("command line too long", "Befehlszeile zu lang"),
    (
        "command not valid before login",
        "Befehl vor der Anmeldung nicht erlaubt",
    ),
    ("already logged in", "bereits angemeldet"),
    (
        "invalid login or password",
        "ungültiger Benutzername oder ungültiges Passwort",
    ),
    ("send USER first", "zuerst USER senden"),
    (
        "plaintext login is not allowed here; use STLS first",
        "Klartext-Anmeldung ist hier nicht erlaubt; zuerst STLS verwenden",
    ),
    ("already using TLS", "TLS ist bereits aktiv"),
    ("TLS is not available", "TLS ist nicht verfügbar"),
    (
        "STLS is only valid before login",
        "STLS ist nur vor der Anmeldung erlaubt",
    ),
    (
        "STLS is not allowed after UTF8",
        "STLS ist nach UTF8 nicht erlaubt",
    ),
    (
        "UTF8 is only valid before login",
        "UTF8 ist nur vor der Anmeldung erlaubt",
    ),
    ("no such message", "keine solche Nachricht"),
    (
        "message {} already deleted",
        "Nachricht {} ist bereits gelöscht",
    ),
    (
        "maildrop is locked by another session",
        "das Postfach ist von einer anderen Sitzung gesperrt",
    ),
    (
        "logged in too recently; try again in {} seconds",
        "zu kurz nach der letzten Anmeldung; in {} Sekunden erneut versuchen",
    ),
    (
        "mailbox is being moved, try again in a minute",
        "das Postfach wird umgezogen, in einer Minute erneut versuchen",
    ),
    (
        "temporary server failure, try again later",
        "vorübergehender Serverfehler, später erneut versuchen",
    ),
    (
        "some deleted messages not removed",
        "einige gelöschte Nachrichten wurden nicht entfernt",
    ),
    (
        "server shutting down, try again later",
        "der Server wird beendet, später erneut versuchen",
    ),
    (
        "session ended by an administrator",
        "Sitzung von einem Administrator beendet",
    ),
    (
        "too many bad commands, closing",
        "zu viele ungültige Befehle, Verbindung wird geschlossen",
    ),
    (
        "too much data before login",
        "zu viele Daten vor der Anmeldung",
    ),
    (
        "authentication response too long",
        "Authentifizierungsantwort zu lang",
    ),
    ("authentication cancelled", "Authentifizierung abgebrochen"),
    (
        "unsupported SASL mechanism",
        "nicht unterstützter SASL-Mechanismus",
    ),
    ("unknown language", "unbekannte Sprache"),
    ("language changed", "Sprache geändert"),
    ("UTF8 enabled", "UTF8 eingeschaltet"),
];

/// How this session speaks: its language, and whether the client asked for UTF-8.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Speech {
    pub(crate) language: Language,
    /// `UTF8` was accepted (RFC 6856 §2).
    pub(crate) utf8: bool,
}

impl Speech {
    /// `reply` in this session's language; untouched when there is nothing to change.
    pub(crate) fn localise<'a>(&self, reply: &'a Reply) -> Cow<'a, Reply> {
        if self.language == Language::English {
            return Cow::Borrowed(reply);
        }
        let text = match reply {
            Reply::Ok(text) | Reply::Err(_, text) => text,
            Reply::Multi { .. } | Reply::Challenge(_) => return Cow::Borrowed(reply),
        };
        let Some(translated) = translate(GERMAN, text) else {
            return Cow::Borrowed(reply);
        };
        let translated = if self.utf8 {
            translated
        } else {
            ascii(&translated)
        };
        Cow::Owned(match reply {
            Reply::Err(code, _) => Reply::Err(*code, translated),
            _ => Reply::Ok(translated),
        })
    }

    /// The answer to `LANG` without an argument.
    pub(crate) fn listing(&self) -> Reply {
        Reply::Multi {
            first: "language listing follows".into(),
            lines: Language::ALL
                .iter()
                .map(|l| format!("{} {}", l.tag(), l.name()))
                .collect(),
        }
    }

    /// `LANG range`: switch and say so in the new language (its tag first, as RFC 6856's
    /// example does), or refuse in the old one.
    pub(crate) fn switch(&mut self, range: &LanguageRange) -> Reply {
        match Language::lookup(range) {
            Some(language) => {
                self.language = language;
                Reply::Ok(format!("{} {}", language.tag(), "language changed"))
            }
            None => Reply::Err(None, "unknown language".into()),
        }
    }
}

/// The translation of `text` from `table`: an exact entry, or one whose `{}` matches a number.
fn translate(table: &[(&str, &str)], text: &str) -> Option<String> {
    // "de language changed": a tag in front of a table entry (the LANG reply).
    if let Some((tag, rest)) = text.split_once(' ')
        && Language::ALL.iter().any(|l| l.tag() == tag)
    {
        return translate(table, rest).map(|t| format!("{tag} {t}"));
    }
    table.iter().find_map(|&(en, other)| {
        let Some((before, after)) = en.split_once("{}") else {
            return (en == text).then(|| other.to_owned());
        };
        let number = text.strip_prefix(before)?.strip_suffix(after)?;
        (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
            .then(|| other.replacen("{}", number, 1))
    })
}

/// German spelled in ASCII, the way German is typed without umlauts; anything else becomes `?`.
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' => out.push_str("Ae"),
            'Ö' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            'ß' => out.push_str("ss"),
            c if c.is_ascii() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> LanguageRange {
        LanguageRange::parse(s.as_bytes()).unwrap()
    }

    fn german(utf8: bool) -> Speech {
        Speech {
            language: Language::German,
            utf8,
        }
    }

    #[test]
    fn lookup_follows_rfc_4647() {
        assert_eq!(Language::lookup(&range("de")), Some(Language::German));
        assert_eq!(Language::lookup(&range("de-ch")), Some(Language::German));
        assert_eq!(
            Language::lookup(&range("de-ch-1901")),
            Some(Language::German)
        );
        assert_eq!(Language::lookup(&range("en-gb")), Some(Language::English));
        assert_eq!(Language::lookup(&range("*")), Some(Language::English));
        assert_eq!(Language::lookup(&range("fr")), None);
        assert_eq!(Language::lookup(&range("d")), None);
        assert_eq!(Language::lookup(&range("deu")), None);
    }

    #[test]
    fn texts_are_translated_with_their_numbers_and_codes() {
        let err = |t: &str| Reply::Err(Some(pop3_proto::RespCode::Auth), t.into());
        assert_eq!(
            *german(true).localise(&err("invalid login or password")),
            err("ungültiger Benutzername oder ungültiges Passwort")
        );
        assert_eq!(
            *german(true).localise(&Reply::Err(None, "message 12 already deleted".into())),
            Reply::Err(None, "Nachricht 12 ist bereits gelöscht".into())
        );
        // Not a number where `{}` is: not the entry, left alone.
        let odd = Reply::Err(None, "message x already deleted".into());
        assert_eq!(*german(true).localise(&odd), odd);
        // Untranslated texts and data stay as they are.
        let stat = Reply::Ok("2 320".into());
        assert_eq!(*german(true).localise(&stat), stat);
        let unknown = err("invalid login or password");
        assert_eq!(*Speech::default().localise(&unknown), unknown);
    }

    #[test]
    fn without_utf8_mode_translations_are_ascii() {
        let reply = Reply::Err(None, "no such message".into());
        assert_eq!(
            *german(false).localise(&Reply::Err(
                None,
                "temporary server failure, try again later".into()
            )),
            Reply::Err(
                None,
                "voruebergehender Serverfehler, spaeter erneut versuchen".into()
            )
        );
        assert_eq!(
            *german(false).localise(&reply),
            Reply::Err(None, "keine solche Nachricht".into())
        );
        for (_, de) in GERMAN {
            assert!(ascii(de).is_ascii(), "{de}");
            assert!(
                !ascii(de).contains('?'),
                "{de} has a letter without an ASCII spelling"
            );
        }
    }

    #[test]
    fn every_table_entry_is_distinct_and_keeps_its_placeholder() {
        for (i, (en, de)) in GERMAN.iter().enumerate() {
            assert_eq!(en.matches("{}").count(), de.matches("{}").count(), "{en}");
            assert!(
                GERMAN[i + 1..].iter().all(|(other, _)| other != en),
                "{en} twice"
            );
        }
    }

    #[test]
    fn switching_answers_in_the_new_language() {
        let mut speech = Speech {
            language: Language::English,
            utf8: true,
        };
        let reply = speech.switch(&range("de-AT".to_ascii_lowercase().as_str()));
        assert_eq!(speech.language, Language::German);
        assert_eq!(
            *speech.localise(&reply),
            Reply::Ok("de Sprache geändert".into())
        );
        let refused = speech.switch(&range("fr"));
        assert_eq!(speech.language, Language::German);
        assert_eq!(
            *speech.localise(&refused),
            Reply::Err(None, "unbekannte Sprache".into())
        );
        let back = speech.switch(&range("*"));
        assert_eq!(
            *speech.localise(&back),
            Reply::Ok("en language changed".into())
        );
    }
}
