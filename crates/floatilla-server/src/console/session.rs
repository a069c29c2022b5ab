//! Console logins: the session cookie, its expiry, CSRF tokens and login throttling.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use floatilla_domain::accounts::{Actor, User, UserStatus, normalized_email};
use floatilla_store::ConsoleSession;
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use subtle::ConstantTimeEq;

use crate::api::auth::Caller;
use crate::error::Error;
use crate::server::RemoteAddr;
use crate::state::AppState;

/// The session cookie's name. The `__Host-` prefix makes browsers accept it only when Secure,
/// for path `/` and for this host alone (the console is served over TLS only).
pub const SESSION_COOKIE: &str = "__Host-floatilla_session";

/// How long after its last use a session is marked used again: one write a minute, not one
/// per request.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// A logged-in person on a console route.
#[derive(Debug, Clone)]
pub struct Operator {
    pub caller: Caller,
    pub user: User,
    pub session: ConsoleSession,
}

impl Operator {
    /// Refuses a state-changing form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Error> {
        let expected = self.session.csrf_token.as_bytes();
        if bool::from(expected.ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                code: "invalid_csrf_token",
                message: "the form is out of date or was not sent by this console: reload the page and try again",
            })
        }
    }
}

/// Where a console route sends someone who is not logged in.
#[derive(Debug)]
pub struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

/// The value of the cookie `name` a request carries, if any.
fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

fn session_secret(parts: &Parts) -> Option<String> {
    cookie_value(&parts.headers, SESSION_COOKIE)
}

/// The login form's token lives in this cookie between showing the form and posting it, so a
/// page elsewhere cannot log a browser into an account of its choosing (login CSRF): it can
/// neither read the cookie nor, `SameSite=Strict`, have the browser send it along.
pub const LOGIN_COOKIE: &str = "__Host-floatilla_login";

/// How long a login form may stay open before it is posted.
const LOGIN_FORM_LIFETIME: cookie::time::Duration = cookie::time::Duration::hours(1);

/// A new login form token and the `Set-Cookie` value that holds it.
pub fn login_form_token() -> (String, String) {
    let (token, _) = crate::accounts::new_secret();
    let cookie = host_cookie(LOGIN_COOKIE, token.clone())
        .max_age(LOGIN_FORM_LIFETIME)
        .build()
        .to_string();
    (token, cookie)
}

/// Whether a posted login form carries the token its browser's login cookie holds.
pub fn login_form_is_genuine(headers: &http::HeaderMap, presented: &str) -> bool {
    cookie_value(headers, LOGIN_COOKIE).is_some_and(|expected| {
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// The stored hash of the session cookie a request carries, if any.
pub fn session_hash(parts: &Parts) -> Option<String> {
    session_secret(parts).and_then(|secret| crate::accounts::hash_of_secret(&secret))
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let hash = session_hash(parts).ok_or_else(|| LoginRequired.into_response())?;
        let (session, user) = state
            .store
            .console_session(&hash)
            .await
            .map_err(|e| Error::from(e).into_response())?
            .ok_or_else(|| LoginRequired.into_response())?;
        let now = state.clock.now();
        let lifetime = state.config.session_lifetime;
        if !lifetime.is_live(session.created_at, session.last_used_at, now)
            || user.status != UserStatus::Active
        {
            let _ = state.store.delete_console_session(&hash).await;
            return Err(LoginRequired.into_response());
        }
        if now - session.last_used_at >= TOUCH_EVERY {
            state
                .store
                .touch_console_session(&hash, now)
                .await
                .map_err(|e| Error::from(e).into_response())?;
        }
        let caller = Caller::of_user(&user);
        crate::audit::identified(parts, &caller);
        caller
            .check_not_suspended(state)
            .map_err(IntoResponse::into_response)?;
        Ok(Operator {
            caller,
            user,
            session,
        })
    }
}

/// A console cookie: the `__Host-` attributes (Secure, path `/`), out of scripts' reach, and
/// sent only with requests from the console's own pages.
fn host_cookie(name: &'static str, value: String) -> cookie::CookieBuilder<'static> {
    Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
}

/// The `Set-Cookie` value that starts a session in the browser.
pub fn session_cookie(secret: &str) -> String {
    host_cookie(SESSION_COOKIE, secret.to_owned())
        .build()
        .to_string()
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn cleared_cookie() -> [(http::HeaderName, String); 1] {
    let cookie = host_cookie(SESSION_COOKIE, String::new())
        .max_age(cookie::time::Duration::ZERO)
        .build();
    [(SET_COOKIE, cookie.to_string())]
}

/// Why a login did not succeed, as the login page says it (never which part was wrong).
#[derive(Debug)]
pub enum LoginRefusal {
    Invalid,
    Throttled {
        minutes: i64,
    },
    /// The server could not check the login (the database did not answer, ...).
    Failed(Error),
}

/// Checks an e-mail address and password, throttling failures per address and account;
/// records the attempt in the audit log. Answers the account and its new session's secret.
pub async fn log_in(
    state: &AppState,
    remote: Option<RemoteAddr>,
    email: &str,
    password: String,
) -> Result<(User, String), LoginRefusal> {
    let email = normalized_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    let address = remote.map(|r| r.0.ip().to_string());
    let keys_owned = [address.clone().unwrap_or_default(), email.clone()];
    let keys = [keys_owned[0].as_str(), keys_owned[1].as_str()];
    let now = state.clock.now();
    let refused_until = state
        .login_throttle
        .lock()
        .expect("login throttle")
        .refused_until(&keys, now);
    let audit = |status: u16, error: Option<&'static str>, user: Option<&User>| {
        let actor = match user {
            Some(user) => Actor::User {
                id: user.id,
                email: user.email.clone(),
            },
            None => Actor::Anonymous {
                claimed: email.clone(),
            },
        };
        let tenant = user.and_then(|u| u.tenant_id);
        let address = address.clone();
        async move {
            crate::audit::record(state, tenant, actor, "POST /login", address, status, error).await;
        }
    };
    if let Some(until) = refused_until {
        audit(429, Some("rate_limited"), None).await;
        return Err(LoginRefusal::Throttled {
            minutes: (until - now).num_minutes() + 1,
        });
    }
    let user = state
        .store
        .user_by_email(&email)
        .await
        .map_err(|e| LoginRefusal::Failed(e.into()))?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = crate::accounts::password_matches(stored, password).await;
    let user = match user {
        Some(user) if matches && user.status == UserStatus::Active => user,
        other => {
            state
                .login_throttle
                .lock()
                .expect("login throttle")
                .failed(&keys, now);
            // A known account is named in its own tenant's log; guesses at unknown ones in
            // the installation's.
            audit(401, Some("invalid_login"), other.as_ref()).await;
            return Err(LoginRefusal::Invalid);
        }
    };
    state
        .login_throttle
        .lock()
        .expect("login throttle")
        .succeeded(&keys);
    let (secret, _) = crate::accounts::start_session(state.store.as_ref(), &user, now)
        .await
        .map_err(LoginRefusal::Failed)?;
    let mut logged_in = user.clone();
    logged_in.last_login_at = Some(now);
    if let Err(error) = state.store.update_user(&logged_in).await {
        tracing::warn!(%error, "cannot record the login time");
    }
    audit(200, None, Some(&logged_in)).await;
    Ok((logged_in, secret))
}
