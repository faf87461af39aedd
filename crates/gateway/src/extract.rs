//! Extractors that turn any rejection into an OpenAI-shaped error, so a malformed body gets the same
//! `{"error": {...}}` a client's SDK knows how to read.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error};

/// A JSON body, parsed with the failing field's path in the error.
pub struct OpenAiJson<T>(pub T);

impl<T, S> FromRequest<S> for OpenAiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::BodyTooLarge(crate::MAX_BODY_BYTES)
            } else {
                Error::InvalidJson(rejection.body_text())
            }
        })?;
        parse(&bytes).map(OpenAiJson)
    }
}

/// Parses a body, naming the parameter that failed.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson("the body is empty".into()).into());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::InvalidJson(inner.to_string())
        } else if path.is_empty() || path == "." {
            Error::invalid(
                "body",
                format!("the request body is not a valid request: {inner}"),
            )
        } else {
            Error::invalid(path.clone(), format!("`{path}` is invalid: {inner}"))
        }
        .into()
    })
}
