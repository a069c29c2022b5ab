//! The console as a browser speaks to it over HTTP: accounts, logins and their cookies, pages,
//! and the forms' CSRF tokens.

use std::sync::Arc;

use floatilla_domain::{Clock, Role, TenantId};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use super::TestServer;

pub const PASSWORD: &str = "a long enough password";

/// A browser-like client: no redirects followed, cookies passed by hand.
pub fn browser(server: &TestServer) -> reqwest::Client {
    let tls = server.trust().client_config(Arc::default()).unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A console account of the on-premises tenant with [`PASSWORD`].
pub async fn add_user(server: &TestServer, email: &str, role: Role) {
    let tenant = server.running().installation().on_prem_tenant;
    add_user_in(server, email, role, tenant).await;
}

/// A console account of `tenant` (none: the provider's) with [`PASSWORD`].
pub async fn add_user_in(server: &TestServer, email: &str, role: Role, tenant: Option<TenantId>) {
    floatilla_server::accounts::create_user(
        server.store.as_ref(),
        server.clock.now(),
        email,
        role,
        tenant,
        PASSWORD.to_owned(),
    )
    .await
    .unwrap();
}

/// Opens the login page as a browser does: answers its form token and the login cookie that
/// goes with it (`name=value`).
pub async fn login_form(client: &reqwest::Client, server: &TestServer) -> (String, String) {
    let response = client
        .get(format!("{}/login", server.url))
        .send()
        .await
        .unwrap();
    let cookie = cookie_pair(response.headers()[SET_COOKIE].to_str().unwrap());
    (csrf_of(&response.text().await.unwrap()), cookie)
}

/// Opens the login page and posts its form; answers the status and the session's
/// `Set-Cookie` header, if any.
pub async fn log_in(
    client: &reqwest::Client,
    server: &TestServer,
    email: &str,
    password: &str,
) -> (u16, Option<String>) {
    let (csrf, login_cookie) = login_form(client, server).await;
    let response = client
        .post(format!("{}/login", server.url))
        .header(COOKIE, login_cookie)
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-floatilla_session="));
    (response.status().as_u16(), cookie)
}

/// `name=value` of a `Set-Cookie` header.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

pub async fn page(
    client: &reqwest::Client,
    server: &TestServer,
    cookie: &str,
    path: &str,
) -> (u16, String) {
    let response = client
        .get(format!("{}{path}", server.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    (status, location.unwrap_or(body))
}

/// The CSRF token the page's forms carry.
pub fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

/// Logs in `email` and answers the session cookie and the CSRF token of its forms.
pub async fn logged_in(
    client: &reqwest::Client,
    server: &TestServer,
    email: &str,
) -> (String, String) {
    let (status, set_cookie) = log_in(client, server, email, PASSWORD).await;
    assert_eq!(status, 303);
    let cookie = cookie_pair(&set_cookie.unwrap());
    // The provider's console starts elsewhere.
    let (status, mut home) = page(client, server, &cookie, "/").await;
    if status == 303 {
        home = page(client, server, &cookie, &home).await.1;
    }
    (cookie.clone(), csrf_of(&home))
}

/// Where a console form's answer leads: its redirect, or the page it answers with.
async fn outcome(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    match response.headers().get(LOCATION) {
        Some(location) => (status, location.to_str().unwrap().to_owned()),
        None => (status, response.text().await.unwrap()),
    }
}

/// Posts a form as the logged-in browser (the CSRF token is one of `fields`).
pub async fn submit(
    client: &reqwest::Client,
    server: &TestServer,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let response = client
        .post(format!("{}{path}", server.url))
        .header(COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .unwrap();
    outcome(response).await
}

/// Posts a form with a file (`multipart/form-data`) as the logged-in browser: `fields` first,
/// in order, then the file as `file`.
pub async fn submit_file(
    client: &reqwest::Client,
    server: &TestServer,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
    file: Vec<u8>,
) -> (u16, String) {
    let part = reqwest::multipart::Part::bytes(file).file_name("upload.bin");
    let form = multipart_form(fields).part("file", part);
    submit_multipart(client, server, cookie, path, form).await
}

/// The text fields of a `multipart/form-data` form, in order.
pub fn multipart_form(fields: &[(&str, &str)]) -> reqwest::multipart::Form {
    fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |form, (name, value)| {
            form.text(name.to_string(), value.to_string())
        })
}

/// Posts a `multipart/form-data` form as the logged-in browser.
pub async fn submit_multipart(
    client: &reqwest::Client,
    server: &TestServer,
    cookie: &str,
    path: &str,
    form: reqwest::multipart::Form,
) -> (u16, String) {
    let response = client
        .post(format!("{}{path}", server.url))
        .header(COOKIE, cookie)
        .multipart(form)
        .send()
        .await
        .unwrap();
    outcome(response).await
}
