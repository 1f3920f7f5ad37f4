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
async fn daily_job_find_a_user() {
    let (_server, b) = desk().await;

    // The address typed in the header's search box leads straight to the user's page.
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
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_job_reset_a_password() {
    let (server, b) = desk().await;

    // The page says so, and POP3 takes the new password only.
    let mut job = Job::start(&b, "reset a password").await;
    job.search(USER).await;
    b.fill("#password", "new password 2").await;
    job.click("#set-password").await;
    assert_eq!(flash(&b).await, format!("Password of {USER} changed"));
    job.done();
    b.shot("flash-password").await;
    pop3_login(server.pop3, USER, "new password 2").expect("the new password works");
    assert!(pop3_login(server.pop3, USER, PASSWORD).is_err());
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_job_set_a_quota() {
    let (server, b) = desk().await;

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
async fn daily_job_see_the_last_login() {
    let (server, b) = desk().await;
    let mut session = pop3_login(server.pop3, USER, PASSWORD).expect("login");
    assert!(session.cmd("QUIT").starts_with("+OK"));

    // Time, client address, mechanism, TLS.
    let mut job = Job::start(&b, "see the last login").await;
    job.search(USER).await;
    let last = b.text("#last-login").await;
    assert!(last.contains("127.0.0.1"), "{last}");
    assert!(last.contains("USER"), "{last}");
    job.done();
    b.shot("user-activity").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_job_end_a_session() {
    let (server, b) = desk().await;
    let mut session = pop3_login(server.pop3, USER, PASSWORD).expect("login");
    assert!(session.cmd("STAT").starts_with("+OK"));

    // The sessions page shows the session with its client address; its button ends it.
    let mut job = Job::start(&b, "end a session").await;
    job.click("nav a[href='/sessions']").await;
    let rows = b.page_text().await;
    assert!(rows.contains(USER) && rows.contains("127.0.0.1"), "{rows}");
    job.click("#sessions button.end-session").await;
    assert_eq!(flash(&b).await, format!("Session of {USER} ended"));
    job.done();
    b.shot("flash-session-ended").await;
    // The POP3 session is closed within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = session.try_line_after("NOOP");
        if !r.as_deref().is_some_and(|r| r.starts_with("+OK")) {
            break;
        }
        assert!(Instant::now() < deadline, "the session still answers");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its row is gone.
    b.goto("/sessions").await;
    assert!(b.try_find("#sessions button.end-session").await.is_none());
    b.quit().await;
}

/// `curl` against the API with `token`: the HTTP status.
fn api_status(server: &Server, method: &str, path: &str, token: &str, body: Option<&str>) -> u16 {
    let url = format!("http://{}{path}", server.admin);
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method];
    args.extend(["-H", auth.as_str()]);
    if let Some(body) = body {
        args.extend(["-H", "Content-Type: application/json", "--data", body]);
    }
    args.push(url.as_str());
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_added_rescoped_repassworded_disabled_and_removed() {
    let (server, b) = desk().await;
    const ANNA: &str = "anna@customer.example";

    b.goto("/").await;
    b.click_through("#nav-admins").await;
    b.fill("#email", ANNA).await;
    b.fill("#password", "anna's first password").await;
    b.fill("#domains", "customer.example").await;
    b.click_through("#add-admin").await;
    let said = flash(&b).await;
    assert!(
        said.starts_with(&format!("Added {ANNA} as")) && said.contains("customer.example"),
        "{said}"
    );
    let list = b.text("#admins").await;
    assert!(list.contains(ANNA) && list.contains(SUPER), "{list}");
    b.shot("admins").await;

    // Anna signs in elsewhere and sees only her domain.
    let anna = Browser::start(server.admin).await;
    anna.sign_in(ANNA, "anna's first password").await;
    anna.goto("/domains").await;
    let domains = anna.page_text().await;
    assert!(domains.contains("customer.example") && !domains.contains("other.example"));

    // Her domains change; a new password ends her session at once.
    b.goto("/admins").await;
    b.click_through("#admins a[href^='/admins/anna']").await;
    b.fill("#domains", "customer.example, other.example").await;
    b.click_through("#save-scope").await;
    assert!(flash(&b).await.contains("other.example"));
    b.fill("#password", "anna's second password").await;
    b.click_through("#set-password").await;
    assert_eq!(
        flash(&b).await,
        format!("Password of {ANNA} changed; their sessions and API tokens ended")
    );
    b.shot("admin-edit").await;
    anna.goto("/domains").await;
    assert_eq!(anna.path().await, "/signin", "her old session ended");
    anna.sign_in(ANNA, "anna's second password").await;
    anna.goto("/domains").await;
    assert!(anna.page_text().await.contains("other.example"));

    // Disabled: her session is gone and she cannot sign in.
    b.click_through("#disable").await;
    assert!(flash(&b).await.contains("disabled"), "{}", flash(&b).await);
    anna.goto("/domains").await;
    assert_eq!(anna.path().await, "/signin");
    anna.submit_signin(ANNA, "anna's second password").await;
    assert!(anna.page_text().await.contains("disabled"));

    // Removed, after a confirmation.
    b.click_through("#remove").await;
    b.click_through("#confirm").await;
    assert_eq!(flash(&b).await, format!("Admin {ANNA} removed"));
    assert!(!b.text("#admins").await.contains(ANNA));
    anna.quit().await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_password_sign_in_history_and_a_read_only_token() {
    let (server, b) = desk().await;

    // My account: the sign-in history, and a password change that needs the current one.
    b.goto("/").await;
    b.click_through("#nav-account").await;
    assert!(b.text("#signins").await.contains("127.0.0.1"));
    b.fill("#current", "not my password").await;
    b.fill("#password", "a brand new admin password").await;
    b.click_through("#change-password").await;
    assert!(!b.text("#error-current").await.is_empty());
    b.fill("#current", SUPER_PASSWORD).await;
    b.fill("#password", "a brand new admin password").await;
    b.click_through("#change-password").await;
    assert!(flash(&b).await.contains("changed"), "{}", flash(&b).await);
    b.shot("account").await;
    b.goto("/domains").await;
    assert_eq!(b.path().await, "/domains", "this browser stays signed in");

    // A read-only token that expires: reads work, writes are refused; revoking asks first.
    b.goto("/tokens").await;
    b.fill("#token-name", "monitoring").await;
    b.js("document.querySelector('#token-days').value = '30'")
        .await;
    b.click("#token-read-only").await;
    b.click_through("#create-token").await;
    let token = b.text("#new-token").await;
    let row = b.text("#tokens").await;
    assert!(
        row.contains("monitoring") && row.contains("read-only"),
        "{row}"
    );
    b.shot("tokens-read-only").await;
    assert_eq!(
        api_status(&server, "GET", "/api/v1/domains", &token, None),
        200
    );
    let create = r#"{"name":"new.example"}"#;
    assert_eq!(
        api_status(&server, "POST", "/api/v1/domains", &token, Some(create)),
        403
    );
    b.click_through("#tokens a.danger").await;
    b.click_through("#confirm").await;
    assert_eq!(flash(&b).await, "API token monitoring revoked");
    assert_eq!(
        api_status(&server, "GET", "/api/v1/domains", &token, None),
        401
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_sizes_jumps_and_a_confirmed_bulk_delete_with_select_all() {
    let (server, b) = desk().await;

    // 301 users at 100 a page: page 2, then a page past the end shows the last one.
    b.goto("/domains/customer.example/users").await;
    b.js("document.querySelector('#per-page').value = '100'")
        .await;
    b.fill("#jump-page", "2").await;
    b.click_through("#jump-go").await;
    assert_eq!(b.find_all("#bulk-form tbody tr").await.len(), 100);
    assert!(b.text("#pager").await.contains("Page 2 of 4"));
    b.goto("/domains/customer.example/users?per_page=100&page=999")
        .await;
    assert!(b.text("#pager").await.contains("Page 4 of 4"));
    assert_eq!(b.find_all("#bulk-form tbody tr").await.len(), 1);

    // The ten users matching "user00", all selected with one box, deleted after a confirmation.
    b.goto("/domains/customer.example/users?q=user00").await;
    b.click("#select-all").await;
    let ticked = b
        .js("return document.querySelectorAll('#bulk-form tbody input[name=selected]:checked').length")
        .await;
    assert_eq!(ticked, serde_json::json!(10));
    b.js("document.querySelector('#bulk-action').value = 'delete'")
        .await;
    b.click_through("#bulk-apply").await;
    assert_eq!(b.find_all("#bulk-delete-list li").await.len(), 10);
    b.shot("bulk-delete-confirm").await;
    assert!(ok(server.cli(&["user", "list", "customer.example"])).contains("user000@"));
    b.click_through("#confirm").await;
    assert_eq!(flash(&b).await, "10 users deleted");
    assert!(!ok(server.cli(&["user", "list", "customer.example"])).contains("user000@"));

    // The dashboard's range choice.
    b.goto("/").await;
    b.click_through("#range-7d").await;
    assert!(b.text("#range-title").await.contains("7"));
    assert!(b.try_find("svg.chart").await.is_some());
    b.shot("dashboard-7d").await;
    b.quit().await;
}
