//! Bulletins (issue 21 item 4) end to end: `pophost bulletin post` delivers at once and a real
//! POP3 client (Python's poplib) retrieves the notice from the domain's postmaster; a bulletin
//! scheduled a few seconds ahead arrives through `serve`'s bulletin job; users created later
//! do not get it; a domain admin posts through the admin UI, only to their own domain.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{AdminHttp, PASSWORD, Pop3, Server, show};

const ADMIN_PW: &str = "admin password 1";

fn cli_ok(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The message count of a mailbox, over POP3.
fn count(s: &Server, user: &str) -> usize {
    let mut c = Pop3::login(s.pop3, user);
    let (n, _) = c.stat();
    c.cmd("QUIT");
    n
}

/// The UIDL line, headers and body of every message, retrieved with Python's poplib (RETR).
fn poplib_retr(s: &Server, user: &str) -> String {
    let script = "import poplib,sys\n\
        p=poplib.POP3(sys.argv[1],int(sys.argv[2]))\n\
        p.user(sys.argv[3]); p.pass_(sys.argv[4])\n\
        n=len(p.list()[1])\n\
        for i in range(1,n+1):\n    \
            print(p.uidl(i).decode())\n    \
            print(b'\\n'.join(p.retr(i)[1]).decode('utf-8'))\n    \
            print('=====')\n\
        p.quit()\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(s.pop3.ip().to_string())
        .arg(s.pop3.port().to_string())
        .args([user, PASSWORD])
        .output()
        .expect("python3");
    assert!(out.status.success(), "poplib: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rfc3339_in(secs: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{secs} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_bulletin_from_the_cli_reaches_pop3_clients_now_or_when_scheduled() {
    let s = Server::start_with_config("[bulletins]\ninterval_secs = 1\n");
    s.add_user("john@a.example");
    s.add_user("jane@a.example");
    s.add_user("mary@b.example");
    let body = s.data().dir.join("notice.txt");
    std::fs::write(&body, "Die Server werden heute um 22:00 neu gestartet.\n").expect("body");
    let body = body.to_str().expect("path");

    let out = cli_ok(
        &s,
        &[
            "bulletin",
            "post",
            "--domain",
            "a.example",
            "--subject",
            "Wartung für heute",
            "--body-file",
            body,
        ],
    );
    assert!(out.contains("delivered to 2 mailbox(es)"), "{out}");
    let got = poplib_retr(&s, "john@a.example");
    assert!(
        got.contains("From: Postmaster <postmaster@a.example>"),
        "{got}"
    );
    assert!(got.contains("To: <john@a.example>"), "{got}");
    assert!(
        got.contains("Subject: =?UTF-8?B?V2FydHVuZyBmw7xyIGhldXRl?="),
        "{got}"
    );
    assert!(
        got.contains("Die Server werden heute um 22:00 neu gestartet."),
        "{got}"
    );
    assert_eq!(got.matches("=====").count(), 1, "{got}");
    assert_eq!(count(&s, "jane@a.example"), 1);
    assert_eq!(count(&s, "mary@b.example"), 0, "other domain");

    // Created after the posting: never gets it.
    s.add_user("late@a.example");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&s, "late@a.example"), 0);

    // Scheduled for all domains a few seconds ahead: the serve job delivers it once it is due.
    let at = rfc3339_in(5);
    let out = cli_ok(
        &s,
        &[
            "bulletin",
            "post",
            "--all",
            "--subject",
            "Security notice",
            "--body-file",
            body,
            "--at",
            &at,
        ],
    );
    assert!(out.contains("scheduled for"), "{out}");
    assert_eq!(count(&s, "mary@b.example"), 0, "not before it is due");
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&s, "mary@b.example") == 0 {
        assert!(
            Instant::now() < deadline,
            "the scheduled bulletin never arrived"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = poplib_retr(&s, "mary@b.example");
    assert!(
        got.contains("From: Postmaster <postmaster@b.example>"),
        "{got}"
    );
    assert!(got.contains("Subject: Security notice"), "{got}");
    // Both bulletins, each with a UIDL of its own.
    let john = poplib_retr(&s, "john@a.example");
    let uidls: Vec<&str> = john
        .lines()
        .filter(|l| l.starts_with("+OK "))
        .map(|l| l.rsplit(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(uidls.len(), 2, "{john}");
    assert_ne!(uidls[0], uidls[1]);
    assert_eq!(count(&s, "late@a.example"), 1, "created before it was due");
    s.add_user("later@a.example");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(&s, "later@a.example"), 0);

    let list = cli_ok(&s, &["bulletin", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].contains("all domains") && lines[0].contains("delivered"),
        "{list}"
    );
    assert!(lines[0].contains("4 mailbox(es)"), "{list}");
    assert!(
        lines[1].contains("a.example") && lines[1].contains("2 mailbox(es)"),
        "{list}"
    );
    let audit = s
        .data()
        .sql("SELECT count(*) FROM audit_log WHERE action = 'bulletin.post'");
    assert_eq!(audit, "2");
}

#[test]
fn a_domain_admin_posts_a_bulletin_to_their_domain_in_the_ui() {
    let s = Server::start();
    s.add_user("john@a.example");
    s.add_user("mary@b.example");
    cli_ok(
        &s,
        &[
            "admin",
            "add",
            "tenant@a.example",
            "--domain",
            "a.example",
            "--password",
            ADMIN_PW,
        ],
    );
    let admin = AdminHttp::sign_in(s.admin, "tenant@a.example", ADMIN_PW);
    let page = admin.get("/bulletins");
    assert_eq!(page.status, 200, "{}", page.body);

    let refused = admin.post(
        "/bulletins",
        &[
            ("domain", "b.example"),
            ("subject", "Hi"),
            ("body", "Not yours."),
        ],
    );
    assert_eq!(refused.status, 422, "{}", refused.body);
    let posted = admin.post(
        "/bulletins",
        &[
            ("domain", "a.example"),
            ("subject", "Hello from the UI"),
            ("body", "Hi."),
        ],
    );
    assert_eq!(posted.status, 303, "{}", posted.body);
    assert_eq!(count(&s, "mary@b.example"), 0);
    let mut c = Pop3::login(s.pop3, "john@a.example");
    let (status, message) = c.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    let message = String::from_utf8_lossy(&message);
    assert!(
        message.contains("Subject: Hello from the UI\r\n"),
        "{message}"
    );
    assert!(
        message.contains("From: Postmaster <postmaster@a.example>\r\n"),
        "{message}"
    );
    c.cmd("QUIT");
    let list = admin.get("/bulletins");
    assert!(list.body.contains("Hello from the UI"), "{}", list.body);
    assert!(
        list.body.contains(r#"<td class="recipients">1</td>"#),
        "{}",
        list.body
    );
}
