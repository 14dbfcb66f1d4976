//! Request bodies sent compressed (`Content-Encoding`), decoded as they stream in, before the
//! body limit counts them: a compression bomb ends at `max_body_bytes`, not in memory.
//!
//! - `gzip` (also `x-gzip`, as older clients name it) and `zstd`, in any letter case.
//! - Every member of a multi-member gzip body and every frame of a multi-frame zstd body is
//!   read (`cat a.gz b.gz` is one valid gzip stream: its bytes are those of both files).
//! - Any other encoding is answered 415 with a JSON error body, as every error is.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::http::error::ApiError;

/// The encodings taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The encoding a `Content-Encoding` value names, if one is taken.
    fn named(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// Middleware: decodes a compressed request body (see the module header).
pub async fn decode_request_body(request: Request, next: Next) -> Response {
    let named = match request.headers().get(header::CONTENT_ENCODING) {
        None => Some(Encoding::Identity),
        Some(value) => value.to_str().ok().and_then(Encoding::named),
    };
    let encoding = match named {
        Some(encoding) => encoding,
        None => {
            let given = request
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding `{given}` is not taken: send gzip, zstd or none"),
            )
            .into_response();
        }
    };
    if encoding == Encoding::Identity {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let compressed = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let decoded = if encoding == Encoding::Gzip {
        let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(compressed);
        decoder.multiple_members(true);
        Body::from_stream(ReaderStream::new(decoder))
    } else {
        let mut decoder = async_compression::tokio::bufread::ZstdDecoder::new(compressed);
        decoder.multiple_members(true);
        Body::from_stream(ReaderStream::new(decoder))
    };
    next.run(Request::from_parts(parts, decoded)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_named_in_any_case_and_x_gzip_is_gzip() {
        assert_eq!(Encoding::named("GZIP"), Some(Encoding::Gzip));
        assert_eq!(Encoding::named("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::named(" Zstd "), Some(Encoding::Zstd));
        assert_eq!(Encoding::named("identity"), Some(Encoding::Identity));
        assert_eq!(Encoding::named("br"), None);
    }
}
