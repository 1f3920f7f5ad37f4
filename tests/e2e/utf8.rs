//! International mailboxes (issue 22, item 4: RFC 6856, RFC 6531), end to end on the real
//! binary: a mailbox `jöhn@bücher.example` reached by every spelling of its name (NFC or not,
//! any case, U-label or A-label, `@` or SDPS `+`) over LMTP with SMTPUTF8, POP3 (Python's
//! poplib, which speaks `UTF8`) and the CLI; a message with UTF-8 headers comes back byte for
//! byte; a password set in one Unicode form logs in typed in an equivalent one (SASLprep); and
//! `LANG` switches the `-ERR` texts to German.

use std::process::Command;

use crate::harness::*;

/// The mailbox as the admin creates it.
const JOHN: &str = "jöhn@bücher.example";
/// Set with a precomposed `ä` and a no-break space.
const PASSWORD_SET: &str = "pässwort\u{00A0}eins";
/// The same password as a client on another system may send it: a decomposed `ä` (a + U+0308)
/// and a plain space. SASLprep makes the two equal.
const PASSWORD_TYPED: &str = "pa\u{0308}sswort eins";

/// A message whose headers are UTF-8 (RFC 6532), with a line that needs dot-stuffing.
const MESSAGE: &str = "From: Jöhn Doe <jöhn@bücher.example>\r\n\
To: =?utf-8?q?ignored?= <jöhn@bücher.example>\r\n\
Subject: Grüße aus München 📬\r\n\
Message-ID: <ü1@bücher.example>\r\n\
\r\n\
Hallo Jöhn, ça va?\r\n\
.Punkt am Zeilenanfang\r\n";

/// Logs in with poplib after `UTF8`, checks CAPA, and writes message 1 (RETR, lines joined
/// with CRLF, as poplib un-stuffs them) to standard output as raw bytes.
const POPLIB_RETR: &str = r#"
import poplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = poplib.POP3(host, port, timeout=30)
caps = c.capa()
assert "UTF8" in caps and caps["UTF8"] == ["USER"], caps
assert "LANG" in caps, caps
assert c.utf8().startswith(b"+OK"), "UTF8 refused"
c.user(user)
c.pass_(password)
resp, lines, octets = c.retr(1)
c.quit()
sys.stdout.buffer.write(b"\r\n".join(lines) + b"\r\n")
"#;

/// Python's smtplib as an LMTP client: LHLO, then `MAIL FROM … SMTPUTF8` (smtplib refuses
/// to send it unless LHLO offered SMTPUTF8) with UTF-8 addresses; the message from standard
/// input as it is. Prints the refused recipients.
const SMTPLIB_LMTP: &str = r#"
import smtplib, sys
host, port, sender, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with smtplib.LMTP(host, port) as s:
    s.ehlo_or_helo_if_needed()
    assert s.has_extn("smtputf8"), s.esmtp_features
    print(s.sendmail(sender, [rcpt], sys.stdin.buffer.read(), mail_options=["SMTPUTF8", "BODY=8BITMIME"]))
"#;

fn smtplib_deliver(server: &Server, sender: &str, rcpt: &str, message: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .args(["60", "python3", "-c", SMTPLIB_LMTP])
        .arg(server.lmtp.ip().to_string())
        .arg(server.lmtp.port().to_string())
        .args([sender, rcpt])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write");
    let out = child.wait_with_output().expect("smtplib");
    assert!(out.status.success(), "smtplib: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn poplib_retr(server: &Server, user: &str, password: &str) -> Vec<u8> {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", POPLIB_RETR])
        .arg(server.pop3.ip().to_string())
        .arg(server.pop3.port().to_string())
        .args([user, password])
        .output()
        .expect("python3");
    assert!(out.status.success(), "poplib as {user}: {}", show(&out));
    out.stdout
}

fn setup() -> Server {
    let s = Server::start();
    cli_ok(&s, &["domain", "add", "Bücher.example"]);
    cli_ok(&s, &["user", "add", JOHN, "--password", PASSWORD_SET]);
    s
}

#[test]
fn a_utf8_mailbox_gets_utf8_mail_unchanged_under_every_spelling_of_its_name() {
    let s = setup();

    // LMTP: SMTPUTF8 is offered, needed for a UTF-8 address, and the recipient's name is
    // decomposed, upper case and an A-label, and still reaches the mailbox.
    let mut lmtp = Lmtp::connect(s.lmtp);
    let caps = lmtp.cmd("LHLO client.example");
    assert!(caps.lines().any(|l| &l[4..] == "SMTPUTF8"), "{caps}");
    let refused = lmtp.cmd("MAIL FROM:<absender@例え.jp>");
    assert!(refused.starts_with("553 5.6.7"), "{refused}");
    assert!(
        lmtp.cmd("MAIL FROM:<absender@例え.jp> SMTPUTF8 BODY=8BITMIME")
            .starts_with("250 2.1.0")
    );
    let rcpt = lmtp.cmd("RCPT TO:<JO\u{0308}HN@xn--bcher-kva.example>");
    assert!(rcpt.starts_with("250 2.1.5"), "{rcpt}");
    assert!(lmtp.cmd("DATA").starts_with("354"));
    lmtp.send_raw(&stuff(MESSAGE.as_bytes()));
    let done = lmtp.reply();
    assert!(done.starts_with("250 2.0.0"), "{done}");
    // Without SMTPUTF8 a UTF-8 recipient is refused, not mangled.
    assert!(lmtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    let rcpt = lmtp.cmd(&format!("RCPT TO:<{JOHN}>"));
    assert!(rcpt.starts_with("553 5.6.7"), "{rcpt}");
    lmtp.cmd("QUIT");

    // poplib with UTF8, as the U-label address and as the SDPS A-label form, the password
    // typed both ways: the message comes back exactly as delivered, after the headers pophost
    // puts in front (Return-Path with the UTF-8 sender kept, Received).
    for (user, password) in [
        (JOHN, PASSWORD_SET),
        ("JÖHN@BÜCHER.EXAMPLE", PASSWORD_TYPED),
        ("jöhn+xn--bcher-kva.example", PASSWORD_TYPED),
        ("jo\u{0308}hn%xn--bcher-kva.example", PASSWORD_SET),
    ] {
        let got = poplib_retr(&s, user, password);
        assert!(
            got.ends_with(MESSAGE.as_bytes()),
            "as {user}: {}",
            String::from_utf8_lossy(&got)
        );
        let text = String::from_utf8(got).expect("UTF-8");
        assert!(
            text.starts_with("Return-Path: <absender@例え.jp>\r\n"),
            "{text}"
        );
    }

    // TOP returns the same header bytes over a raw connection.
    let mut c = Pop3::connect(s.pop3);
    assert!(c.cmd("UTF8").starts_with("+OK"));
    assert!(c.cmd("USER jöhn@bücher.example").starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD_TYPED}"));
    assert!(r.starts_with("+OK"), "{r}");
    let (status, top) = c.fetch("TOP 1 0");
    assert!(status.starts_with("+OK"), "{status}");
    let header = MESSAGE.split("\r\n\r\n").next().unwrap();
    let top = String::from_utf8(top).expect("UTF-8");
    assert!(top.ends_with(&format!("{header}\r\n\r\n")), "{top}");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // A wrong password is wrong in every form, and a confusable name is no mailbox at all.
    let mut c = Pop3::connect(s.pop3);
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    assert!(c.cmd("PASS passwort eins").starts_with("-ERR [AUTH]"));
    // Cyrillic о (U+043E) for the o.
    assert!(
        c.cmd("USER j\u{043E}\u{0308}hn@bücher.example")
            .starts_with("+OK")
    );
    assert!(
        c.cmd(&format!("PASS {PASSWORD_SET}"))
            .starts_with("-ERR [AUTH]")
    );
}

/// Another LMTP client than the tests' own: Python's smtplib delivers with SMTPUTF8 to the
/// mailbox named by its U-label, and poplib, logged in by the A-label, reads it back unchanged.
#[test]
fn python_smtplib_delivers_utf8_mail_over_lmtp_with_smtputf8() {
    let s = setup();
    let refused = smtplib_deliver(&s, "ügo@例え.jp", "Jöhn@Bücher.example", MESSAGE.as_bytes());
    assert_eq!(refused, "{}", "no recipient refused");
    let got = poplib_retr(&s, "jöhn@xn--bcher-kva.example", PASSWORD_TYPED);
    assert!(
        got.ends_with(MESSAGE.as_bytes()),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.starts_with("Return-Path: <ügo@例え.jp>\r\n".as_bytes()));
}

#[test]
fn the_cli_finds_the_mailbox_by_either_label_and_explains_the_normalisation() {
    let s = setup();
    for name in [
        JOHN,
        "JÖHN@xn--bcher-kva.example",
        "jo\u{0308}hn@BÜCHER.example",
    ] {
        let shown = cli_ok(&s, &["user", "show", name]);
        assert!(
            shown.contains("jöhn@xn--bcher-kva.example"),
            "{name}: {shown}"
        );
    }
    let out = cli_ok(&s, &["login", "explain", "JO\u{0308}HN+Bücher.Example"]);
    for line in [
        "split as user+domain (SDPS",
        "local part, Unicode NFC: \"JO\\u{308}HN\" -> \"JÖHN\"",
        "local part, lower case: \"JÖHN\" -> \"jöhn\"",
        "domain, U-label bücher.example -> A-label xn--bcher-kva.example",
        "form: plus",
        "mailbox: jöhn@xn--bcher-kva.example",
        "user exists",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    let out = cli_ok(&s, &["login", "explain", "ｊｏｈｎ@bücher.example"]);
    assert!(out.contains("local part refused"), "{out}");
    // A confusable or compatibility name cannot be created either.
    for name in ["p\u{0430}ypal@bücher.example", "ｊｏｈｎ@bücher.example"] {
        let out = s.cli(&["user", "add", name, "--password", PASSWORD_SET]);
        assert!(
            !out.status.success() && show(&out).contains("invalid mailbox name"),
            "{name}: {}",
            show(&out)
        );
    }

    // The admin UI's user page, by the U-label and NFC name, and by the A-label with a
    // decomposed upper-case name (percent-encoded UTF-8 in the path).
    const ADMIN: &str = "root@isp.example";
    cli_ok(
        &s,
        &[
            "admin",
            "add",
            ADMIN,
            "--super",
            "--password",
            "admin password 1",
        ],
    );
    let admin = AdminHttp::sign_in(s.admin, ADMIN, "admin password 1");
    for path in [
        "/domains/b%C3%BCcher.example/users/j%C3%B6hn",
        "/domains/xn--bcher-kva.example/users/JO%CC%88HN",
    ] {
        let page = admin.get(path);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains("jöhn"), "{path}: {}", page.body);
    }
    let missing = admin.get("/domains/xn--bcher-kva.example/users/j%D0%BEhn");
    assert_eq!(missing.status, 404, "a Cyrillic о is another name");
}

#[test]
fn lang_switches_the_error_texts_and_utf8_follows_rfc_6856() {
    let s = setup();
    let mut c = Pop3::connect(s.pop3);
    let caps = c.capa();
    assert!(caps.contains(&"UTF8 USER".to_string()), "{caps:?}");
    assert!(caps.contains(&"LANG".to_string()), "{caps:?}");

    assert!(c.cmd("LANG").starts_with("+OK"));
    let listing = c.multi();
    assert_eq!(listing, ["en English", "de Deutsch"]);

    assert_eq!(c.cmd("RETR 1"), "-ERR command not valid before login");
    assert_eq!(c.cmd("LANG fr"), "-ERR unknown language");
    assert_eq!(c.cmd("LANG de_DE"), "-ERR invalid language range");
    // Lookup (RFC 4647): de-CH falls back to de. Before UTF8 the German is spelled in ASCII.
    assert_eq!(c.cmd("LANG de-CH"), "+OK de Sprache geaendert");
    // The third bad command before login (RETR, LANG de_DE, this): the budget of 3 is spent.
    assert_eq!(
        c.cmd("RETR 1"),
        "-ERR Befehl vor der Anmeldung nicht erlaubt"
    );
    assert_eq!(c.cmd("LANG fr"), "-ERR unbekannte Sprache");
    assert_eq!(c.cmd("UTF8"), "+OK UTF8 eingeschaltet");
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS falsch"),
        "-ERR [AUTH] ungültiger Benutzername oder ungültiges Passwort"
    );
    // RFC 6856 §2: no STLS after UTF8.
    assert_eq!(c.cmd("STLS"), "-ERR STLS ist nach UTF8 nicht erlaubt");
    assert_eq!(c.cmd("LANG *"), "+OK en language changed");
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD_SET}")).starts_with("+OK"));
    // UTF8 is valid before login only; LANG in both states.
    assert_eq!(c.cmd("UTF8"), "-ERR UTF8 is only valid before login");
    assert_eq!(c.cmd("LANG de"), "+OK de Sprache geändert");
    assert_eq!(c.cmd("RETR 1"), "-ERR keine solche Nachricht");
    assert_eq!(c.cmd("FOO"), "-ERR unbekannter Befehl");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // Each connection starts in English, without UTF-8 mode.
    let mut c = Pop3::connect(s.pop3);
    assert_eq!(c.cmd("RETR 1"), "-ERR command not valid before login");
}
