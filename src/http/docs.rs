//! The API's own description: `/openapi.json` (OpenAPI 3.1, generated from the handlers and
//! their types by `utoipa`, so it follows the code) and `/docs`, Swagger UI served from the
//! binary (its files are vendored in the crate; nothing is fetched, and the validator badge
//! that would call out is turned off).

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// The document's frame: title, description, tags and the access scheme; the operations come
/// from the routers that serve them.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sensor-etl",
        description = "Push sensor readings (CSV, JSON, NDJSON, sensor.community firmware bodies) \
                       and read what was loaded: sensors, latest values, readings, windowed \
                       statistics, the ledger of deliveries. Times are RFC 3339 in UTC; ranges are \
                       half-open [start, end). With tokens configured, send `Authorization: \
                       Bearer <token>` (or Basic with the token as password); with none, only \
                       loopback clients are answered."
    ),
    tags(
        (name = "ingest", description = "Deliveries over HTTP: answered after the commit"),
        (name = "read", description = "What was loaded; needs the `read` scope"),
    ),
    modifiers(&TokenScheme)
)]
pub struct ApiDoc;

/// Declares the `token` security scheme the operations name.
struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token of [[http.tokens]] (Basic with the token as password \
                         works too)",
                    ))
                    .build(),
            ),
        );
    }
}

/// `/openapi.json` and `/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>(document: Document) -> Router<S> {
    Router::from(
        SwaggerUi::new("/docs")
            .url("/openapi.json", document)
            .config(Config::from("/openapi.json").validator_url("none")),
    )
}
