//! Who may use `eddy serve`: API keys, each with a role and a rate.
//!
//! Keys live in a TOML file that holds only their SHA-256 hashes (`eddy api-key create` prints
//! a key once). A producer key may post events, at most `rate` events per second (a token
//! bucket of one second's events, [`governor`]); a viewer key may open the dashboard and
//! `/metrics`. A key is `NAME.SECRET`, presented as `Authorization: Bearer NAME.SECRET`; a
//! browser, which cannot set that header on a page or an event stream, opens
//! `/?key=NAME.SECRET` once and gets the key back as an HTTP-only cookie.
//!
//! The server re-reads the file when it changes (checked every second), so a key revoked with
//! `eddy api-key revoke` stops working within a second, without a restart; a key's bucket
//! survives the reload while its rate stays the same.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// What a key's holder may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Post events to the ingest API.
    Producer,
    /// Open the dashboard and read `/metrics`.
    Viewer,
}

impl KeyRole {
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Producer => "producer",
            KeyRole::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for KeyRole {
    type Err = AccessError;
    fn from_str(text: &str) -> Result<KeyRole, AccessError> {
        match text {
            "producer" => Ok(KeyRole::Producer),
            "viewer" => Ok(KeyRole::Viewer),
            _ => Err(AccessError::Invalid(format!(
                "unknown key role `{text}` (expected producer or viewer)"
            ))),
        }
    }
}

/// An API key file or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read the API key file `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API key file `{}` is not valid: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Security(#[from] eddy_security::SecurityError),
}

/// The file `eddy serve --api-keys` reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyEntry>,
}

/// One key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds it: the first part of the key, and the label of its metrics.
    pub name: String,
    pub role: KeyRole,
    /// SHA-256 of the key's secret, in hex.
    pub hash: String,
    /// Most events per second a producer may post; none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<NonZeroU32>,
}

impl KeyFile {
    /// Reads `path`; a file that does not exist is empty when `missing_is_empty`.
    pub fn load(path: &Path, missing_is_empty: bool) -> Result<KeyFile, AccessError> {
        match std::fs::read_to_string(path) {
            Ok(text) => KeyFile::parse(&text, path),
            Err(e) if missing_is_empty && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(KeyFile::default())
            }
            Err(source) => Err(AccessError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The keys in `text`, the content of `path` (named in errors), checked: usable names,
    /// each once, hashes of 64 hex digits.
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile, AccessError> {
        let file: KeyFile = toml::from_str(text).map_err(|e| AccessError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut names = std::collections::HashSet::new();
        for key in &file.keys {
            eddy_security::token::check_name(&key.name)?;
            if !names.insert(&key.name) {
                return Err(AccessError::Parse {
                    path: path.to_path_buf(),
                    reason: format!("the key name `{}` appears twice", key.name),
                });
            }
            if key.hash.len() != 64 || !key.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AccessError::Parse {
                    path: path.to_path_buf(),
                    reason: format!("the hash of `{}` is not 64 hex digits", key.name),
                });
            }
        }
        Ok(file)
    }

    /// Writes the file whole, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), AccessError> {
        let text = format!(
            "# API keys of `eddy serve` (hashes only). Edit with `eddy api-key create|revoke`.\n{}",
            toml::to_string(self).map_err(|e| AccessError::Invalid(e.to_string()))?
        );
        eddy_security::certs::write_file(path, text.as_bytes(), true)?;
        Ok(())
    }

    /// Adds a key named `name`; returns the key, which is shown once and stored nowhere.
    pub fn create(
        &mut self,
        name: &str,
        role: KeyRole,
        rate: Option<NonZeroU32>,
    ) -> Result<String, AccessError> {
        if self.keys.iter().any(|k| k.name == name) {
            return Err(AccessError::Invalid(format!(
                "a key named `{name}` exists already: revoke it first, or pick another name"
            )));
        }
        let (key, hash) = eddy_security::token::generate(name)?;
        self.keys.push(KeyEntry {
            name: name.to_string(),
            role,
            hash,
            rate,
        });
        Ok(key)
    }

    /// Removes the key named `name`; whether there was one.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| k.name != name);
        self.keys.len() != before
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// The holder of a valid key, as a request extension.
#[derive(Debug)]
pub struct Caller {
    pub name: String,
    pub role: KeyRole,
    rate: Option<NonZeroU32>,
    limiter: Option<Limiter>,
}

/// Why a producer may not post `n` events now.
#[derive(Debug, PartialEq, Eq)]
pub enum Throttled {
    /// More events in one request than the key may post in a second: split the batch.
    TooMany { rate: u32 },
    /// Over the rate: send again after this long.
    Wait(Duration),
}

impl Caller {
    /// Takes `n` events from the caller's bucket.
    pub fn take(&self, n: usize) -> Result<(), Throttled> {
        let (Some(limiter), Some(rate)) = (&self.limiter, self.rate) else {
            return Ok(());
        };
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Throttled::Wait(not_until.wait_time_from(
                governor::clock::Clock::now(&governor::clock::DefaultClock::default()),
            ))),
            Err(_) => Err(Throttled::TooMany { rate: rate.get() }),
        }
    }
}

/// The keys in force: by hash of their secret.
#[derive(Debug, Default)]
struct Keys {
    by_hash: HashMap<String, Arc<Caller>>,
}

impl Keys {
    /// The keys of `file`, keeping the bucket of each key whose rate did not change.
    fn from_file(file: KeyFile, old: &Keys) -> Keys {
        let by_hash = file
            .keys
            .into_iter()
            .map(|k| {
                let caller = match old.by_hash.get(&k.hash) {
                    Some(c) if c.name == k.name && c.role == k.role && c.rate == k.rate => {
                        Arc::clone(c)
                    }
                    _ => Arc::new(Caller {
                        limiter: k
                            .rate
                            .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r))),
                        name: k.name,
                        role: k.role,
                        rate: k.rate,
                    }),
                };
                (k.hash, caller)
            })
            .collect();
        Keys { by_hash }
    }
}

/// The server's view of its key file, re-read when the file changes.
#[derive(Clone, Debug)]
pub struct Access {
    path: PathBuf,
    keys: Arc<RwLock<(Arc<Keys>, Option<SystemTime>)>>,
    /// Whether cookies are marked `Secure` (the server speaks HTTPS).
    https: bool,
}

/// The cookie a browser keeps a viewer key in.
const COOKIE: &str = "eddy_key";

impl Access {
    /// Loads `path` (it must exist) and re-reads it every second while the returned value's
    /// clones live (call inside a Tokio runtime).
    pub fn watch(path: &Path, https: bool) -> Result<Access, AccessError> {
        let file = KeyFile::load(path, false)?;
        let access = Access {
            path: path.to_path_buf(),
            keys: Arc::new(RwLock::new((
                Arc::new(Keys::from_file(file, &Keys::default())),
                modified(path),
            ))),
            https,
        };
        let weak = Arc::downgrade(&access.keys);
        let path = access.path.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(keys) = weak.upgrade() else { return };
                reload(&path, &keys);
            }
        });
        Ok(access)
    }

    /// The caller a presented key (`NAME.SECRET`) belongs to.
    fn check(&self, presented: &str) -> Option<Arc<Caller>> {
        let (name, hash) = eddy_security::token::parse(presented)?;
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()).0);
        keys.by_hash.get(&hash).filter(|c| c.name == name).cloned()
    }

    /// Re-reads the key file now if it changed (the watcher does it every second).
    pub fn reload_now(&self) {
        reload(&self.path, &self.keys);
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn reload(path: &Path, keys: &RwLock<(Arc<Keys>, Option<SystemTime>)>) {
    let now = modified(path);
    let old = {
        let guard = keys.read().unwrap_or_else(|e| e.into_inner());
        if guard.1 == now {
            return;
        }
        Arc::clone(&guard.0)
    };
    match KeyFile::load(path, false) {
        Ok(file) => {
            let fresh = Keys::from_file(file, &old);
            tracing::info!(path = %path.display(), keys = fresh.by_hash.len(), "API keys reloaded");
            *keys.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(fresh), now);
        }
        // A half-edited or removed file: keep the keys in force, and say so once per change.
        Err(e) => {
            tracing::warn!(error = %e, "API keys not reloaded; the previous ones stay in force");
            keys.write().unwrap_or_else(|e| e.into_inner()).1 = now;
        }
    }
}

/// The key a request presents: the bearer token, else the cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(value.to_str().ok()?),
        None => None,
    };
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    key_of(authorization, cookies)
}

/// The key in an `Authorization` header's value (`Bearer KEY`), or else in the cookie headers'
/// `eddy_key=KEY`; what the server then checks is [`eddy_security::token::parse`]'s.
pub fn key_of<'a>(
    authorization: Option<&'a str>,
    cookies: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if let Some(value) = authorization {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    cookies
        .into_iter()
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Lets a request through only with a key of `role` (then the [`Caller`] is an extension of
/// the request); 401 without a valid key, 403 with a key of another role. Runs before the
/// body is read, so a refused request stores nothing.
pub async fn require(
    State((access, role)): State<(Access, KeyRole)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(caller) = presented(request.headers()).and_then(|k| access.check(k)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!(
                "a {} API key is needed: send `Authorization: Bearer NAME.SECRET` (make one with `eddy api-key create`)",
                role.name()
            ),
        );
    };
    if caller.role != role {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "the key `{}` is a {} key; this needs a {} key",
                caller.name,
                caller.role.name(),
                role.name()
            ),
        );
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `GET /?key=NAME.SECRET`: a valid viewer key becomes an HTTP-only cookie and the browser is
/// sent to the same page without the key in its address. Other requests pass.
pub async fn key_from_query(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("key=")))
    else {
        return next.run(request).await;
    };
    let key = key.replace("%2E", ".").replace("%2e", ".");
    match access.check(&key) {
        Some(caller) if caller.role == KeyRole::Viewer => {
            let secure = if access.https { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict{secure}");
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(request.uri().path())
                    .unwrap_or(HeaderValue::from_static("/")),
            );
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            response
        }
        _ => refuse(
            StatusCode::UNAUTHORIZED,
            "that key is not a valid viewer key".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_keeps_hashes_only_and_refuses_what_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let mut file = KeyFile::load(&path, true).unwrap();
        let key = file
            .create("web", KeyRole::Producer, NonZeroU32::new(100))
            .unwrap();
        assert!(file.create("web", KeyRole::Viewer, None).is_err());
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(key.split_once('.').unwrap().1));
        let loaded = KeyFile::load(&path, false).unwrap();
        assert_eq!(loaded.keys, file.keys);

        std::fs::write(
            &path,
            "[[key]]\nname = \"a\"\nrole = \"admin\"\nhash = \"00\"\n",
        )
        .unwrap();
        let e = KeyFile::load(&path, false).unwrap_err().to_string();
        assert!(e.contains("keys.toml") && e.contains("admin"), "{e}");
        assert!(KeyFile::load(&dir.path().join("none"), false).is_err());
    }

    #[test]
    fn a_producer_takes_events_from_a_bucket_of_one_second() {
        let keys = Keys::from_file(
            KeyFile {
                keys: vec![KeyEntry {
                    name: "p".into(),
                    role: KeyRole::Producer,
                    hash: "0".repeat(64),
                    rate: NonZeroU32::new(10),
                }],
            },
            &Keys::default(),
        );
        let caller = &keys.by_hash[&"0".repeat(64)];
        assert_eq!(caller.take(11), Err(Throttled::TooMany { rate: 10 }));
        assert_eq!(caller.take(10), Ok(()));
        assert!(matches!(caller.take(5), Err(Throttled::Wait(d)) if d > Duration::ZERO));
        assert_eq!(caller.take(0), Ok(()));
    }
}
