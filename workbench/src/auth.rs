//! Who may do what: users and roles, passwords, sessions, CSRF tokens and
//! the login rate limit.
//!
//! Passwords are argon2 hashes in the configuration. A login opens a
//! session: a random 256-bit token in a `Secure`, `HttpOnly`,
//! `SameSite=Strict` cookie (`__Host-` prefixed, so no subdomain can set
//! it), and a second random token, the CSRF token, that the page reads
//! from `GET /api/session` and sends back in the `X-CSRF-Token` header of
//! every request that changes something. Sessions live in this process:
//! a restart logs everybody out.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::config::{UserConfig, WorkbenchConfig};

/// The session cookie's name.
pub const COOKIE: &str = "__Host-verdict-workbench";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// At most this many sessions at once; the oldest idle ones go first.
const MAX_SESSIONS: usize = 10_000;

/// What a user may do; each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the serving rule set, the history, the proposals.
    Viewer,
    /// Also edits drafts, runs their tests and backtests, proposes, and
    /// deploys approved proposals.
    Analyst,
    /// Also approves or rejects other people's proposals; reads the audit
    /// log.
    Approver,
    /// Also exports the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Analyst, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// Hashes a password for `password_hash` in the configuration (argon2id,
/// default parameters, a random salt).
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    #[serde(skip)]
    last_seen: Instant,
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Wrong name or password (never which of the two).
    Wrong,
    /// Too many attempts for this name: wait this long.
    Limited(Duration),
}

/// Users, sessions and the login limit.
pub struct Auth {
    users: HashMap<String, (Role, String)>,
    /// A hash to verify against for unknown names, so that an unknown name
    /// takes as long to refuse as a wrong password.
    decoy: String,
    // A std mutex: held for map operations only, never across an await.
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    limiter: DefaultKeyedRateLimiter<String>,
}

fn token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    pub fn new(config: &WorkbenchConfig) -> Auth {
        let users = config
            .users
            .iter()
            .map(
                |UserConfig {
                     name,
                     role,
                     password_hash,
                 }| (name.clone(), (*role, password_hash.clone())),
            )
            .collect();
        let burst = NonZeroU32::new(config.login_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(config.login_refill_secs.max(1)))
            .expect("a period above zero")
            .allow_burst(burst);
        Auth {
            users,
            decoy: hash_password(&token()),
            sessions: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(config.session_idle_minutes.saturating_mul(60)),
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Checks a name and password; opens a session. Every attempt, right or
    /// wrong, spends one of the name's allowance, so guessing is bounded
    /// whatever the outcome. Blocking: argon2 takes tens of milliseconds.
    pub fn login(&self, name: &str, password: &str) -> Result<(String, Session), LoginRefused> {
        let key = name.trim().to_lowercase();
        if let Err(wait) = self.limiter.check_key(&key) {
            let wait = wait.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(LoginRefused::Limited(wait));
        }
        // Forget names unseen for a while, so random names cannot grow the
        // limiter without bound.
        self.limiter.retain_recent();
        let (role, hash) = match self.users.get(name) {
            Some((role, hash)) => (Some(*role), hash.as_str()),
            None => (None, self.decoy.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        let Some(role) = role.filter(|_| ok) else {
            return Err(LoginRefused::Wrong);
        };
        Ok(self.open(name, role))
    }

    /// Opens a session for a user whose identity was checked elsewhere
    /// (an OIDC provider's ID token, [`crate::oidc`]).
    pub fn open(&self, name: &str, role: Role) -> (String, Session) {
        let session = Session {
            user: name.to_owned(),
            role,
            csrf: token(),
            last_seen: Instant::now(),
        };
        let id = token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session of a cookie's token, if it is open; refreshes it.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let s = sessions.get_mut(id)?;
        if s.last_seen.elapsed() >= self.idle {
            sessions.remove(id);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The role of a configured user.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.users.get(name).map(|(r, _)| *r)
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session token in a `Cookie` header.
pub fn cookie_token(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value that opens a session.
pub fn set_cookie(id: &str, idle: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        idle.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkbenchConfig {
        let mut c = WorkbenchConfig::new(
            "/nonexistent".into(),
            vec![UserConfig {
                name: "alice".into(),
                role: Role::Analyst,
                password_hash: hash_password("right"),
            }],
        );
        c.login_burst = 3;
        c.login_refill_secs = 3600;
        c
    }

    #[test]
    fn a_right_password_opens_a_session_and_a_wrong_one_does_not() {
        let auth = Auth::new(&config());
        assert_eq!(auth.login("alice", "wrong"), Err(LoginRefused::Wrong));
        assert_eq!(auth.login("mallory", "right"), Err(LoginRefused::Wrong));
        let (id, s) = auth.login("alice", "right").unwrap();
        assert_eq!((s.user.as_str(), s.role), ("alice", Role::Analyst));
        assert_eq!(auth.session(&id).map(|s| s.user), Some("alice".into()));
        auth.logout(&id);
        assert_eq!(auth.session(&id), None);
    }

    #[test]
    fn attempts_past_the_burst_are_refused_even_with_the_right_password() {
        let auth = Auth::new(&config());
        for _ in 0..3 {
            assert_eq!(auth.login("alice", "guess"), Err(LoginRefused::Wrong));
        }
        assert!(matches!(
            auth.login("alice", "right"),
            Err(LoginRefused::Limited(_))
        ));
        // Another name has its own allowance.
        assert_eq!(auth.login("bob", "guess"), Err(LoginRefused::Wrong));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = format!("a=1; {COOKIE}=abc; b=2");
        assert_eq!(cookie_token(&h), Some("abc"));
        assert_eq!(cookie_token("a=1"), None);
        let set = set_cookie("abc", Duration::from_secs(60));
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
    }
}
