//! The web UI: the files `npm run build` writes to `frontend/dist`, embedded
//! in release builds (read from disk in debug builds), served with the SPA
//! fallback to `index.html`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "../../frontend/dist"]
#[allow_missing = true]
struct Assets;

/// Vite names built assets by content hash: they never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html` names the current assets: always revalidate it.
const REVALIDATE: &str = "no-cache";

const NOT_BUILT: &str =
    "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>PlantOps</title>\
<body style=\"font-family:system-ui;max-width:40rem;margin:3rem auto;padding:0 1rem\">\
<h1>PlantOps is running</h1><p>The web UI was not built into this binary. Build it with \
<code>make ui</code> (or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>) and \
rebuild the server, or use the API at <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>";

fn file(path: &str, cache: &'static str) -> Option<Response> {
    let asset = Assets::get(path)?;
    let mime = asset.metadata.mimetype().to_string();
    let mut response = Response::new(Body::from(asset.data.into_owned()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

/// Everything outside `/api` and `/metrics`.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return ApiError::NotFound("Not found").into_response();
    }
    if !path.is_empty() && path != "index.html" {
        let cache = if path.starts_with("assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        if let Some(response) = file(path, cache) {
            return response;
        }
        // A missing file with an extension is a 404; anything else is a
        // route of the single-page app.
        if path
            .rsplit('/')
            .next()
            .is_some_and(|name| name.contains('.'))
        {
            return (StatusCode::NOT_FOUND, "Not found").into_response();
        }
    }
    match file("index.html", REVALIDATE) {
        Some(response) => response,
        None => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, REVALIDATE),
            ],
            NOT_BUILT,
        )
            .into_response(),
    }
}
