//! The workbench's HTTP API, called in process: access on every route,
//! maker-checker, the checker's diagnostics, and the record.

mod common;

use axum::http::{Method, StatusCode, header};
use common::*;
use serde_json::json;
use tower::ServiceExt;
use verdict_workbench::{Access, Role, route_table};

/// A concrete path for a route (parameters filled in).
fn concrete(path: &str) -> String {
    path.replace("{number}", "1")
        .replace("{id}", "1")
        .replace("{*path}", "index.js")
}

#[tokio::test]
async fn every_route_refuses_an_unauthenticated_and_an_under_privileged_request() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let mut sessions = std::collections::HashMap::new();
    for (user, role) in USERS {
        sessions.insert(role, login(&router, user).await);
    }
    let table = route_table();
    let mut public = Vec::new();
    let mut checked_403 = 0;
    for route in &table {
        let path = concrete(route.path);
        let method = route.method.as_str();
        let body = (route.method != Method::GET).then(|| json!({}));
        let Access::Role(needed) = route.access else {
            public.push(format!("{method} {}", route.path));
            continue;
        };
        // No session at all, and a forged cookie.
        let anon = Client::default()
            .call(&router, method, &path, body.clone())
            .await;
        assert_eq!(
            anon.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a session"
        );
        let forged = Client {
            cookie: Some("__Host-verdict-workbench=00ff".into()),
            csrf: Some("x".into()),
        };
        let forged = forged.call(&router, method, &path, body.clone()).await;
        assert_eq!(
            forged.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a forged session"
        );
        // Every role below the route's.
        for role in Role::ALL.into_iter().filter(|r| *r < needed) {
            let a = sessions[&role]
                .call(&router, method, &path, body.clone())
                .await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{method} {path} as {role:?}"
            );
            assert!(
                a.body["error"].as_str().unwrap().contains(needed.as_str()),
                "{}",
                a.body
            );
            checked_403 += 1;
        }
        // The right role without the CSRF token, for a route that changes
        // something.
        if route.method != Method::GET {
            let mut no_csrf = sessions[&needed].clone();
            no_csrf.csrf = None;
            let a = no_csrf.call(&router, method, &path, body.clone()).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{method} {path} without CSRF"
            );
            assert!(
                a.body["error"].as_str().unwrap().contains("CSRF"),
                "{}",
                a.body
            );
        }
        // And the right role gets past the check (whatever the handler then
        // says of an empty body); logging out ends the session, so that one
        // uses a session of its own.
        let user = if route.path.ends_with("/logout") {
            login(&router, USERS.iter().find(|(_, r)| *r == needed).unwrap().0).await
        } else {
            sessions[&needed].clone()
        };
        let a = user.call(&router, method, &path, body.clone()).await;
        assert!(
            a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN,
            "{method} {path} as {needed:?}: {} {}",
            a.status,
            a.body
        );
    }
    // Only the page, its assets and the logins (password, and the single
    // sign-on's start and return) are public; viewer routes
    // have no role below them, every other route was refused to each lower
    // role.
    assert_eq!(
        public,
        [
            "GET /workbench",
            "GET /workbench/",
            "GET /workbench/assets/{*path}",
            "POST /workbench/api/login",
            "GET /workbench/api/login-options",
            "GET /workbench/api/oidc/login",
            "GET /workbench/api/oidc/callback"
        ]
    );
    let expected: usize = table
        .iter()
        .map(|r| match r.access {
            Access::Role(n) => Role::ALL.iter().filter(|x| **x < n).count(),
            Access::Public => 0,
        })
        .sum();
    assert_eq!(checked_403, expected);
    assert!(checked_403 >= 17, "{checked_403}");
}

#[tokio::test]
async fn an_analyst_cannot_approve_a_proposal_and_nobody_approves_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let (alice, bob, carol) = (
        login(&router, "alice").await,
        login(&router, "bob").await,
        login(&router, "carol").await,
    );
    let files = with_rule(
        &example_files(),
        "rule big:\n  review if event.amount > 90000\n",
    );

    let p = alice
        .post(
            &router,
            "/workbench/api/proposals",
            json!({ "files": files, "note": "big amounts" }),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let id = p.body["id"].as_u64().unwrap();
    let a = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "an analyst approving: {}",
        a.body
    );

    // An approver's own proposal.
    let p = bob
        .post(
            &router,
            "/workbench/api/proposals",
            json!({ "files": files }),
        )
        .await;
    let own = p.body["id"].as_u64().unwrap();
    let a = bob
        .post(
            &router,
            &format!("/workbench/api/proposals/{own}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("another approver"),
        "{}",
        a.body
    );
    // Not deployable before a second person approved it.
    let d = bob
        .post(
            &router,
            &format!("/workbench/api/proposals/{own}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CONFLICT, "{}", d.body);

    let a = carol
        .post(
            &router,
            &format!("/workbench/api/proposals/{own}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["status"]["by"], "carol");
    // Once approved, not approved again.
    let again = carol
        .post(
            &router,
            &format!("/workbench/api/proposals/{own}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_draft_that_does_not_check_cannot_be_proposed_and_check_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let alice = login(&router, "alice").await;
    let bad = with_rule(
        &example_files(),
        "rule big:\n  review if event.amout > 90000\n",
    );

    let p = alice
        .post(&router, "/workbench/api/proposals", json!({ "files": bad }))
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    let d = &p.body["diagnostics"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
        (Some("70-workbench.rules"), Some(2), Some(13))
    );
    assert_eq!(d["width"], 11, "the caret covers `event.amout`");
    assert!(d["help"].as_str().unwrap().contains("event.amount"), "{d}");
    let list = alice.get(&router, "/workbench/api/proposals").await;
    assert_eq!(list.body["proposals"].as_array().unwrap().len(), 0);

    // POST /check gives the same diagnostic as `verdict rules check` of the
    // same folder: the rules crate's own rendering, paths made relative.
    let c = alice
        .post(&router, "/workbench/api/check", json!({ "files": bad }))
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.body["ok"], false);
    let folder = tempfile::tempdir().unwrap();
    let files: verdict_workbench::RuleFiles = serde_json::from_value(bad.clone()).unwrap();
    files.write_to(folder.path()).unwrap();
    let (catalogue, _) = example_catalogue();
    let cli = verdict_rules::RuleSet::load_dir(folder.path(), &catalogue).unwrap_err();
    let cli_rendered = cli.0[0]
        .to_string()
        .replace(&format!("{}/", folder.path().display()), "");
    assert_eq!(c.body["diagnostics"][0]["rendered"], cli_rendered);
    assert!(
        cli_rendered.contains("70-workbench.rules:2:13"),
        "{cli_rendered}"
    );

    // Tests and backtests of a draft that does not check are refused too.
    for path in ["/workbench/api/test", "/workbench/api/backtest"] {
        let a = alice.post(&router, path, json!({ "files": bad })).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
}

#[tokio::test]
async fn tests_run_per_case_and_a_backtest_reports_the_moved_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let alice = login(&router, "alice").await;
    let mut files = example_files();
    let t = alice
        .post(&router, "/workbench/api/test", json!({ "files": files }))
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let cases = t.body["cases"].as_array().unwrap().len() as u64;
    assert!(cases >= 5);
    assert_eq!(t.body["failed"], 0, "{}", t.body);

    // Moving the block list's rule to approve makes its case fail.
    let block = files.0.get_mut("10-block.rules").unwrap();
    *block = block.replace(
        "deny if event.user_id in blocked_users",
        "approve if event.user_id in blocked_users",
    );
    let t = alice
        .post(&router, "/workbench/api/test", json!({ "files": files }))
        .await;
    assert!(t.body["failed"].as_u64().unwrap() >= 1, "{}", t.body);
    let failing: Vec<&str> = t.body["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        failing.contains(&"a blocked user is denied, even with a low score"),
        "{failing:?}"
    );

    // A rule that denies every payment over 1000 moves decisions to deny.
    let b = alice
        .post(
            &router,
            "/workbench/api/backtest",
            json!({ "files": with_rule(&example_files(), "rule big:\n  deny if event.amount > 1000\n") }),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let r = &b.body["report"];
    let moved_to_deny: u64 = r["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["candidate"] == "deny" && c["baseline"] != "deny")
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert!(moved_to_deny > 0, "{r}");
    let big = r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "big")
        .unwrap();
    assert_eq!(
        (big["status"].as_str(), big["baseline_hits"].as_u64()),
        (Some("added"), Some(0))
    );
    assert!(big["unique_contribution"].as_u64().unwrap() > 0);
    let cells: u64 = r["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(cells, r["events"].as_u64().unwrap());
}

#[tokio::test]
async fn propose_approve_deploy_then_restore_the_first_version_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, store) = workbench(dir.path()).await;
    let router = wb.router();
    let (alice, bob) = (login(&router, "alice").await, login(&router, "bob").await);
    let files = with_rule(
        &example_files(),
        "rule big:\n  review if event.amount > 90000\n",
    );

    let p = alice
        .post(
            &router,
            "/workbench/api/proposals",
            json!({ "files": files, "note": "n" }),
        )
        .await;
    let id = p.body["id"].as_u64().unwrap();
    // A second proposal on the same base goes stale once the first deploys.
    let p2 = alice
        .post(
            &router,
            "/workbench/api/proposals",
            json!({ "files": files }),
        )
        .await;
    let id2 = p2.body["id"].as_u64().unwrap();
    for i in [id, id2] {
        let a = bob
            .post(
                &router,
                &format!("/workbench/api/proposals/{i}/approve"),
                json!({}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let d = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{id}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(
        (d.body["number"].as_u64(), d.body["serving"].as_bool()),
        (Some(2), Some(true))
    );
    let s = alice.get(&router, "/workbench/api/serving").await;
    assert_eq!(s.body["version"]["number"], 2);
    assert_eq!(s.body["version"]["approved_by"], "bob");
    assert!(
        s.body["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "big")
    );
    assert_eq!(s.body["engine_version"], s.body["version"]["version"]);

    let stale = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{id2}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert!(
        stale.body["error"]
            .as_str()
            .unwrap()
            .contains("version 2 serves now")
    );

    let diff = alice.get(&router, "/workbench/api/diff?from=1&to=2").await;
    assert!(
        diff.body["diff"].as_str().unwrap().contains("+rule big:"),
        "{}",
        diff.body
    );

    // Rollback: version 1's files, proposed, approved, deployed as 3.
    let r = alice
        .post(&router, "/workbench/api/restore", json!({ "number": 1 }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rid = r.body["id"].as_u64().unwrap();
    let early = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{rid}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "a restore needs its approval too"
    );
    bob.post(
        &router,
        &format!("/workbench/api/proposals/{rid}/approve"),
        json!({}),
    )
    .await;
    let d = alice
        .post(
            &router,
            &format!("/workbench/api/proposals/{rid}/deploy"),
            json!({}),
        )
        .await;
    assert_eq!(d.body["number"], 3, "{}", d.body);
    let v3 = store.follower().get(3).unwrap();
    assert_eq!(v3.restores, Some(1));
    assert_eq!(v3.files, example_files());
    assert_eq!(store.follower().current().unwrap().version.number, 3);

    let versions = alice.get(&router, "/workbench/api/versions").await;
    let numbers: Vec<u64> = versions.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
}

#[tokio::test]
async fn the_audit_log_survives_a_restart_and_exports_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wb, _store) = workbench(dir.path()).await;
        let router = wb.router();
        let alice = login(&router, "alice").await;
        let files = with_rule(
            &example_files(),
            "rule big:\n  review if event.amount > 90000\n",
        );
        let s = alice
            .call(
                &router,
                "PUT",
                "/workbench/api/draft",
                Some(json!({ "files": files })),
            )
            .await;
        assert_eq!(s.status, StatusCode::OK, "{}", s.body);
        alice
            .post(
                &router,
                "/workbench/api/proposals",
                json!({ "files": files }),
            )
            .await;
        let wrong = Client::default()
            .post(
                &router,
                "/workbench/api/login",
                json!({ "user": "bob", "password": "nope" }),
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    // A new process on the same folder.
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let bob = login(&router, "bob").await;
    bob.post(&router, "/workbench/api/proposals/1/approve", json!({}))
        .await;
    let log = bob.get(&router, "/workbench/api/audit").await;
    assert_eq!(log.status, StatusCode::OK);
    let entries = log.body["entries"].as_array().unwrap();
    let seen: Vec<(u64, &str, &str)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["user"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "alice", "login"),
            (2, "alice", "draft_saved"),
            (3, "alice", "proposed"),
            (4, "bob", "login_refused"),
            (5, "bob", "login"),
            (6, "bob", "approved"),
        ]
    );
    let proposed = entries.iter().find(|e| e["action"] == "proposed").unwrap();
    assert!(
        proposed["diff"]
            .as_str()
            .unwrap()
            .contains("+++ b/70-workbench.rules"),
        "{proposed}"
    );
    assert!(proposed["at"].as_str().unwrap().ends_with('Z'));

    // Export: an admin's, JSON lines, the same entries.
    let denied = bob.get(&router, "/workbench/api/audit/export").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let root = login(&router, "root").await;
    let export = root.get(&router, "/workbench/api/audit/export").await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = String::from_utf8(export.bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "the six above and root's login");
    assert_eq!(lines[5]["action"], "approved");
}

#[tokio::test]
async fn login_is_rate_limited_and_the_cookie_is_secure_http_only_same_site() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.login_burst = 3;
    config.login_refill_secs = 3600;
    let (wb, _store) = workbench_with(config).await;
    let router = wb.router();
    let a = Client::default()
        .post(
            &router,
            "/workbench/api/login",
            json!({ "user": "alice", "password": password("alice") }),
        )
        .await;
    let cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in [
        "__Host-verdict-workbench=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    for _ in 0..2 {
        let a = Client::default()
            .post(
                &router,
                "/workbench/api/login",
                json!({ "user": "alice", "password": "guess" }),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let limited = Client::default()
        .post(
            &router,
            "/workbench/api/login",
            json!({ "user": "alice", "password": password("alice") }),
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    // A form post (what another site could make a browser send) is no login.
    let form = router
        .clone()
        .oneshot(
            axum::http::Request::post("/workbench/api/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(axum::body::Body::from("user=bob&password=x"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn the_page_is_served_with_headers_that_keep_it_out_of_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _store) = workbench(dir.path()).await;
    let router = wb.router();
    let page = Client::default().get(&router, "/workbench/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = String::from_utf8(page.bytes).unwrap();
    assert!(
        verdict_workbench::assets::ui_built(),
        "the tests run on the real bundle: run scripts/build-webui.sh"
    );
    let script = html
        .split("src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let js = Client::default().get(&router, script).await;
    assert_eq!(js.status, StatusCode::OK, "{script}");
    assert_eq!(js.headers[header::CONTENT_TYPE], "text/javascript");
}
