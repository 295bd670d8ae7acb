//! Logins through an OpenID Connect provider, against a provider served
//! by the test (discovery, authorize, token, JWKS; ES256 and RS256 keys,
//! the RSA one a test-only fixture in `tests/data`): the whole
//! code flow with PKCE opens a session with the mapped role; a forged,
//! expired, misaddressed or replayed token, a state from another browser,
//! and a person without a mapped role are refused.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use sha2::Digest;
use verdict_workbench::config::OidcConfig;
use verdict_workbench::{Role, Workbench};

/// What the provider does wrong, if anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mischief {
    None,
    /// Signs with a key that is not in its JWKS.
    OtherKey,
    Expired,
    OtherAudience,
    OtherNonce,
    /// Changes the claims after signing them.
    Tampered,
}

struct Provider {
    base: String,
    key: EcdsaKeyPair,
    stranger: EcdsaKeyPair,
    rsa: RsaKeyPair,
    /// `ES256` or `RS256`.
    alg: Mutex<&'static str>,
    /// The claims of the next login: user name and groups.
    next: Mutex<(String, Vec<String>)>,
    mischief: Mutex<Mischief>,
    /// code → (nonce, PKCE challenge, client id).
    codes: Mutex<HashMap<String, (String, String, String)>>,
}

fn key_pair() -> EcdsaKeyPair {
    let k = rcgen::KeyPair::generate().unwrap();
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &k.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap()
}

impl Provider {
    fn jwt(&self, claims: &Value, key: &EcdsaKeyPair) -> String {
        let rng = ring::rand::SystemRandom::new();
        let alg = *self.alg.lock().unwrap();
        let kid = if alg == "RS256" { "r1" } else { "k1" };
        let header = json!({ "alg": alg, "typ": "JWT", "kid": kid });
        let signed = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = if alg == "RS256" {
            let mut sig = vec![0; self.rsa.public().modulus_len()];
            self.rsa
                .sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &rng,
                    signed.as_bytes(),
                    &mut sig,
                )
                .unwrap();
            sig
        } else {
            key.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec()
        };
        format!("{signed}.{}", B64.encode(sig))
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    axum::Json(json!({
        "issuer": p.base,
        "authorization_endpoint": format!("{}/authorize", p.base),
        "token_endpoint": format!("{}/token", p.base),
        "jwks_uri": format!("{}/jwks", p.base),
    }))
}

async fn jwks(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    let point = p.key.public_key().as_ref();
    let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(p.rsa.public());
    axum::Json(json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
    }, {
        "kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
        "n": B64.encode(&rsa.n),
        "e": B64.encode(&rsa.e),
    }]}))
}

/// Logs the configured person in at once and sends the browser back.
async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let code = format!("code-{}", rand::random::<u64>());
    p.codes.lock().unwrap().insert(
        code.clone(),
        (
            q["nonce"].clone(),
            q["code_challenge"].clone(),
            q["client_id"].clone(),
        ),
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn token(
    State(p): State<Arc<Provider>>,
    Form(f): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let Some((nonce, challenge, client)) = p.codes.lock().unwrap().remove(&f["code"]) else {
        return (StatusCode::BAD_REQUEST, "unknown code").into_response();
    };
    let verifier_hash = B64.encode(sha2::Sha256::digest(f["code_verifier"].as_bytes()));
    if verifier_hash != challenge || f.get("client_secret").map(String::as_str) != Some("s3cret") {
        return (StatusCode::BAD_REQUEST, "PKCE or client secret wrong").into_response();
    }
    let (user, groups) = p.next.lock().unwrap().clone();
    let mischief = *p.mischief.lock().unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": p.base,
        "sub": format!("sub-{user}"),
        "aud": if mischief == Mischief::OtherAudience { "another-client".to_owned() } else { client },
        "exp": if mischief == Mischief::Expired { now - 3600 } else { now + 300 },
        "iat": now,
        "nonce": if mischief == Mischief::OtherNonce { "not-it".to_owned() } else { nonce },
        "preferred_username": user,
        "groups": groups,
    });
    let key = if mischief == Mischief::OtherKey {
        &p.stranger
    } else {
        &p.key
    };
    let mut id_token = p.jwt(&claims, key);
    if mischief == Mischief::Tampered {
        let mut forged = claims.clone();
        forged["groups"] = json!(["risk-admins"]);
        let parts: Vec<&str> = id_token.split('.').collect();
        id_token = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(forged.to_string()),
            parts[2]
        );
    }
    axum::Json(json!({
        "access_token": "opaque",
        "token_type": "Bearer",
        "id_token": id_token,
    }))
    .into_response()
}

async fn provider() -> Arc<Provider> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let p = Arc::new(Provider {
        base,
        key: key_pair(),
        stranger: key_pair(),
        rsa: RsaKeyPair::from_der(include_bytes!("data/oidc-rsa-test-key.der")).unwrap(),
        alg: Mutex::new("ES256"),
        next: Mutex::new(("olga".into(), vec!["risk-analysts".into()])),
        mischief: Mutex::new(Mischief::None),
        codes: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    p
}

const CALLBACK: &str = "https://verdict.example/workbench/api/oidc/callback";

async fn workbench_with_oidc(data: &std::path::Path, p: &Provider) -> Arc<Workbench> {
    let mut c = config(data);
    c.oidc = Some(OidcConfig {
        issuer: p.base.clone(),
        client_id: "verdict".into(),
        client_secret: "s3cret".into(),
        redirect_url: CALLBACK.into(),
        scopes: "openid profile".into(),
        username_claim: "preferred_username".into(),
        roles_claim: "groups".into(),
        roles: BTreeMap::from([
            ("risk-analysts".into(), Role::Analyst),
            ("risk-approvers".into(), Role::Approver),
            ("risk-admins".into(), Role::Admin),
        ]),
        label: "Company SSO".into(),
    });
    workbench_with(c).await.0
}

fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(name))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The browser's half of a login up to the provider's redirect back:
/// answers the callback's path and query, and the state cookie.
async fn to_provider_and_back(router: &axum::Router) -> (String, String) {
    let start = Client::default()
        .get(router, "/workbench/api/oidc/login")
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let to = start.headers[header::LOCATION].to_str().unwrap().to_owned();
    let state_cookie = set_cookie(&start, "__Host-verdict-oidc").expect("the state cookie");
    let back = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&to)
        .send()
        .await
        .unwrap();
    let back = back.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let path = back
        .strip_prefix("https://verdict.example")
        .expect("back to the configured redirect URL")
        .to_owned();
    (path, state_cookie)
}

async fn callback(router: &axum::Router, path: &str, cookie: Option<String>) -> Answer {
    Client { cookie, csrf: None }.get(router, path).await
}

#[tokio::test]
async fn a_login_at_the_provider_opens_a_session_with_the_mapped_role() {
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let wb = workbench_with_oidc(dir.path(), &p).await;
    let router = wb.router();

    let options = Client::default()
        .get(&router, "/workbench/api/login-options")
        .await;
    assert_eq!(
        options.body,
        json!({ "passwords": true, "oidc": "Company SSO" })
    );

    let (path, cookie) = to_provider_and_back(&router).await;
    let done = callback(&router, &path, Some(cookie.clone())).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let session = set_cookie(&done, "__Host-verdict-workbench").expect("a session cookie");
    let me = Client {
        cookie: Some(session),
        csrf: None,
    }
    .get(&router, "/workbench/api/session")
    .await;
    assert_eq!(
        (me.body["user"].as_str(), me.body["role"].as_str()),
        (Some("olga"), Some("analyst"))
    );

    // The state is spent: the same redirect cannot log in twice.
    let again = callback(&router, &path, Some(cookie)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);

    // The highest mapped role wins.
    *p.next.lock().unwrap() = (
        "paul".into(),
        vec![
            "everyone".into(),
            "risk-analysts".into(),
            "risk-approvers".into(),
        ],
    );
    let (path, cookie) = to_provider_and_back(&router).await;
    let done = callback(&router, &path, Some(cookie)).await;
    let me = Client {
        cookie: set_cookie(&done, "__Host-verdict-workbench"),
        csrf: None,
    }
    .get(&router, "/workbench/api/session")
    .await;
    assert_eq!(me.body["role"], "approver", "{}", me.body);

    // The same with an RS256 key, found in the JWKS by its kid.
    *p.alg.lock().unwrap() = "RS256";
    *p.next.lock().unwrap() = ("rita".into(), vec!["risk-analysts".into()]);
    let (path, cookie) = to_provider_and_back(&router).await;
    let done = callback(&router, &path, Some(cookie)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let me = Client {
        cookie: set_cookie(&done, "__Host-verdict-workbench"),
        csrf: None,
    }
    .get(&router, "/workbench/api/session")
    .await;
    assert_eq!(me.body["user"], "rita", "{}", me.body);

    let audit = login(&router, "bob")
        .await
        .get(&router, "/workbench/api/audit")
        .await;
    let logins: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login")
        .filter_map(|e| e["user"].as_str())
        .collect();
    assert!(
        logins.contains(&"olga") && logins.contains(&"paul"),
        "{logins:?}"
    );
}

#[tokio::test]
async fn forged_expired_misaddressed_and_foreign_logins_are_refused() {
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let wb = workbench_with_oidc(dir.path(), &p).await;
    let router = wb.router();

    // A redirect finished in a browser that did not start it.
    let (path, _) = to_provider_and_back(&router).await;
    for cookie in [None, Some("__Host-verdict-oidc=someone-elses".to_owned())] {
        let a = callback(&router, &path, cookie).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert!(set_cookie(&a, "__Host-verdict-workbench").is_none());
    }

    for (alg, mischief, says) in [
        ("RS256", Mischief::Tampered, "signature"),
        ("ES256", Mischief::Tampered, "signature"),
        ("ES256", Mischief::OtherKey, "signature"),
        ("ES256", Mischief::Expired, "expired"),
        ("ES256", Mischief::OtherAudience, "aud"),
        ("RS256", Mischief::OtherNonce, "nonce"),
    ] {
        *p.alg.lock().unwrap() = alg;
        *p.mischief.lock().unwrap() = mischief;
        let (path, cookie) = to_provider_and_back(&router).await;
        let a = callback(&router, &path, Some(cookie)).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{alg} {says}: {}",
            a.body
        );
        let error = a.body["error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
        assert!(set_cookie(&a, "__Host-verdict-workbench").is_none());
    }

    // Known to the provider, but no group maps to a Verdict role.
    *p.mischief.lock().unwrap() = Mischief::None;
    *p.next.lock().unwrap() = ("mallory".into(), vec!["sales".into()]);
    let (path, cookie) = to_provider_and_back(&router).await;
    let a = callback(&router, &path, Some(cookie)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("no Verdict role")
    );
    let audit = login(&router, "bob")
        .await
        .get(&router, "/workbench/api/audit")
        .await;
    assert!(
        audit.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == "mallory" && e["action"] == "login_refused"),
        "{}",
        audit.body
    );
}

#[tokio::test]
async fn without_a_provider_the_sso_routes_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (wb, _) = workbench(dir.path()).await;
    let router = wb.router();
    let options = Client::default()
        .get(&router, "/workbench/api/login-options")
        .await;
    assert_eq!(options.body["oidc"], Value::Null);
    let a = Client::default()
        .get(&router, "/workbench/api/oidc/login")
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("[workbench.oidc]")
    );
}
