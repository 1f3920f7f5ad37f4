//! CSV import of users: the page's preview and apply, the bulk API call, scope, the OpenAPI
//! document.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use mailstore::{Admin, Directory, Scope};
use serde_json::{Value, json};

use crate::support::{Env, Reply, addr};

/// `doveadm pw -s SHA512-CRYPT -p secret`.
const SECRET_HASH: &str = "{SHA512-CRYPT}$6$AnNeeO5w2rIN.7hk$.uneIQgRbjocoIVnn8RythupveeA2lUeI1wBNg6gi6lZ66KgJCvhLFjvenyTwvZmoUHuPCIIKspaofA1fIgi31";

const HEADER: &str = "address,password_hash,password,quota_bytes,quota_messages,enabled";

fn csv(rows: &[&str]) -> String {
    let mut text = String::from(HEADER);
    for row in rows {
        text.push('\n');
        text.push_str(row);
    }
    text.push('\n');
    text
}

async fn password_ok(env: &Env, address: &str, password: &str) -> bool {
    let auth = env
        .store
        .find_user(&addr(address))
        .await
        .unwrap()
        .expect("enabled user");
    tenancy::verify_password(password.as_bytes(), &auth.password_hash)
}

/// The value of the hidden `csv` field of the preview's apply form, as the browser sends it.
fn hidden_csv(body: &str) -> String {
    let form = &body[body.find(r#"<form id="apply-form""#).expect("apply form")..];
    let open = r#"<input type="hidden" name="csv" value=""#;
    let start = form.find(open).expect("hidden csv") + open.len();
    let value = &form[start..start + form[start..].find('"').expect("end of value")];
    value
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The result table's row for `line`: its cells' text.
fn result_row(body: &str, line: usize) -> String {
    let table = &body[body
        .find(r#"<table id="import-rows">"#)
        .expect("result table")..];
    let cell = format!(r#"<td class="num">{line}</td>"#);
    let start = table.find(&cell).unwrap_or_else(|| panic!("line {line}"));
    let end = start + table[start..].find("</tr>").expect("end of row");
    table[start..end].to_string()
}

#[tokio::test]
async fn a_preview_changes_nothing_and_applying_it_creates_audited_accounts() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    env.add_user("old@a.test").await;

    let list = env.get(&b, "/domains/a.test/users").await;
    assert!(
        list.body
            .contains(r#"id="import-users" href="/domains/a.test/users/import""#)
    );
    let page = env.get(&b, "/domains/a.test/users/import").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<form id="import-form""#));
    assert!(page.body.contains(r#"<textarea id="csv" name="csv""#));
    assert!(page.body.contains(r#"name="update" value="true""#));
    assert!(
        page.body
            .contains(&format!(r#"name="_csrf" value="{}""#, b.csrf))
    );

    let text = csv(&[
        &format!("hashed@a.test,{SECRET_HASH},,,,"),
        "plain@a.test,,correct horse,1G,100,false",
        "old@a.test,,another secret,,,",
        "not an address,,correct horse,,,",
    ]);
    let preview = env
        .post(&b, "/domains/a.test/users/import", &[("csv", &text)])
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview
            .body
            .contains("Preview: nothing has been changed yet")
    );
    assert!(result_row(&preview.body, 2).contains("hashed@a.test</td>"));
    assert!(result_row(&preview.body, 2).contains("would be added"));
    assert!(result_row(&preview.body, 3).contains("would be added"));
    assert!(result_row(&preview.body, 4).contains("left unchanged"));
    assert!(result_row(&preview.body, 5).contains("not read"));
    assert!(
        preview
            .body
            .contains("If applied: 2 added, 0 updated, 1 unchanged, 1 failed")
    );
    assert!(env.user("hashed@a.test").await.is_none());
    assert!(env.user("plain@a.test").await.is_none());
    assert!(
        env.audit_actions().await.is_empty(),
        "a preview writes nothing"
    );

    // "Apply" sends the previewed CSV again, without the update option it was previewed without.
    let sent = hidden_csv(&preview.body);
    assert_eq!(sent, text);
    assert!(!preview.body.contains(r#"type="hidden" name="update""#));
    let apply = [("csv", sent.as_str()), ("action", "apply")];
    let done = env.post(&b, "/domains/a.test/users/import", &apply).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Imported"));
    assert!(result_row(&done.body, 2).contains(">added<"));
    assert!(result_row(&done.body, 3).contains(">added<"));
    assert!(result_row(&done.body, 4).contains("left unchanged"));
    assert!(
        done.body
            .contains("2 added, 0 updated, 1 unchanged, 1 failed")
    );
    assert!(!done.body.contains(r#"id="apply-form""#));
    // The outcome page does not hand the passwords back.
    assert!(!done.body.contains("correct horse") && !done.body.contains("$6$"));

    assert!(password_ok(&env, "hashed@a.test", "secret").await);
    let plain = env.user("plain@a.test").await.expect("created");
    assert_eq!(plain.quota.bytes, Some(1 << 30));
    assert_eq!(plain.quota.messages, Some(100));
    assert!(!plain.enabled);
    env.store
        .set_user_enabled(&addr("plain@a.test"), true)
        .await
        .unwrap();
    assert!(password_ok(&env, "plain@a.test", "correct horse").await);
    assert!(
        !password_ok(&env, "old@a.test", "another secret").await,
        "an existing account is left alone without update"
    );

    let log = env
        .store
        .audit_page(&Scope::All, &Default::default(), 0, 100)
        .await
        .unwrap();
    let created: Vec<_> = log
        .items
        .iter()
        .filter(|e| e.action == "user.create")
        .map(|e| e.object.as_str())
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created.contains(&"hashed@a.test") && created.contains(&"plain@a.test"));
    for e in &log.items {
        assert_eq!(e.actor, "root@admin.test");
        let text = format!("{:?}{:?}", e.before, e.after);
        assert!(!text.contains("$6$") && !text.contains("horse"));
    }
}

#[tokio::test]
async fn update_changes_existing_accounts_and_an_empty_csv_is_refused() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    env.add_user("old@a.test").await;

    let text = csv(&["old@a.test,,another secret,5M,,"]);
    let form = [("csv", text.as_str()), ("update", "true")];
    let preview = env.post(&b, "/domains/a.test/users/import", &form).await;
    assert!(result_row(&preview.body, 2).contains("would be updated"));
    assert!(
        preview
            .body
            .contains(r#"<input type="hidden" name="update" value="true">"#)
    );
    assert_eq!(env.user("old@a.test").await.unwrap().quota.bytes, None);

    let apply = [
        ("csv", text.as_str()),
        ("update", "true"),
        ("action", "apply"),
    ];
    let done = env.post(&b, "/domains/a.test/users/import", &apply).await;
    assert!(
        result_row(&done.body, 2).contains(">updated<"),
        "{}",
        done.body
    );
    assert_eq!(
        env.user("old@a.test").await.unwrap().quota.bytes,
        Some(5 << 20)
    );
    assert!(password_ok(&env, "old@a.test", "another secret").await);

    let empty = env
        .post(&b, "/domains/a.test/users/import", &[("csv", "")])
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(crate::support::field_error(&empty.body, "csv").is_some());
}

#[tokio::test]
async fn a_domain_admin_imports_into_their_domain_only() {
    let env = Env::with_domains().await;
    let b = env.domain_admin().await;

    let text = csv(&[
        "mine@a.test,,correct horse,,,",
        "theirs@b.test,,correct horse,,,",
    ]);
    let apply = [("csv", text.as_str()), ("action", "apply")];
    let done = env.post(&b, "/domains/a.test/users/import", &apply).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(result_row(&done.body, 2).contains(">added<"));
    let other = result_row(&done.body, 3);
    assert!(other.contains("failed"), "{other}");
    assert!(other.contains("theirs@b.test"), "{other}");
    assert!(env.user("mine@a.test").await.is_some());
    assert!(env.user("theirs@b.test").await.is_none());
    assert_eq!(env.audit_actions().await, ["user.create"]);

    // Another domain's import page is not there for them.
    let r = env.get(&b, "/domains/b.test/users/import").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env.post(&b, "/domains/b.test/users/import", &apply).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(env.user("theirs@b.test").await.is_none());

    // Without the form's CSRF token nothing is imported.
    let text = csv(&["forged@a.test,,correct horse,,,"]);
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("csv", &text)
        .append_pair("action", "apply");
    let req = Request::post("/domains/a.test/users/import")
        .header(header::COOKIE, &b.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.finish()))
        .unwrap();
    assert_eq!(env.send(req).await.status, StatusCode::FORBIDDEN);
    assert!(env.user("forged@a.test").await.is_none());
}

async fn import(env: &Env, token: &str, path: &str, content_type: &str, body: String) -> Reply {
    let req = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    env.send(req).await
}

#[tokio::test]
async fn the_api_imports_a_csv_in_one_call() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    env.add_user("old@a.test").await;
    let path = "/api/v1/domains/a.test/users/import";
    let text = csv(&[
        &format!("hashed@a.test,{SECRET_HASH},,,,"),
        "plain@a.test,,correct horse,1G,,",
        "old@a.test,,another secret,,,",
        "other@b.test,,correct horse,,,",
        "not an address,,correct horse,,,",
    ]);

    let r = import(
        &env,
        &t,
        &format!("{path}?dry_run=true"),
        "text/csv",
        text.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let report = r.json();
    assert_eq!(
        report["summary"],
        json!({"added": 2, "updated": 0, "unchanged": 1, "failed": 2})
    );
    let rows = report["rows"].as_array().expect("rows");
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["address"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (2, "hashed@a.test", "added"),
            (3, "plain@a.test", "added"),
            (4, "old@a.test", "unchanged"),
            (5, "other@b.test", "failed"),
        ]
    );
    assert!(rows[0].get("error").is_none());
    assert!(rows[3]["error"].as_str().is_some_and(|e| !e.is_empty()));
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["line"], 6);
    assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(
        env.user("hashed@a.test").await.is_none(),
        "a dry run changes nothing"
    );
    assert!(env.audit_actions().await.is_empty());

    let r = import(&env, &t, path, "text/csv; charset=utf-8", text.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json()["summary"],
        json!({"added": 2, "updated": 0, "unchanged": 1, "failed": 2})
    );
    assert!(password_ok(&env, "hashed@a.test", "secret").await);
    assert!(password_ok(&env, "plain@a.test", "correct horse").await);
    assert_eq!(
        env.user("plain@a.test").await.unwrap().quota.bytes,
        Some(1 << 30)
    );
    assert!(env.user("other@b.test").await.is_none());
    assert_eq!(env.audit_actions().await, ["user.create", "user.create"]);

    let again = csv(&["old@a.test,,another secret,,,"]);
    let r = import(&env, &t, &format!("{path}?update=true"), "text/csv", again).await;
    assert_eq!(r.json()["rows"][0]["outcome"], "updated", "{}", r.body);
    assert!(password_ok(&env, "old@a.test", "another secret").await);

    // Not CSV, not UTF-8, not a domain in scope: JSON errors.
    let r = import(&env, &t, path, "application/json", "{}".into()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"].is_string());
    let req = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(vec![0xff, 0xfe, b'\n']))
        .unwrap();
    let r = env.send(req).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"].is_string());
    let r = import(
        &env,
        &t,
        "/api/v1/domains/none.test/users/import",
        "text/csv",
        csv(&[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn the_import_takes_more_than_the_usual_body_limit_but_not_without_bound() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    let path = "/api/v1/domains/a.test/users/import?dry_run=true";

    // 3 MB: over axum's default 2 MB, which the other routes keep.
    let mut text = csv(&["big@a.test,,correct horse,,,"]);
    text.push_str(&"x".repeat(3 << 20));
    text.push('\n');
    let r = import(&env, &t, path, "text/csv", text).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        &r.body[..r.body.len().min(200)]
    );
    assert_eq!(r.json()["rows"][0]["outcome"], "added");
    let r = env
        .api(
            Method::POST,
            "/api/v1/domains/a.test/users",
            Some(&t),
            Some(json!({"local": "x".repeat(3 << 20), "password": "correct horse"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("length limit"), "{}", r.body);

    let r = import(&env, &t, path, "text/csv", "x".repeat(17 << 20)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].is_string(), "{}", r.body);
}

#[tokio::test]
async fn the_user_named_import_is_still_reached_through_the_api() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = Some(env.token(admin).await);
    let t = t.as_deref();
    env.add_user("import@a.test").await;
    let path = "/api/v1/domains/a.test/users/import";

    let r = env.api(Method::GET, path, t, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["address"], "import@a.test");
    let r = env
        .api(Method::PATCH, path, t, Some(json!({"enabled": false})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["enabled"], false);
    let r = env.api(Method::DELETE, path, t, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(env.user("import@a.test").await.is_none());
}

#[tokio::test]
async fn the_openapi_document_describes_the_import() {
    let env = Env::new().await;
    let r = env
        .api(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let doc = r.json();
    let op = &doc["paths"]["/domains/{domain}/users/import"]["post"];
    assert_eq!(op["operationId"], "importUsers");
    assert!(op["requestBody"]["content"]["text/csv"].is_object(), "{op}");
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["domain", "dry_run", "update"]);
    for status in ["200", "401", "404", "413", "422"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    let report = &op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    let name = report
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .expect("a schema reference");
    let schema: &Value = &doc["components"]["schemas"][name];
    for field in ["summary", "rows", "errors"] {
        assert!(schema["properties"][field].is_object(), "{field}");
    }
    // Nothing else at this path: the user named `import` is described under `{local}`.
    let methods: Vec<_> = doc["paths"]["/domains/{domain}/users/import"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| ["get", "patch", "delete", "put"].contains(&k.as_str()))
        .collect();
    assert!(methods.is_empty(), "{methods:?}");
}

/// A `multipart/form-data` body as a browser sends the upload form: `_csrf` (when given), the
/// file, and the other fields.
fn upload(b: &crate::support::Browser, csrf: Option<&str>, file: &str) -> Request<Body> {
    let boundary = "----pophost-test-boundary";
    let mut body = String::new();
    let mut field = |name: &str, extra: &str, value: &str| {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n{value}\r\n"
        ));
    };
    if let Some(csrf) = csrf {
        field("_csrf", "", csrf);
    }
    field("action", "", "preview");
    field(
        "file",
        "; filename=\"accounts.csv\"\r\nContent-Type: text/csv",
        file,
    );
    field("csv", "", "");
    body.push_str(&format!("--{boundary}--\r\n"));
    Request::post("/domains/a.test/users/import")
        .header(header::COOKIE, &b.cookie)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request")
}

/// The page's form uploads a file (multipart, CSRF token included) of more than the usual form
/// limit; without the token it is refused.
#[tokio::test]
async fn a_csv_file_upload_is_previewed_and_needs_the_csrf_token() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let page = env.get(&b, "/domains/a.test/users/import").await;
    assert!(page.body.contains(r#"enctype="multipart/form-data""#));
    assert!(
        page.body
            .contains(r#"<input type="file" id="file" name="file""#)
    );
    // About 200 KB: well over the 64 KiB other forms may send.
    let rows: Vec<String> = (0..2000)
        .map(|i| format!("user{i}@a.test,{SECRET_HASH},,,,"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let text = csv(&rows);
    assert!(text.len() > 150_000);
    let preview = env.send(upload(&b, Some(&b.csrf), &text)).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview
            .body
            .contains("If applied: 2000 added, 0 updated, 0 unchanged, 0 failed"),
        "{}",
        preview.body
    );
    assert_eq!(hidden_csv(&preview.body), text);
    assert!(
        env.user("user0@a.test").await.is_none(),
        "a preview writes nothing"
    );
    // "Apply" sends the file's CSV back as a form field, again more than other forms may.
    let apply = [("csv", text.as_str()), ("action", "apply")];
    let done = env.post(&b, "/domains/a.test/users/import", &apply).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("2000 added"), "{}", done.body);
    assert!(password_ok(&env, "user1999@a.test", "secret").await);
    let refused = env.send(upload(&b, None, &text)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let forged = env.send(upload(&b, Some("not-the-token"), &text)).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

/// A domain's users come out as CSV in the columns the import reads, without any password
/// material, only for admins who may see the domain; the export imported back changes nothing.
#[tokio::test]
async fn users_export_as_csv_the_import_reads_back() {
    let env = Env::with_domains().await;
    let root = env.super_admin().await;
    let text = csv(&[
        &format!("anna@a.test,{SECRET_HASH},,500M,100,true"),
        "bob@a.test,,correct horse,,,false",
        "carl@b.test,,correct horse,,,",
    ]);
    let apply = [("csv", text.as_str()), ("action", "apply")];
    let done = env
        .post(&root, "/domains/a.test/users/import", &apply)
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let apply = [("csv", text.as_str()), ("action", "apply")];
    env.post(&root, "/domains/b.test/users/import", &apply)
        .await;

    let b = env.domain_admin().await;
    let export = env.get(&b, "/domains/a.test/users.csv").await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.body);
    assert_eq!(
        export.headers[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    assert!(
        export.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("a.test-users.csv")
    );
    assert_eq!(
        export.body,
        "address,quota_bytes,quota_messages,enabled\n\
         anna@a.test,524288000,100,true\n\
         bob@a.test,unlimited,unlimited,false\n"
    );
    assert!(!export.body.contains('$') && !export.body.contains('{'));
    assert!(
        env.audit_actions()
            .await
            .contains(&"users.export".to_string())
    );

    // Read back by the import, the export is every account as it is.
    let apply = [
        ("csv", export.body.as_str()),
        ("action", "apply"),
        ("update", "true"),
    ];
    let again = env.post(&b, "/domains/a.test/users/import", &apply).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(
        again
            .body
            .contains("0 added, 0 updated, 2 unchanged, 0 failed"),
        "{}",
        again.body
    );

    // Another tenant's users are not there for them; their domain list is theirs only.
    let r = env.get(&b, "/domains/b.test/users.csv").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let domains = env.get(&b, "/domains.csv").await;
    assert_eq!(domains.status, StatusCode::OK);
    assert_eq!(
        domains.body,
        "name,quota_bytes,quota_messages,max_users,enabled,users,aliases\n\
         a.test,unlimited,unlimited,unlimited,true,2,\n"
    );
    let all = env.get(&root, "/domains.csv").await;
    assert!(all.body.contains("\nb.test,"), "{}", all.body);
    // Not without signing in.
    let req = Request::get("/domains/a.test/users.csv")
        .body(Body::empty())
        .unwrap();
    let anonymous = env.send(req).await;
    assert!(
        !anonymous.body.contains("anna@a.test"),
        "{} {}",
        anonymous.status,
        anonymous.body
    );
}
