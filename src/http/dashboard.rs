//! The dashboard at `/`: one HTML page, its script and style, and the vendored chart library
//! (uPlot, MIT), all compiled into the binary: it works with no internet and no build step.
//! The page reads only the read API (`/v1/summary`, `/v1/files`, `/v1/sensors`,
//! `/v1/series`) and refreshes itself; with tokens configured it asks for one and sends it
//! as a Bearer token. The files themselves hold no data and are served to anyone.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const UPLOT_SCRIPT: &str = include_str!("dashboard/vendor/uPlot.iife.min.js");
const UPLOT_STYLE: &str = include_str!("dashboard/vendor/uPlot.min.css");

/// The dashboard's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/assets/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/assets/dashboard.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route(
            "/assets/uPlot.iife.min.js",
            get(|| asset("text/javascript; charset=utf-8", UPLOT_SCRIPT)),
        )
        .route(
            "/assets/uPlot.min.css",
            get(|| asset("text/css; charset=utf-8", UPLOT_STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
