//! Re-download alarms (issue 21, item 3), end to end on the real binary: Python's poplib
//! downloads a mailbox of 60 leaving it on the server, then downloads it all again; and two
//! client addresses (127.0.0.1 and 127.0.0.2) each delete mail as it arrives. The user page, a
//! domain admin's and a super admin's dashboard show the alarms, and `/metrics` counts them per
//! domain.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::ops::scrape;

const JOHN: &str = "john@example.com";
const JANE: &str = "jane@example.com";
const ADMIN: &str = "root@isp.example";
const DOMAIN_ADMIN: &str = "help@other.example";
const ADMIN_PW: &str = "admin password 1";

/// Downloads every message with RETR and QUITs without deleting, as a leave-on-server client
/// that knows no UIDLs does; prints how many it retrieved.
const DOWNLOAD_ALL: &str = r#"
import poplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = poplib.POP3(host, port, timeout=30)
c.user(user)
c.pass_(password)
n, _ = c.stat()
for i in range(1, n + 1):
    c.retr(i)
c.quit()
print(n)
"#;

fn download_all(server: &Server, user: &str) -> usize {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", DOWNLOAD_ALL])
        .arg(server.pop3.ip().to_string())
        .arg(server.pop3.port().to_string())
        .args([user, PASSWORD])
        .output()
        .expect("python3");
    assert!(out.status.success(), "poplib: {}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count")
}

fn cli_ok(server: &Server, args: &[&str]) {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
}

/// The `<section id="alarms">` of a page.
fn alarms_section(body: &str) -> &str {
    body.split(r#"<section id="alarms""#)
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no alarms section: {body}"))
}

/// The counter's value for one domain and kind (0 when absent).
fn counted(server: &Server, domain: &str, kind: &str) -> f64 {
    scrape(server)
        .into_iter()
        .filter(|(series, _)| {
            series.starts_with("pophost_redownload_alarms_total{")
                && series.contains(&format!(r#"domain="{domain}""#))
                && series.contains(&format!(r#"kind="{kind}""#))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_second_full_download_is_flagged_on_the_user_page_dashboard_and_metrics() {
    let s = Server::start();
    s.add_user(JOHN);
    cli_ok(&s, &["domain", "add", "other.example"]);
    import_messages(&s, JOHN, 60);

    // The first download of everything is what any new client does.
    assert_eq!(download_all(&s, JOHN), 60);
    cli_ok(
        &s,
        &["admin", "add", ADMIN, "--super", "--password", ADMIN_PW],
    );
    let admin = AdminHttp::sign_in(s.admin, ADMIN, ADMIN_PW);
    let page = admin.get("/domains/example.com/users/john");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains(r#"id="alarms""#), "{}", page.body);
    assert_eq!(counted(&s, "example.com", "redownload"), 0.0);

    // The same 60 again: a client without the UIDLs.
    assert_eq!(download_all(&s, JOHN), 60);
    let page = admin.get("/domains/example.com/users/john");
    assert_eq!(page.status, 200, "{}", page.body);
    let section = alarms_section(&page.body);
    assert!(
        section.contains(
            "john@example.com re-downloaded 60 messages from a new client (127.0.0.1, USER) at 20"
        ),
        "{section}"
    );
    let dashboard = admin.get("/");
    let section = alarms_section(&dashboard.body);
    assert!(
        section.contains(r#"<a href="/domains/example.com/users/john">john@example.com re-downloaded 60 messages"#),
        "{section}"
    );
    assert_eq!(counted(&s, "example.com", "redownload"), 1.0);

    // A domain admin of another domain sees nothing of it.
    cli_ok(
        &s,
        &[
            "admin",
            "add",
            DOMAIN_ADMIN,
            "--domain",
            "other.example",
            "--password",
            ADMIN_PW,
        ],
    );
    let other = AdminHttp::sign_in(s.admin, DOMAIN_ADMIN, ADMIN_PW);
    let dashboard = other.get("/");
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    assert!(
        !dashboard.body.contains("re-downloaded"),
        "{}",
        dashboard.body
    );
}

/// A POP3 connection to `dst` from the local address `src`.
fn connect_from(src: IpAddr, dst: SocketAddr) -> Pop3 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(src, 0)).expect("bind client");
        socket.connect(dst).await.expect("connect")
    });
    let stream: TcpStream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // Reads and checks the greeting.
    Pop3::from_stream(stream)
}

/// A client that deletes what it downloads: RETR and DELE every message, then QUIT.
fn take_all(server: &Server, from: [u8; 4]) {
    let mut c = connect_from(IpAddr::from(from), server.pop3);
    assert!(c.cmd(&format!("USER {JANE}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    assert!(r.starts_with("+OK"), "{r}");
    let (n, _) = c.stat();
    assert!(n > 0, "mail to take");
    for i in 1..=n {
        let (ok, _) = c.fetch(&format!("RETR {i}"));
        assert!(ok.starts_with("+OK"), "{ok}");
        assert!(c.cmd(&format!("DELE {i}")).starts_with("+OK"));
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn two_addresses_deleting_on_arrival_are_flagged() {
    let s = Server::start();
    s.add_user(JANE);
    // One phone deleting as mail arrives, poll after poll: not an alarm.
    for i in 0..2 {
        deliver(&s, JANE, &message(&format!("first {i}")));
        take_all(&s, [127, 0, 0, 1]);
    }
    cli_ok(
        &s,
        &["admin", "add", ADMIN, "--super", "--password", ADMIN_PW],
    );
    let admin = AdminHttp::sign_in(s.admin, ADMIN, ADMIN_PW);
    let page = admin.get("/domains/example.com/users/jane");
    assert!(!page.body.contains(r#"id="alarms""#), "{}", page.body);

    // A second device, from another address, doing the same.
    deliver(&s, JANE, &message("second"));
    take_all(&s, [127, 0, 0, 2]);
    let page = admin.get("/domains/example.com/users/jane");
    let section = alarms_section(&page.body);
    assert!(section.contains("alarm-quick_delete"), "{section}");
    assert!(
        section.contains(
            "jane@example.com deleted 1 message within 60 s of delivery from a second client \
             (127.0.0.2, USER); another client (127.0.0.1) did the same"
        ),
        "{section}"
    );
    assert!(alarms_section(&admin.get("/").body).contains("jane@example.com deleted 1 message"));
    assert_eq!(counted(&s, "example.com", "quick_delete"), 1.0);
    assert_eq!(counted(&s, "example.com", "redownload"), 0.0);
}
