//! The `[workbench]` configuration: who may log in, where the workbench
//! keeps its record, and where deployed rule-set versions live.
//!
//! Every table refuses unknown keys, so a misspelt key is an error at start,
//! not a silent default. It serialises (for `verdict run --check-config`)
//! with every password hash and every Kafka property that holds a
//! credential shown as `<redacted>`. Example:
//!
//! ```toml
//! [workbench]
//! data_dir = "/var/lib/verdict/workbench"
//!
//! [[workbench.users]]
//! name = "alice"
//! role = "analyst"
//! # verdict-workbench-hash < password.txt
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//!
//! [workbench.versions.kafka]
//! brokers = "kafka-0:9092"
//! topic = "verdict.rulesets"
//!
//! [workbench.tls]
//! cert = "/etc/verdict/tls/tls.crt"
//! key = "/etc/verdict/tls/tls.key"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::error::WorkbenchError;

/// The workbench: off unless this table is present.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkbenchConfig {
    /// Folder of the workbench's durable state: the audit log
    /// (`audit.jsonl`, appended and synced per action) and the drafts and
    /// proposals (`state.json`, replaced atomically). Created if missing.
    pub data_dir: PathBuf,
    /// The people who may log in. At least one is needed; names are unique.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Minutes a session lasts without a request before it must log in
    /// again. Default 480 (a working day).
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u64,
    /// Failed logins a user name may have in a row before it must wait.
    /// Default 5.
    #[serde(default = "default_login_burst")]
    pub login_burst: u32,
    /// Seconds after which one more attempt is allowed once the burst is
    /// spent. Default 60.
    #[serde(default = "default_login_refill_secs")]
    pub login_refill_secs: u64,
    /// Request bodies larger than this (a draft's files) are refused with
    /// 413. Default 4 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds a backtest may run before its request is answered with 504.
    /// Default 120.
    #[serde(default = "default_backtest_timeout_secs")]
    pub backtest_timeout_secs: u64,
    /// Where deployed rule-set versions live (see [`VersionsConfig`]).
    #[serde(default)]
    pub versions: VersionsConfig,
    /// Logins through an OpenID Connect provider (Keycloak, Okta, Entra
    /// ID, Google …) besides or instead of `users` (see [`OidcConfig`]).
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// TLS for the HTTP listener. Without it the listener is plain HTTP,
    /// which only a loopback address or a TLS-terminating proxy makes safe:
    /// session cookies are marked `Secure`, so browsers send them over
    /// plain HTTP to localhost only.
    pub tls: Option<TlsConfig>,
}

/// One person who may log in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The login name, unique.
    pub name: String,
    /// `viewer` (reads), `analyst` (drafts, tests, backtests, proposes,
    /// deploys approved proposals), `approver` (also approves others'
    /// proposals and reads the audit log), or `admin` (also exports the
    /// audit log). Each role can do what the ones before it can.
    pub role: Role,
    /// The argon2 hash of the password, as a PHC string
    /// (`$argon2id$v=19$…`), as `verdict-workbench-hash` prints it.
    #[serde(serialize_with = "redact")]
    pub password_hash: String,
}

/// Where rule-set versions live. Exactly one of the two, or neither: then
/// versions are kept in this process only (lost at exit; for tests and
/// trials).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsConfig {
    /// A compacted Kafka topic that every instance reads from its start.
    pub kafka: Option<KafkaVersionsConfig>,
    /// A rule folder (or a mounted Kubernetes ConfigMap), read-only: the
    /// workbench shows it and runs drafts against it, but deploys through
    /// whatever writes the folder.
    pub folder: Option<PathBuf>,
}

/// The Kafka topic of rule-set versions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaVersionsConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic: one partition, `cleanup.policy=compact`, created so if
    /// missing. Default `verdict.rulesets`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Replication factor when the topic is created. Default 1.
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// Further librdkafka properties (security, SASL) for both the producer
    /// and the consumer, as text.
    #[serde(default, serialize_with = "redact_credentials")]
    pub properties: BTreeMap<String, String>,
}

/// An OpenID Connect provider: the authorization-code flow with PKCE, a
/// nonce and a state bound to the browser; the ID token's signature
/// (RS256 or ES256, from the provider's JWKS), issuer, audience, expiry
/// and nonce are checked. The role comes from a claim of the ID token
/// through `roles`; a person none of whose values maps to a role is
/// refused.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` names the
    /// endpoints.
    pub issuer: String,
    pub client_id: String,
    /// The client's secret (shown `<redacted>`); empty for a public client.
    #[serde(default, serialize_with = "redact")]
    pub client_secret: String,
    /// Where the provider sends the browser back: this listener's public
    /// address + `/workbench/api/oidc/callback`, as registered with the
    /// provider.
    pub redirect_url: String,
    /// Scopes asked for. Default `openid profile email`.
    #[serde(default = "default_scopes")]
    pub scopes: String,
    /// The claim that names the person. Default `preferred_username`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim whose values (a text or a list) give the role. Default
    /// `groups`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim value → role (`"risk-analysts" = "analyst"`); with several
    /// values the highest role wins.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The login button's text. Default `Single sign-on`.
    #[serde(default = "default_oidc_label")]
    pub label: String,
}

fn default_scopes() -> String {
    "openid profile email".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_oidc_label() -> String {
    "Single sign-on".into()
}

/// The TLS listener's certificate and key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Seconds between looks at the two files; a change is loaded without a
    /// restart (a failed load keeps the old pair). Default 10.
    #[serde(default = "default_tls_poll_secs")]
    pub poll_secs: u64,
}

const REDACTED: &str = "<redacted>";

fn redact<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// True for a raw librdkafka property whose value is a credential
/// (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`,
/// `ssl.key.pem`, `sasl.jaas.config` …), to be shown as `<redacted>`.
pub fn is_credential_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "jaas",
        "private",
    ]
    .iter()
    .any(|w| key.contains(w))
        || key.ends_with(".key")
        || key.ends_with(".key.pem")
        || key == "sasl.oauthbearer.config"
}

fn redact_credentials<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = properties
        .iter()
        .map(|(k, v)| {
            let v = if is_credential_property(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    serde::Serialize::serialize(&shown, s)
}

fn default_session_idle_minutes() -> u64 {
    480
}
fn default_login_burst() -> u32 {
    5
}
fn default_login_refill_secs() -> u64 {
    60
}
fn default_max_body_bytes() -> usize {
    4 << 20
}
fn default_backtest_timeout_secs() -> u64 {
    120
}
fn default_topic() -> String {
    "verdict.rulesets".into()
}
fn default_replication() -> i32 {
    1
}
fn default_tls_poll_secs() -> u64 {
    10
}

impl WorkbenchConfig {
    /// A configuration with defaults, for tests and the demo.
    pub fn new(data_dir: PathBuf, users: Vec<UserConfig>) -> WorkbenchConfig {
        WorkbenchConfig {
            data_dir,
            users,
            session_idle_minutes: default_session_idle_minutes(),
            login_burst: default_login_burst(),
            login_refill_secs: default_login_refill_secs(),
            max_body_bytes: default_max_body_bytes(),
            backtest_timeout_secs: default_backtest_timeout_secs(),
            versions: VersionsConfig::default(),
            oidc: None,
            tls: None,
        }
    }

    /// Checks what serde cannot: users present and unique, hashes that
    /// parse, limits above zero, at most one version store.
    pub fn validate(&self) -> Result<(), WorkbenchError> {
        let bad = |m: String| Err(WorkbenchError::Config(m));
        if self.users.is_empty() && self.oidc.is_none() {
            return bad(
                "[[workbench.users]] names nobody and no [workbench.oidc] provider is set: add at least one user or a provider".into(),
            );
        }
        if let Some(o) = &self.oidc {
            if o.roles.is_empty() {
                return bad(format!(
                    "[workbench.oidc] roles maps no value of the `{}` claim to a role: nobody could log in",
                    o.roles_claim
                ));
            }
            for (what, url) in [("issuer", &o.issuer), ("redirect_url", &o.redirect_url)] {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return bad(format!(
                        "[workbench.oidc] {what} must be an http(s) URL, not {url:?}"
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if u.name.trim().is_empty() || u.name.len() > 64 {
                return bad(format!(
                    "the user name {:?} must have 1 to 64 characters",
                    u.name
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return bad(format!("the user `{}` is named twice", u.name));
            }
            if let Err(e) = argon2::password_hash::phc::PasswordHash::new(&u.password_hash) {
                return bad(format!(
                    "the password_hash of `{}` is not an argon2 PHC string ({e}): make one with verdict-workbench-hash",
                    u.name
                ));
            }
        }
        if self.session_idle_minutes == 0 || self.login_burst == 0 || self.login_refill_secs == 0 {
            return bad(
                "session_idle_minutes, login_burst and login_refill_secs must be above 0".into(),
            );
        }
        if self.versions.kafka.is_some() && self.versions.folder.is_some() {
            return bad("[workbench.versions] takes `kafka` or `folder`, not both".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        workbench: WorkbenchConfig,
    }

    fn parse(text: &str) -> Result<WorkbenchConfig, String> {
        toml::from_str::<File>(text)
            .map(|f| f.workbench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses_and_a_misspelt_key_is_an_error() {
        let hash = crate::auth::hash_password("x");
        let ok = format!(
            "[workbench]\ndata_dir = \"/tmp/wb\"\n[[workbench.users]]\nname = \"alice\"\nrole = \"analyst\"\npassword_hash = \"{hash}\"\n\
             [workbench.versions.kafka]\nbrokers = \"k:9092\"\n[workbench.tls]\ncert = \"c\"\nkey = \"k\"\n"
        );
        let c = parse(&ok).unwrap();
        c.validate().unwrap();
        assert_eq!(c.versions.kafka.unwrap().topic, "verdict.rulesets");
        assert_eq!(c.tls.unwrap().poll_secs, 10);
        for (typo, key) in [
            ("data_dir = \"/tmp/wb\"", "data_dri = \"/tmp/wb\""),
            ("role = \"analyst\"", "role = \"analyst\"\nrol = 1"),
            (
                "brokers = \"k:9092\"",
                "brokers = \"k:9092\"\ntopik = \"t\"",
            ),
        ] {
            assert!(parse(&ok.replace(typo, key)).is_err(), "{key}");
        }
        assert!(parse(&ok.replace("\"analyst\"", "\"superuser\"")).is_err());
    }

    #[test]
    fn shown_it_redacts_password_hashes_and_credential_properties() {
        let hash = crate::auth::hash_password("x");
        let mut c = WorkbenchConfig::new("/tmp/wb".into(), vec![]);
        c.users.push(UserConfig {
            name: "alice".into(),
            role: Role::Analyst,
            password_hash: hash.clone(),
        });
        c.versions.kafka = Some(KafkaVersionsConfig {
            brokers: "k:9092".into(),
            topic: default_topic(),
            replication: 1,
            properties: BTreeMap::from([
                ("sasl.password".into(), "hunter2".into()),
                ("security.protocol".into(), "sasl_ssl".into()),
            ]),
        });
        let shown = toml::to_string(&c).unwrap();
        assert!(
            !shown.contains(&hash) && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            shown.contains("sasl_ssl") && shown.contains("alice"),
            "{shown}"
        );
        assert_eq!(shown.matches(REDACTED).count(), 2, "{shown}");
    }

    #[test]
    fn a_password_that_is_no_hash_and_a_user_named_twice_are_refused() {
        let mut c = WorkbenchConfig::new("/tmp".into(), vec![]);
        assert!(c.validate().is_err());
        c.users.push(UserConfig {
            name: "a".into(),
            role: Role::Viewer,
            password_hash: "plain".into(),
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("verdict-workbench-hash")
        );
        c.users[0].password_hash = crate::auth::hash_password("p");
        c.users.push(c.users[0].clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("named twice")
        );
    }
}
