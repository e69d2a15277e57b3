//! Who is asking: browser sessions (cookie), API tokens (bearer), and the
//! rule that every `/api` route and `/metrics` needs one of them unless it
//! is on the short public list. The rule sits in one middleware in front of
//! everything, so a new route is protected without anyone remembering to.
//! docs/security.md describes the model.

pub mod throttle;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use plantops_core::account::{
    issue_secret, secret_digest, Role, Scope, User, API_TOKEN_PREFIX, SESSION_PREFIX,
};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "plantops_session";
/// The file the first-start setup token is written to, in the data directory.
pub const SETUP_TOKEN_FILE: &str = "setup-token";
/// How often at most a session's or token's "last seen" is written.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// Routes anyone may call (the broker's endpoints check a shared secret of
/// their own, the setup a one-time token). The API test walks the OpenAPI
/// document against this list.
pub const PUBLIC_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/api/health"),
    (Method::GET, "/api/ready"),
    (Method::GET, "/api/auth/status"),
    (Method::POST, "/api/auth/setup"),
    (Method::POST, "/api/auth/login"),
    (Method::GET, "/api/mqtt/ca"),
    (Method::GET, "/api/openapi.json"),
    (Method::POST, "/api/mqtt/auth"),
    (Method::POST, "/api/mqtt/acl"),
    (Method::POST, "/api/mqtt/superuser"),
];

/// Routes that pass the sign-in rule and check a credential of their own:
/// registration takes an enrollment key, the open window or an admin, and
/// without one answers 401 itself.
pub const SELF_CHECKED_ROUTES: &[(Method, &str)] = &[(Method::POST, "/api/devices/register")];

/// What a viewer (or a viewer's full token) may change: its own session,
/// password and tokens.
fn is_self_service(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::POST, "/api/auth/logout")
            | (&Method::PUT, "/api/auth/password")
            | (&Method::POST, "/api/tokens")
    ) || (method == Method::DELETE && path.starts_with("/api/tokens/"))
}

fn is_public(method: &Method, path: &str) -> bool {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    PUBLIC_ROUTES
        .iter()
        .chain(SELF_CHECKED_ROUTES)
        .any(|(m, p)| m == method && *p == path)
}

fn is_protected(path: &str) -> bool {
    path == "/metrics" || path == "/api" || path.starts_with("/api/")
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `false` = `PLANTOPS_AUTH=off`: every request acts as an admin.
    pub required: bool,
    /// `PLANTOPS_ENROLLMENT=open`: devices register without a key.
    pub enrollment_open: bool,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_lifetime: Duration,
    /// Take the client address from `X-Forwarded-For` (behind nginx).
    pub trust_proxy: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            required: true,
            enrollment_open: false,
            session_idle: Duration::from_secs(7 * 24 * 3600),
            session_lifetime: Duration::from_secs(30 * 24 * 3600),
            trust_proxy: false,
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session; carries the digest to end it.
    Session {
        digest: String,
    },
    Token {
        id: Uuid,
        scope: Scope,
    },
    /// `PLANTOPS_AUTH=off`.
    AuthOff,
}

/// The user a request acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub credential: Credential,
}

impl Principal {
    fn anonymous_admin() -> Self {
        Self {
            user: User {
                id: Uuid::nil(),
                username: "anonymous".into(),
                role: Role::Admin,
                created_at: DateTime::<Utc>::UNIX_EPOCH,
            },
            credential: Credential::AuthOff,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin && !self.is_read_only_token()
    }

    fn is_read_only_token(&self) -> bool {
        matches!(
            self.credential,
            Credential::Token {
                scope: Scope::Read,
                ..
            }
        )
    }

    /// The account behind the request; `None` with `PLANTOPS_AUTH=off`.
    pub fn account(&self) -> Option<&User> {
        (!matches!(self.credential, Credential::AuthOff)).then_some(&self.user)
    }
}

/// How long a looked-up credential is trusted without asking the database
/// again. Revocations made through this server (sign-out, token deletion,
/// password or role changes, removed users) take effect at once; ones made
/// elsewhere (`plantops user passwd`, another instance) within this time.
const CREDENTIAL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// Past this many cached credentials the cache starts afresh.
const CREDENTIAL_CACHE_MAX: usize = 10_000;

/// Recently verified credentials, by digest: an API call then costs no
/// database round trip for its credential.
#[derive(Default)]
struct CredentialCache {
    entries: Mutex<std::collections::HashMap<String, (Principal, tokio::time::Instant)>>,
}

impl CredentialCache {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (Principal, tokio::time::Instant)>,
    > {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, digest: &str) -> Option<Principal> {
        let entries = self.entries();
        let (principal, until) = entries.get(digest)?;
        (tokio::time::Instant::now() < *until).then(|| principal.clone())
    }

    fn put(&self, digest: String, principal: Principal) {
        let mut entries = self.entries();
        if entries.len() >= CREDENTIAL_CACHE_MAX {
            entries.clear();
        }
        entries.insert(
            digest,
            (
                principal,
                tokio::time::Instant::now() + CREDENTIAL_CACHE_TTL,
            ),
        );
    }
}

/// The one-time token that lets the first admin be created.
struct SetupToken {
    plain: String,
    file: PathBuf,
}

/// Authentication state shared by the middleware and the auth routes.
pub struct Auth {
    pub settings: AuthSettings,
    pub throttle: throttle::LoginThrottle,
    setup: Mutex<Option<SetupToken>>,
    verified: CredentialCache,
}

impl Auth {
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            settings,
            throttle: Default::default(),
            setup: Mutex::new(None),
            verified: CredentialCache::default(),
        }
    }

    /// Forgets every cached credential: call after anything that ends a
    /// session or token or changes what a user may do.
    pub fn forget_credentials(&self) {
        self.verified.entries().clear();
    }

    fn setup_token(&self) -> std::sync::MutexGuard<'_, Option<SetupToken>> {
        self.setup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the setup token and writes it (0600) to the data directory.
    pub fn open_setup(&self, data_dir: &std::path::Path) -> std::io::Result<()> {
        let token = issue_secret("").plain;
        let file = data_dir.join(SETUP_TOKEN_FILE);
        plantops_mqtt::certs::write_private(&file, format!("{token}\n").as_bytes())?;
        *self.setup_token() = Some(SetupToken { plain: token, file });
        Ok(())
    }

    /// The link that opens the setup page, while setup is pending.
    pub fn setup_link(&self, addr: SocketAddr) -> Option<String> {
        let guard = self.setup_token();
        let token = guard.as_ref()?;
        let host = if addr.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!(
            "http://{host}:{}/setup?token={}",
            addr.port(),
            token.plain
        ))
    }

    pub fn setup_token_matches(&self, candidate: &str) -> bool {
        self.setup_token()
            .as_ref()
            .is_some_and(|t| bool::from(t.plain.as_bytes().ct_eq(candidate.as_bytes())))
    }

    /// Ends setup: the token stops working and its file goes.
    pub fn close_setup(&self) {
        if let Some(token) = self.setup_token().take() {
            if let Err(error) = std::fs::remove_file(&token.file) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%error, file = %token.file.display(), "cannot remove the setup token file");
                }
            }
        }
    }

    /// The `Set-Cookie` value of a new session.
    pub fn session_cookie(&self, value: String, https: bool) -> String {
        Cookie::build((SESSION_COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(https)
            .max_age(cookie::time::Duration::seconds(
                self.settings.session_lifetime.as_secs() as i64,
            ))
            .build()
            .to_string()
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn expired_cookie(&self, https: bool) -> String {
        let mut cookie = Cookie::build((SESSION_COOKIE, ""))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(https)
            .build();
        cookie.make_removal();
        cookie.to_string()
    }
}

/// A new session secret and its digest.
pub fn new_session() -> (String, String) {
    let secret = issue_secret(SESSION_PREFIX);
    (secret.plain, secret.digest)
}

/// Whether the request reached us over HTTPS (directly or through a proxy).
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The client's address: the peer, or with `trust_proxy` the last address
/// the proxy appended to `X-Forwarded-For`.
pub fn client_address(
    request_headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_proxy: bool,
) -> IpAddr {
    if trust_proxy {
        let forwarded = request_headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse::<IpAddr>().ok())
            .next_back();
        if let Some(address) = forwarded {
            return address;
        }
    }
    peer.map(|p| p.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub fn peer(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

fn session_cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

/// The bearer credential, if the request sends one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// Whether a cookie-authenticated change comes from our own pages: its
/// `Origin` (or, without one, `Referer`) names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(uri) = source.and_then(|s| s.parse::<axum::http::Uri>().ok()) else {
        return false;
    };
    uri.authority()
        .is_some_and(|authority| authority.as_str().eq_ignore_ascii_case(host))
}

/// Finds the principal behind a request's credentials. `Ok(None)`: it sent
/// none, or none that is valid.
async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    let auth = &state.auth;
    if !auth.settings.required {
        return Ok(Some(Principal::anonymous_admin()));
    }
    let now = plantops_core::now();
    if let Some(token) = bearer(headers).filter(|t| t.starts_with(API_TOKEN_PREFIX)) {
        let digest = secret_digest(token);
        if let Some(principal) = auth.verified.get(&digest) {
            return Ok(Some(principal));
        }
        let Some((token, user)) = state.store.api_token(&digest).await? else {
            return Ok(None);
        };
        if token.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
            state.store.touch_api_token(token.id, now).await?;
        }
        let principal = Principal {
            user,
            credential: Credential::Token {
                id: token.id,
                scope: token.scope,
            },
        };
        auth.verified.put(digest, principal.clone());
        return Ok(Some(principal));
    }
    let Some(value) = session_cookie_value(headers) else {
        return Ok(None);
    };
    let digest = secret_digest(&value);
    if let Some(principal) = auth.verified.get(&digest) {
        return Ok(Some(principal));
    }
    let Some(session) = state.store.session(&digest).await? else {
        return Ok(None);
    };
    let idle =
        chrono::Duration::from_std(auth.settings.session_idle).unwrap_or(chrono::Duration::MAX);
    let lifetime =
        chrono::Duration::from_std(auth.settings.session_lifetime).unwrap_or(chrono::Duration::MAX);
    if now - session.last_seen_at >= idle || now - session.created_at >= lifetime {
        state.store.delete_session(&digest).await?;
        return Ok(None);
    }
    if now - session.last_seen_at >= TOUCH_EVERY {
        state.store.touch_session(&digest, now).await?;
    }
    let principal = Principal {
        user: session.user,
        credential: Credential::Session {
            digest: digest.clone(),
        },
    };
    // Cached no longer than the session lives.
    let cached_for = chrono::Duration::from_std(CREDENTIAL_CACHE_TTL).unwrap_or_default();
    if now - session.created_at + cached_for < lifetime {
        auth.verified.put(digest, principal.clone());
    }
    Ok(Some(principal))
}

/// The access rule in front of every route (docs/security.md).
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let public = is_public(&method, &path);
    if !public && !is_protected(&path) {
        // The UI's static files.
        return next.run(request).await;
    }
    let principal = match identify(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if let Some(principal) = &principal {
        request.extensions_mut().insert(principal.clone());
    }
    if public {
        return next.run(request).await;
    }
    let Some(principal) = principal else {
        return ApiError::Unauthorized("Sign in or send an API token (Authorization: Bearer …)")
            .into_response();
    };
    if !is_read(&method) {
        if principal.is_read_only_token() {
            return ApiError::Forbidden("This API token is read-only").into_response();
        }
        if principal.user.role != Role::Admin && !is_self_service(&method, &path) {
            return ApiError::Forbidden("Viewers can look but not change anything").into_response();
        }
        if matches!(principal.credential, Credential::Session { .. })
            && !same_origin(request.headers())
        {
            return ApiError::Forbidden(
                "Cross-site request refused: the Origin header does not match this server",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Removes sessions past their idle or absolute expiry, hourly.
pub async fn sweep_sessions(store: plantops_store::DynStore, settings: AuthSettings) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let now = Utc::now();
        let idle_before =
            now - chrono::Duration::from_std(settings.session_idle).unwrap_or_default();
        let created_before =
            now - chrono::Duration::from_std(settings.session_lifetime).unwrap_or_default();
        match store
            .delete_expired_sessions(idle_before, created_before)
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired sessions removed"),
            Err(error) => tracing::warn!(%error, "removing expired sessions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn same_origin_needs_a_matching_origin_or_referer() {
        assert!(same_origin(&headers(&[
            ("host", "plants.lan:8000"),
            ("origin", "http://plants.lan:8000")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "plants.lan"),
            ("referer", "https://plants.lan/devices?x=1")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "plants.lan:8000"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "plants.lan:8000"),
            ("origin", "http://plants.lan:9000")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "plants.lan:8000"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[("host", "plants.lan:8000")])));
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let peer = Some("10.0.0.2:5555".parse().unwrap());
        let forwarded = headers(&[("x-forwarded-for", "1.2.3.4, 192.168.1.7")]);
        assert_eq!(
            client_address(&forwarded, peer, false).to_string(),
            "10.0.0.2"
        );
        assert_eq!(
            client_address(&forwarded, peer, true).to_string(),
            "192.168.1.7"
        );
        assert_eq!(
            client_address(&HeaderMap::new(), peer, true).to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn only_the_listed_routes_are_public() {
        assert!(is_public(&Method::GET, "/api/health"));
        assert!(is_public(&Method::HEAD, "/api/ready"));
        assert!(!is_public(&Method::POST, "/api/health"));
        assert!(!is_public(&Method::GET, "/api/plants"));
        assert!(is_protected("/metrics"));
        assert!(is_protected("/api/anything-new"));
        assert!(!is_protected("/devices"));
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_https() {
        let auth = Auth::new(AuthSettings::default());
        let cookie = auth.session_cookie("pos_x".into(), true);
        for part in [
            "plantops_session=pos_x",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!auth
            .session_cookie("pos_x".into(), false)
            .contains("Secure"));
        assert!(auth.expired_cookie(false).contains("Max-Age=0"));
    }
}
