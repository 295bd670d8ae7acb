//! Logins through an OpenID Connect provider: the authorization-code flow
//! with PKCE (S256), a nonce, and a state that is also kept in a cookie of
//! the browser that started the login, so that a login cannot be finished
//! in another browser.
//!
//! [`Oidc::start`] reads the provider's discovery document (once) and
//! answers where to send the browser; [`Oidc::finish`] exchanges the code
//! at the token endpoint and checks the ID token: its signature (RS256 or
//! ES256, with the key of its `kid` from the provider's JWKS, read again
//! when a new `kid` appears), issuer, audience, expiry and nonce. The role
//! comes from the configured claim through the configured map.
//!
//! It is not the session: once a person is known, [`crate::auth::Auth`]
//! opens a session for them exactly as for a password login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

use crate::auth::Role;
use crate::config::OidcConfig;

/// The cookie that binds a login's state to the browser that started it.
pub const STATE_COOKIE: &str = "__Host-verdict-oidc";
/// How long a started login may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Logins started and not finished, at most.
const MAX_PENDING: usize = 10_000;
/// Clock skew allowed on `exp`.
const SKEW_SECS: i64 = 60;
/// Documents from the provider larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a login through the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached or answered badly: {0}")]
    Provider(String),
    #[error("this login was not started here or has expired: start it again")]
    UnknownState,
    #[error("the provider's ID token is not valid: {0}")]
    Token(String),
    #[error(
        "{user} has no Verdict role: none of the values of the `{claim}` claim is mapped by [workbench.oidc] roles"
    )]
    NoRole { user: String, claim: String },
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Pending {
    nonce: String,
    verifier: String,
    at: Instant,
}

/// The provider of `[workbench.oidc]`.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    discovery: tokio::sync::OnceCell<Discovery>,
    keys: Mutex<Vec<Value>>,
    pending: Mutex<HashMap<String, Pending>>,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    B64.encode(bytes)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Oidc {
            config,
            http,
            discovery: tokio::sync::OnceCell::new(),
            keys: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The login button's text.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
        read_json(url, res).await
    }

    async fn discovery(&self) -> Result<&Discovery, OidcError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&url).await?;
                serde_json::from_value::<Discovery>(doc)
                    .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
            })
            .await
    }

    /// Starts a login: answers the provider's URL to send the browser to,
    /// and the state to keep in [`STATE_COOKIE`].
    pub async fn start(&self) -> Result<(String, String), OidcError> {
        let d = self.discovery().await?;
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let challenge = B64.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let url = format!(
            "{}{}{}",
            d.authorization_endpoint,
            if d.authorization_endpoint.contains('?') {
                '&'
            } else {
                '?'
            },
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.config.redirect_url)
                .append_pair("scope", &self.config.scopes)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .finish()
        );
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.at.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(OidcError::Provider(
                "too many logins are under way: try again in a few minutes".into(),
            ));
        }
        pending.insert(
            state.clone(),
            Pending {
                nonce,
                verifier,
                at: Instant::now(),
            },
        );
        Ok((url, state))
    }

    /// Finishes a login: `state` from the provider's redirect must be the
    /// one in the browser's cookie (`cookie_state`). Answers the person's
    /// name and role.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie_state: Option<&str>,
    ) -> Result<(String, Role), OidcError> {
        if !cookie_state.is_some_and(|c| crate::auth::same_secret(c, state)) {
            return Err(OidcError::UnknownState);
        }
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .filter(|p| p.at.elapsed() < PENDING_TTL)
            .ok_or(OidcError::UnknownState)?;
        let d = self.discovery().await?;
        // Built in a block: the serializer is not Send, so it must not
        // live across the await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &self.config.redirect_url)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("code_verifier", &pending.verifier);
            if !self.config.client_secret.is_empty() {
                form.append_pair("client_secret", &self.config.client_secret);
            }
            form.finish()
        };
        let res = self
            .http
            .post(&d.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{}: {e}", d.token_endpoint)))?;
        let answer = read_json(&d.token_endpoint, res).await?;
        let id_token = answer["id_token"]
            .as_str()
            .ok_or_else(|| OidcError::Provider("the token endpoint answered no id_token".into()))?;
        let claims = self.verify(id_token, d, &pending.nonce).await?;
        let user = claims[&self.config.username_claim]
            .as_str()
            .filter(|u| !u.is_empty() && u.len() <= 64)
            .ok_or_else(|| {
                OidcError::Token(format!(
                    "the `{}` claim is missing or not a name of 1 to 64 characters",
                    self.config.username_claim
                ))
            })?
            .to_owned();
        let values: Vec<&str> = match &claims[&self.config.roles_claim] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role = values
            .iter()
            .filter_map(|v| self.config.roles.get(*v).copied())
            .max()
            .ok_or_else(|| OidcError::NoRole {
                user: user.clone(),
                claim: self.config.roles_claim.clone(),
            })?;
        Ok((user, role))
    }

    /// Checks the ID token; answers its claims.
    async fn verify(&self, token: &str, d: &Discovery, nonce: &str) -> Result<Value, OidcError> {
        let bad = |m: &str| OidcError::Token(m.to_owned());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it is not a JWT of three parts"));
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| bad("a part is not base64url"));
        let header: Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| bad("its header is not JSON"))?;
        let claims: Value =
            serde_json::from_slice(&decode(p)?).map_err(|_| bad("its claims are not JSON"))?;
        let signature = decode(sig)?;
        let alg = header["alg"].as_str().unwrap_or("");
        let kid = header["kid"].as_str();
        let key = match self.key(kid, alg) {
            Some(k) => k,
            None => {
                // A new key: the provider may have rotated its keys.
                let jwks = self.get_json(&d.jwks_uri).await?;
                let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
                *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
                self.key(kid, alg)
                    .ok_or_else(|| bad("no key of the provider's JWKS matches its kid and alg"))?
            }
        };
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        verify_signature(alg, &key, signed, &signature)?;

        if claims["iss"].as_str() != Some(d.issuer.as_str()) {
            return Err(bad("its issuer is not the provider's"));
        }
        let client = self.config.client_id.as_str();
        let audience = match &claims["aud"] {
            Value::String(a) => a == client,
            Value::Array(a) => a.iter().any(|x| x.as_str() == Some(client)),
            _ => false,
        };
        if !audience {
            return Err(bad("it is not meant for this client (aud)"));
        }
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| exp + SKEW_SECS < now_secs())
        {
            return Err(bad("it has expired"));
        }
        if !claims["nonce"]
            .as_str()
            .is_some_and(|n| crate::auth::same_secret(n, nonce))
        {
            return Err(bad("its nonce is not this login's"));
        }
        Ok(claims)
    }

    fn key(&self, kid: Option<&str>, alg: &str) -> Option<Value> {
        let kty = match alg {
            "RS256" => "RSA",
            "ES256" => "EC",
            _ => return None,
        };
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|k| k["kty"] == kty && (kid.is_none() || k["kid"].as_str() == kid))
            .cloned()
    }
}

async fn read_json(url: &str, res: reqwest::Response) -> Result<Value, OidcError> {
    let status = res.status();
    let bytes = res
        .bytes()
        .await
        .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(OidcError::Provider(format!(
            "{url}: the answer is too large"
        )));
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Err(OidcError::Provider(format!(
            "{url} answered {status}: {text}"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| OidcError::Provider(format!("{url}: not JSON: {e}")))
}

/// Checks a JWS signature with a JWK: RS256 (PKCS#1 v1.5, SHA-256, keys of
/// 2048 bits or more) or ES256 (P-256, the fixed 64-byte signature).
fn verify_signature(alg: &str, key: &Value, signed: &[u8], sig: &[u8]) -> Result<(), OidcError> {
    use ring::signature;
    let part = |name: &str| {
        key[name]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| OidcError::Token(format!("the provider's key has no `{name}`")))
    };
    let ok = match alg {
        "RS256" => signature::RsaPublicKeyComponents {
            n: part("n")?,
            e: part("e")?,
        }
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
        .is_ok(),
        "ES256" => {
            if key["crv"] != "P-256" {
                return Err(OidcError::Token("the ES256 key is not on P-256".into()));
            }
            let mut point = vec![4u8];
            point.extend(part("x")?);
            point.extend(part("y")?);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, sig)
                .is_ok()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(OidcError::Token("its signature does not verify".into()))
    }
}

/// The state cookie's value in a `Cookie` header.
pub fn cookie_state(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(STATE_COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value that keeps a login's state. `Lax`, not `Strict`:
/// the provider's redirect back is a navigation from another site.
pub fn state_cookie(state: &str) -> String {
    format!(
        "{STATE_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        PENDING_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that clears it.
pub fn clear_state_cookie() -> String {
    format!("{STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}
