//! A real browser for the admin UI tests: Debian's headless Chromium, driven over WebDriver by
//! a chromedriver this module starts on a free port (one per test) and stops on drop.
//!
//! Missing Chromium or chromedriver is a failure, not a skip: `scripts/test` installs them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long to wait for an element that a navigation or form submission should bring.
const WAIT: Duration = Duration::from_secs(30);

/// Where screenshots go: `$POPHOST_SCREENSHOTS` (relative to the workspace root) or
/// `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("POPHOST_SCREENSHOTS") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target/screenshots"),
    }
}

/// One plain HTTP/1.1 request to chromedriver; the response as text (`None`: no answer).
fn driver_request(port: u16, method: &str, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&buf).to_string())
}

/// The chromedriver process and the Chromium profile; stopped (with any Chromium left behind)
/// on drop, also when a test panics.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
    profile: tempfile::TempDir,
}

impl Driver {
    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = driver_request(self.port, "DELETE", &format!("/session/{id}"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium processes of this profile that outlived their driver (found by the profile
        // directory, which is this test's own).
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .any(|arg| arg == marker)
                {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// A headless Chromium session against one admin UI.
pub struct Browser {
    pub client: Client,
    /// `http://127.0.0.1:PORT` of the admin UI.
    pub base: String,
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a fresh Chromium (own profile directory) for the admin UI at
    /// `admin`.
    pub async fn start(admin: SocketAddr) -> Browser {
        let chromium = std::env::var("POPHOST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let chromedriver =
            std::env::var("POPHOST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        for (path, pkg) in [(&chromium, "chromium"), (&chromedriver, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the admin UI browser tests need Debian's `{pkg}` package \
                 (apt-get install chromium chromium-driver; scripts/test installs them)"
            );
        }
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("log");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {chromedriver}: {e}"));
        let mut driver = Driver {
            child,
            port,
            session: None,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if driver_request(port, "GET", "/status").is_some_and(|r| r.contains("\"ready\":true"))
            {
                break;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited ({status}):\n{}", driver.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port}:\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let user_data = format!("--user-data-dir={}", driver.profile.path().display());
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &user_data,
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        // An alert (say, from injected script) stays open and fails the next command, rather
        // than being dismissed unseen.
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}\n{}", driver.log()));
        driver.session = client.session_id().await.ok().flatten();
        Browser {
            client,
            base: format!("http://{admin}"),
            driver,
        }
    }

    /// Ends the WebDriver session (Chromium quits); chromedriver stops when `self` drops.
    pub async fn quit(mut self) {
        if self.driver.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn context(&self) -> String {
        let path = self.path().await;
        let text = self.page_text().await;
        format!(
            "on {path}:\n{}",
            text.chars().take(2000).collect::<String>()
        )
    }

    /// The element `css` names; fails the test (showing the page) if there is none.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no element {css} ({e}) {}", self.context().await),
        }
    }

    pub async fn try_find(&self, css: &str) -> Option<Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// Waits for `css` to appear (after a navigation the page started itself); gives up at
    /// once on the error page when that is not what was asked for.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                return e;
            }
            let on_error_page = self.try_find("#error-message").await.is_some();
            if on_error_page || Instant::now() > deadline {
                panic!("{css} did not appear {}", self.context().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// An attribute as the page's markup has it.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attr(name).await.expect("attr")
    }

    /// A DOM property (an input's current `value`, a meter's numeric `value`).
    pub async fn prop(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.prop(name).await.expect("prop")
    }

    /// Replaces the text of the input `css` by typing `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        if !value.is_empty() {
            e.send_keys(value)
                .await
                .unwrap_or_else(|err| panic!("typing into {css}: {err}"));
        }
    }

    /// Clicks `css` (a submit button waits for the page it loads).
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks `css` and waits until the page it loads (a link's or a form's) is there.
    pub async fn click_through(&self, css: &str) {
        self.mark_page().await;
        self.click(css).await;
        self.wait_new_page(css).await;
    }

    /// Marks the page shown, for `wait_new_page`.
    pub async fn mark_page(&self) {
        self.js("window.__pophostOldPage = true").await;
    }

    /// Waits until a new page replaced the one `mark_page` marked, and has loaded.
    pub async fn wait_new_page(&self, after: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let done = self
                .client
                .execute(
                    "return window.__pophostOldPage === undefined \
                     && document.readyState === 'complete'",
                    vec![],
                )
                .await;
            if matches!(done, Ok(Value::Bool(true))) {
                return;
            }
            if let Some(text) = self.alert().await {
                panic!("an alert dialog is open after {after}: {text:?}");
            }
            if Instant::now() > deadline {
                panic!("no new page after {after} {}", self.context().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of an open alert dialog, if there is one.
    pub async fn alert(&self) -> Option<String> {
        self.client.get_alert_text().await.ok()
    }

    /// Saves a PNG of the viewport as `NAME.png` in the screenshot directory.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Fills and submits the sign-in (or bootstrap) form on the page shown.
    pub async fn submit_signin(&self, email: &str, password: &str) {
        self.find("form#signin").await;
        self.fill("form#signin input[name=email]", email).await;
        self.fill("form#signin input[name=password]", password)
            .await;
        self.click_through("button#signin-submit").await;
    }

    /// Signs in at `/signin` and checks the dashboard greets `email`.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/signin").await;
        self.submit_signin(email, password).await;
        let who = self.wait_for("#who").await.text().await.expect("text");
        assert!(who.contains(email), "signed in as {who:?}, not {email}");
        assert_eq!(self.path().await, "/", "sign-in lands on the dashboard");
    }

    /// `(status heading, message)` when the page shown is the error page.
    pub async fn error_page(&self) -> Option<(String, String)> {
        let message = self.try_find("#error-message").await?;
        let message = message.text().await.unwrap_or_default();
        let heading = match self.try_find("main h1").await {
            Some(h) => h.text().await.unwrap_or_default(),
            None => String::new(),
        };
        Some((heading, message))
    }

    /// Checks the page shown is the 404 page.
    pub async fn expect_not_found(&self) {
        match self.error_page().await {
            Some((h, m)) => {
                assert_eq!(h, "404", "status heading of the error page ({m})");
                assert!(!m.is_empty(), "the 404 page says nothing");
            }
            None => panic!("expected the 404 page {}", self.context().await),
        }
        assert!(
            self.title().await.starts_with("404"),
            "title of the 404 page"
        );
    }
}
