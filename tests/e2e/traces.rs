//! Protocol traces (issue 21, item 5), end to end: an admin starts a trace of john from his user
//! page; john's sessions (USER/PASS by a raw client, AUTH PLAIN by curl with an initial
//! response and by a raw client without one) show up in the downloaded trace with their
//! commands and first reply lines, while his password, the base64 PLAIN responses and message
//! bodies appear nowhere; jane's sessions are not traced; a stopped trace records no more; an
//! expired trace is deleted with its lines.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::harness::*;

const JOHN: &str = "john@example.com";
const JANE: &str = "jane@example.com";
const ADMIN: &str = "root@isp.example";
const ADMIN_PW: &str = "admin password 1";
const BODY_TEXT: &str = "the quarterly figures are confidential 4711";
const TRACE: &str = "/domains/example.com/users/john/trace";

fn mail(subject: &str) -> Vec<u8> {
    format!("From: a@example.net\r\nSubject: {subject}\r\n\r\n{BODY_TEXT}\r\nlast line\r\n")
        .into_bytes()
}

/// Waits for what frontends learn by polling the store (every 2 s).
fn frontends_catch_up() {
    std::thread::sleep(Duration::from_millis(3000));
}

fn curl_plain(server: &Server, path: &str) {
    let out = Command::new("timeout")
        .args([
            "60",
            "curl",
            "-sS",
            "--login-options",
            "AUTH=PLAIN",
            "--sasl-ir",
        ])
        .args(["--user", &format!("{JOHN}:{PASSWORD}")])
        .arg(format!("pop3://{}/{path}", server.pop3))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {}", show(&out));
    if !path.is_empty() {
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains(BODY_TEXT), "curl RETR: {body}");
    }
}

/// The trace as the user page's download gives it, once it holds `quits` QUIT commands (lines
/// are written asynchronously).
fn download(admin: &AdminHttp, quits: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = admin.get(&format!("{TRACE}/download"));
        assert_eq!(res.status, 200, "{}", res.body);
        assert!(
            res.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{:?}",
            res.headers
        );
        if res.body.matches(" C QUIT\n").count() >= quits || Instant::now() > deadline {
            return res.body;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_trace_records_commands_and_first_reply_lines_without_secrets() {
    let s = Server::start();
    s.add_user(JOHN);
    s.add_user(JANE);
    deliver(&s, JOHN, &mail("for john"));
    deliver(&s, JANE, &mail("for jane"));
    let out = s.cli(&["admin", "add", ADMIN, "--super", "--password", ADMIN_PW]);
    assert!(out.status.success(), "{}", show(&out));
    let admin = AdminHttp::sign_in(s.admin, ADMIN, ADMIN_PW);

    // Out of range: refused, nothing started.
    let res = admin.post(&format!("{TRACE}/start"), &[("minutes", "61")]);
    assert_eq!(res.status, 303, "{}", res.body);
    assert!(admin.get(TRACE).body.contains("id=\"no-trace\""));

    let res = admin.post(&format!("{TRACE}/start"), &[("minutes", "5")]);
    assert_eq!(res.status, 303, "{}", res.body);
    let page = admin.get("/domains/example.com/users/john");
    assert!(
        page.body
            .contains("Recording this user&#x27;s POP3 sessions")
            || page.body.contains("Recording this user's POP3 sessions"),
        "{}",
        page.body
    );
    frontends_catch_up();

    // USER/PASS, LIST, RETR, QUIT.
    let mut c = Pop3::login(s.pop3, JOHN);
    assert!(c.cmd("LIST").starts_with("+OK"));
    assert_eq!(c.multi().len(), 1);
    let (ok, body) = c.fetch("RETR 1");
    assert!(ok.starts_with("+OK"), "{ok}");
    assert!(String::from_utf8_lossy(&body).contains(BODY_TEXT));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // AUTH PLAIN with an initial response (curl), LIST and RETR.
    curl_plain(&s, "");
    curl_plain(&s, "1");
    // AUTH PLAIN with the response on a line of its own.
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{JOHN}\0{PASSWORD}"));
    let mut c = Pop3::connect(s.pop3);
    assert!(c.cmd("AUTH PLAIN").starts_with('+'));
    assert!(c.cmd(&token).starts_with("+OK"));
    assert!(c.cmd("STAT").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Jane is not traced.
    let mut c = Pop3::login(s.pop3, JANE);
    let (ok, _) = c.fetch("RETR 1");
    assert!(ok.starts_with("+OK"), "{ok}");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let text = download(&admin, 4);
    for expected in [
        " C USER john@example.com\n",
        " S +OK send PASS\n",
        " C PASS <redacted>\n",
        " C LIST\n",
        " C RETR 1\n",
        " C AUTH PLAIN <redacted>\n",
        " C AUTH PLAIN\n",
        " C <SASL response redacted>\n",
        " C STAT\n",
        " S +OK pophost signing off",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(text.contains(" octets\n"), "RETR's first line:\n{text}");
    assert_eq!(text.matches(" C QUIT\n").count(), 4, "{text}");
    for secret in [PASSWORD, token.as_str(), BODY_TEXT, "last line", "for john"] {
        assert!(!text.contains(secret), "{secret:?} recorded:\n{text}");
    }
    assert!(!text.contains("jane"), "jane's session recorded:\n{text}");
    // The page shows the same lines.
    let page = admin.get(TRACE);
    assert!(page.body.contains("RETR 1"), "{}", page.body);
    assert!(!page.body.contains(PASSWORD));
    // The CLI reads the same trace.
    let out = s.cli(&["user", "trace", "show", JOHN]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" C RETR 1"));
    let out = s.cli(&["user", "trace", "show", JANE]);
    assert!(!out.status.success(), "jane has no trace: {}", show(&out));

    // Audited.
    let audit = admin.get("/audit");
    for action in ["user.trace.start", "user.trace.download"] {
        assert!(audit.body.contains(action), "{action} not audited");
    }

    // Stopped: john's next session is not recorded, the trace stays readable.
    let res = admin.post(&format!("{TRACE}/stop"), &[]);
    assert_eq!(res.status, 303, "{}", res.body);
    assert!(admin.get("/audit").body.contains("user.trace.stop"));
    frontends_catch_up();
    let mut c = Pop3::login(s.pop3, JOHN);
    assert!(c.cmd("NOOP").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Lines are written within a moment: time enough to show up, had they been recorded.
    std::thread::sleep(Duration::from_millis(2000));
    let after = download(&admin, 0);
    assert!(
        !after.contains(" C NOOP\n"),
        "recorded after stop:\n{after}"
    );
    assert_eq!(after.matches(" C QUIT\n").count(), 4, "{after}");
}

#[test]
fn an_expired_trace_is_deleted_with_its_lines() {
    let s = Server::start();
    s.add_user(JOHN);
    let out = s.cli(&["user", "trace", "start", JOHN, "--minutes", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    frontends_catch_up();
    let mut c = Pop3::login(s.pop3, JOHN);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let data = s.data();
    let deadline = Instant::now() + Duration::from_secs(10);
    while data.sql("SELECT count(*) FROM trace_lines") == "0" {
        assert!(Instant::now() < deadline, "no lines recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The minute is up (moved back rather than waited for).
    data.sql("UPDATE traces SET until_at = until_at - 120000");
    let out = s.cli(&["user", "trace", "show", JOHN]);
    assert!(!out.status.success(), "an expired trace is not shown");
    // Deleted by the frontend within seconds (every 10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while data.sql("SELECT count(*) FROM traces") != "0"
        || data.sql("SELECT count(*) FROM trace_lines") != "0"
    {
        assert!(Instant::now() < deadline, "expired trace not deleted");
        std::thread::sleep(Duration::from_millis(500));
    }
}
