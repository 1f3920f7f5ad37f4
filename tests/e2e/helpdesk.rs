//! The help desk's daily jobs in a real browser, each started from the dashboard and counted in
//! clicks (a form submitted with Enter counts as a click): find a user, reset a password, end a
//! session, set a quota, see the last login. Each must take at most three; the counts are printed
//! (`cargo test -p pophost --test e2e -- helpdesk:: --nocapture`) and the result is checked where
//! it shows: over POP3, in the store, on the page.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::browser::Browser;
use crate::harness::*;

const SUPER: &str = "desk@isp.example";
const SUPER_PASSWORD: &str = "correct horse battery staple";
const USER: &str = "john@customer.example";
const PASSWORD: &str = "old password 1";
/// The most clicks a daily job may take from the dashboard.
const MAX_CLICKS: u32 = 3;

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A server with a super admin, a customer domain of a few hundred users (so the user is not on
/// the first page by chance) and `USER`, and a browser signed in on the dashboard.
async fn desk() -> (Server, Browser) {
    let server = Server::start();
    ok(server.cli(&[
        "admin",
        "add",
        SUPER,
        "--super",
        "--password",
        SUPER_PASSWORD,
    ]));
    ok(server.cli(&["domain", "add", "customer.example"]));
    ok(server.cli(&["domain", "add", "other.example"]));
    let mut csv = String::from("address,password\n");
    for i in 0..300 {
        csv.push_str(&format!("user{i:03}@customer.example,pw-{i:03}-long\n"));
    }
    csv.push_str(&format!("{USER},{PASSWORD}\n"));
    let file = server.data().dir.join("users.csv");
    std::fs::write(&file, csv).expect("csv");
    ok(server.cli(&["import", "accounts", "csv", file.to_str().expect("path")]));
    let b = Browser::start(server.admin).await;
    b.sign_in(SUPER, SUPER_PASSWORD).await;
    (server, b)
}

/// Counts the clicks of one job.
struct Job<'a> {
    b: &'a Browser,
    name: &'static str,
    clicks: u32,
}

impl<'a> Job<'a> {
    /// Starts `name` on the dashboard.
    async fn start(b: &'a Browser, name: &'static str) -> Self {
        b.goto("/").await;
        Self { b, name, clicks: 0 }
    }

    /// A click that loads a page.
    async fn click(&mut self, css: &str) {
        self.clicks += 1;
        self.b.click_through(css).await;
    }

    /// Types `text` into the header's search box and submits it (one click: Enter).
    async fn search(&mut self, text: &str) {
        self.b.fill("#top-search input[name=q]", text).await;
        self.click("#top-search button[type=submit]").await;
    }

    fn done(self) -> u32 {
        println!("daily job {:?}: {} click(s)", self.name, self.clicks);
        assert!(
            self.clicks <= MAX_CLICKS,
            "{} took {} clicks",
            self.name,
            self.clicks
        );
        self.clicks
    }
}

/// The flash message the page shows.
async fn flash(b: &Browser) -> String {
    b.text("#flash").await
}

fn pop3_login(addr: SocketAddr, user: &str, password: &str) -> Result<Pop3, String> {
    let mut c = Pop3::connect(addr);
    let r = c.cmd(&format!("USER {user}"));
    if !r.starts_with("+OK") {
        return Err(r);
    }
    let r = c.cmd(&format!("PASS {password}"));
    if r.starts_with("+OK") { Ok(c) } else { Err(r) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_a_user_reset_the_password_and_set_a_quota() {
    let (server, b) = desk().await;

    // Find a user: the address typed in the header's search box leads straight to their page.
    let mut job = Job::start(&b, "find a user").await;
    job.search(USER).await;
    assert_eq!(b.path().await, "/domains/customer.example/users/john");
    assert!(b.text("main h1").await.contains(USER));
    job.done();
    b.shot("search-one-match").await;

    // A part of an address lists the matches.
    b.goto("/").await;
    b.fill("#top-search input[name=q]", "user01").await;
    b.click_through("#top-search button[type=submit]").await;
    assert!(b.page_text().await.contains("user010@customer.example"));
    b.shot("search-results").await;

    // Reset a password: the page says so, and POP3 takes the new one only.
    let mut job = Job::start(&b, "reset a password").await;
    job.search(USER).await;
    b.fill("#password", "new password 2").await;
    job.click("#set-password").await;
    assert_eq!(flash(&b).await, format!("Password of {USER} changed"));
    job.done();
    b.shot("flash-password").await;
    pop3_login(server.pop3, USER, "new password 2").expect("the new password works");
    assert!(pop3_login(server.pop3, USER, PASSWORD).is_err());

    // Set a quota.
    let mut job = Job::start(&b, "set a quota").await;
    job.search(USER).await;
    b.fill("#quota_bytes", "500M").await;
    job.click("#save").await;
    let said = flash(&b).await;
    assert!(said.contains(USER) && said.contains("500"), "{said}");
    job.done();
    let shown = ok(server.cli(&["user", "show", USER]));
    assert!(
        shown.contains("524288000") || shown.contains("500"),
        "{shown}"
    );

    // A quota above the domain's stays on the page under its field, with what was typed.
    ok(server.cli(&["domain", "set", "customer.example", "--quota-bytes", "1G"]));
    b.goto("/domains/customer.example/users/john").await;
    b.fill("#quota_bytes", "2G").await;
    b.click_through("#save").await;
    assert!(!b.text("#error-quota_bytes").await.is_empty());
    assert_eq!(b.prop("#quota_bytes", "value").await.as_deref(), Some("2G"));
    b.shot("user-quota-error").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_a_session_and_see_the_last_login() {
    let (server, b) = desk().await;
    let mut session = pop3_login(server.pop3, USER, PASSWORD).expect("login");
    assert!(session.cmd("STAT").starts_with("+OK"));

    // See the last login: time, client address, mechanism, TLS.
    let mut job = Job::start(&b, "see the last login").await;
    job.search(USER).await;
    let last = b.text("#last-login").await;
    assert!(last.contains("127.0.0.1"), "{last}");
    assert!(last.contains("USER"), "{last}");
    job.done();
    b.shot("user-activity").await;

    // End a session: the sessions page, filtered to the user, and its button.
    let mut job = Job::start(&b, "end a session").await;
    job.click("nav a[href='/sessions']").await;
    let rows = b.page_text().await;
    assert!(rows.contains(USER) && rows.contains("127.0.0.1"), "{rows}");
    job.click("#sessions button.end-session").await;
    assert_eq!(flash(&b).await, format!("Session of {USER} ended"));
    job.done();
    b.shot("flash-session-ended").await;
    // The POP3 session is closed within seconds and deleted nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = session.try_line_after("NOOP");
        if !r.as_deref().is_some_and(|r| r.starts_with("+OK")) {
            break;
        }
        assert!(Instant::now() < deadline, "the session still answers");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Ending it again says there is none, on the page, not as an error page.
    b.goto("/sessions").await;
    assert!(b.try_find("#sessions button.end-session").await.is_none());
    b.quit().await;
}
