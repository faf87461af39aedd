//! The gateway's error table: every [`Error`] of the request path, and the few the HTTP layer
//! adds, to its HTTP status and OpenAI `type`, and the one place that builds the wire body.
//! (`/v1/messages` reshapes the body into Anthropic's; see `anthropic::error_shape`.)

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use enclave_service::Error;

/// An [`Error`] on its way to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
}

/// HTTP status and OpenAI `type`. Exhaustive: a new variant does not compile without a row.
pub fn status(error: &Error) -> (StatusCode, &'static str) {
    use Error::*;
    const INVALID: &str = "invalid_request_error";
    const DENIED: &str = "permission_error";
    match error {
        MissingKey => (StatusCode::UNAUTHORIZED, INVALID),
        InvalidKey => (StatusCode::UNAUTHORIZED, INVALID),
        RevokedKey(_) => (StatusCode::UNAUTHORIZED, INVALID),
        UnmappedCertificate(_) => (StatusCode::UNAUTHORIZED, INVALID),
        DisabledUser(_) => (StatusCode::UNAUTHORIZED, INVALID),
        InvalidToken(_) => (StatusCode::UNAUTHORIZED, INVALID),
        SessionEnded(_) => (StatusCode::UNAUTHORIZED, INVALID),
        SignInFailed(_) => (StatusCode::UNAUTHORIZED, INVALID),
        SignInNotConfigured => (StatusCode::NOT_FOUND, INVALID),
        CsrfRefused(_) => (StatusCode::FORBIDDEN, DENIED),
        ModelNotFound(_) => (StatusCode::NOT_FOUND, INVALID),
        WrongModelKind { .. } => (StatusCode::BAD_REQUEST, INVALID),
        InvalidJson(_) => (StatusCode::BAD_REQUEST, INVALID),
        InvalidParam { .. } => (StatusCode::BAD_REQUEST, INVALID),
        UnsupportedParam { .. } => (StatusCode::BAD_REQUEST, INVALID),
        BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID),
        ContextLength(_) => (StatusCode::BAD_REQUEST, INVALID),
        Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, INVALID),
        NoRoute(_) => (StatusCode::NOT_FOUND, INVALID),
        MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, INVALID),
        InvalidLabel { .. } => (StatusCode::BAD_REQUEST, INVALID),
        UnrecognizedMarking(_) => (StatusCode::BAD_REQUEST, INVALID),
        UnrecognizedMarkingInDocument(_) => (StatusCode::UNPROCESSABLE_ENTITY, INVALID),
        InvalidClearance(_) => (StatusCode::FORBIDDEN, DENIED),
        LabelExceedsClearance(_) => (StatusCode::FORBIDDEN, DENIED),
        ForbiddenByPolicy(_) => (StatusCode::FORBIDDEN, DENIED),
        NoAccreditedDeployment(_) => (StatusCode::FORBIDDEN, DENIED),
        UpstreamUnavailable { .. } => (StatusCode::BAD_GATEWAY, "server_error"),
        UpstreamFailed(_) => (StatusCode::BAD_GATEWAY, "server_error"),
        UpstreamRejected { status, .. } => (
            StatusCode::from_u16(*status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::BAD_REQUEST),
            INVALID,
        ),
        QuotaExceeded { code, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            if *code == "insufficient_quota" {
                "insufficient_quota"
            } else {
                "rate_limit_error"
            },
        ),
        ModelLoading(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        AuditUnavailable | QuotaUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        EngineUnavailable | ModelUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "server_error")
        }
        Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        NotFound(_) => (StatusCode::NOT_FOUND, INVALID),
        Conflict(_) => (StatusCode::CONFLICT, INVALID),
        UnreadableDocument(_) => (StatusCode::UNPROCESSABLE_ENTITY, INVALID),
        LabelRequired(_) => (StatusCode::BAD_REQUEST, INVALID),
        LabelExceedsMaximum(_) => (StatusCode::FORBIDDEN, DENIED),
        KnowledgeBasesDisabled => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        ImagesNotSupported(_) => (StatusCode::BAD_REQUEST, INVALID),
        UnknownToolServer(_) => (StatusCode::BAD_REQUEST, INVALID),
        ToolNotAllowed(_) => (StatusCode::FORBIDDEN, DENIED),
        ToolServerFailed { .. } => (StatusCode::BAD_GATEWAY, "server_error"),
    }
}

/// The wire body of `error`.
pub fn body(error: &Error) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            message: error.to_string(),
            kind: status(error).1,
            param: error.param(),
            code: error.code(),
        },
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        status(&self.0).0
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    pub fn body(&self) -> ErrorBody {
        body(&self.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = status(&error).0;
        let code = error.code();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            metrics::counter!("enclave_denials_total", "code" => code).increment(1);
        }
        let mut response = (status, axum::Json(body(&error))).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        let retry_after = match &error {
            Error::Overloaded(_) => Some(1),
            Error::QuotaExceeded { retry_after, .. }
            | Error::UpstreamUnavailable {
                retry_after: Some(retry_after),
                ..
            } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        // A spent monthly budget does not come back within an SDK's retry loop.
        if matches!(
            error,
            Error::QuotaExceeded {
                code: "insufficient_quota",
                ..
            }
        ) {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        // The `openai` SDK retries 5xx twice unless told not to; only a loading model is worth it.
        if status.is_server_error()
            && !matches!(
                error,
                Error::ModelLoading(_) | Error::ModelUnavailable(_) | Error::EngineUnavailable
            )
        {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// The stable error code of an error response, for the audit step.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);
