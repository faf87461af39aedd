//! The one table that maps every error the API can return to its HTTP status, OpenAI `type` and
//! stable `code`, and the one place that builds the wire body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use enclave_engine::EngineError;

/// An error a client sees. Messages are sentences about the request, never internals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("no API key was given: send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key `{0}` has been revoked")]
    RevokedKey(String),
    #[error("the model `{0}` does not exist: `GET /v1/models` lists the models you can use")]
    ModelNotFound(String),
    #[error("the model `{model}` is {actual} model and cannot serve {route}")]
    WrongModelKind {
        model: String,
        actual: &'static str,
        route: &'static str,
    },
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidParam { param: String, message: String },
    #[error("`{param}` is not supported yet: {message}")]
    UnsupportedParam { param: String, message: String },
    #[error("the request body is larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("{0}")]
    ContextLength(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("no route for `{0}`")]
    NoRoute(String),
    #[error("this route does not accept that HTTP method")]
    MethodNotAllowed,
    #[error("{message}")]
    InvalidLabel { param: String, message: String },
    /// A marking names a control the scheme in force does not know: refused, never ignored.
    #[error("{0}")]
    UnrecognizedMarking(String),
    /// The same, in an uploaded document: the file is refused whole.
    #[error("{0}")]
    UnrecognizedMarkingInDocument(String),
    #[error("{0}")]
    InvalidClearance(String),
    #[error("{0}")]
    LabelExceedsClearance(String),
    #[error("{0}")]
    ForbiddenByPolicy(String),
    #[error("{0}")]
    NoAccreditedDeployment(String),
    #[error("{message}")]
    UpstreamUnavailable {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{0}")]
    UpstreamFailed(String),
    /// The upstream answered a 4xx other than 429: passed on with its status.
    #[error("{message}")]
    UpstreamRejected { status: u16, message: String },
    /// A quota refused the request; `code` names the kind of limit.
    #[error("{message}")]
    QuotaExceeded {
        code: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("the model `{0}` is still loading: retry when `GET /readyz` answers 200")]
    ModelLoading(String),
    #[error("the model is busy: {0}; retry after a second")]
    Overloaded(String),
    #[error(
        "the audit log cannot record this call, so it is not served; retry when `GET /readyz` answers 200"
    )]
    AuditUnavailable,
    /// The embedded engine ended before answering (its process died); it is being restarted.
    #[error(
        "the model's engine stopped before answering; it is being restarted: retry when `GET /readyz` answers 200"
    )]
    EngineUnavailable,
    /// The embedded engine is down (crashed or restarting); the reason says why.
    #[error("the model's engine is unavailable: {0}; retry when `GET /readyz` answers 200")]
    ModelUnavailable(String),
    #[error("an internal error occurred; it has been logged")]
    Internal,
    /// A knowledge base, document or other named thing that does not exist for this tenant.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    RoleForbidden(String),
    /// A document that cannot be read (format, encoding, corrupt file).
    #[error("{0}")]
    UnreadableDocument(String),
    /// A document with no marking and no label given.
    #[error("{0}")]
    LabelRequired(String),
    /// A document labelled above what its knowledge base may hold.
    #[error("{0}")]
    LabelExceedsMaximum(String),
    #[error("knowledge bases are not enabled on this server")]
    KnowledgeBasesDisabled,
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
}

impl ApiError {
    /// Status, OpenAI `type`, stable `code`. Exhaustive: a new variant does not compile without a row.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        const INVALID: &str = "invalid_request_error";
        const DENIED: &str = "permission_error";
        match self {
            MissingKey => (StatusCode::UNAUTHORIZED, INVALID, "missing_api_key"),
            InvalidKey => (StatusCode::UNAUTHORIZED, INVALID, "invalid_api_key"),
            RevokedKey(_) => (StatusCode::UNAUTHORIZED, INVALID, "revoked_api_key"),
            ModelNotFound(_) => (StatusCode::NOT_FOUND, INVALID, "model_not_found"),
            WrongModelKind { .. } => (StatusCode::BAD_REQUEST, INVALID, "wrong_model_kind"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_json"),
            InvalidParam { .. } => (StatusCode::BAD_REQUEST, INVALID, "invalid_value"),
            UnsupportedParam { .. } => (StatusCode::BAD_REQUEST, INVALID, "unsupported_parameter"),
            BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "request_too_large"),
            ContextLength(_) => (StatusCode::BAD_REQUEST, INVALID, "context_length_exceeded"),
            Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                INVALID,
                "unprocessable_input",
            ),
            NoRoute(_) => (StatusCode::NOT_FOUND, INVALID, "unknown_route"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID,
                "method_not_allowed",
            ),
            InvalidLabel { .. } => (StatusCode::BAD_REQUEST, INVALID, "invalid_label"),
            UnrecognizedMarking(_) => (StatusCode::BAD_REQUEST, INVALID, "unrecognized_marking"),
            UnrecognizedMarkingInDocument(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                INVALID,
                "unrecognized_marking",
            ),
            InvalidClearance(_) => (StatusCode::FORBIDDEN, DENIED, "invalid_clearance"),
            LabelExceedsClearance(_) => (StatusCode::FORBIDDEN, DENIED, "label_exceeds_clearance"),
            ForbiddenByPolicy(_) => (StatusCode::FORBIDDEN, DENIED, "forbidden_by_policy"),
            NoAccreditedDeployment(_) => {
                (StatusCode::FORBIDDEN, DENIED, "no_accredited_deployment")
            }
            UpstreamUnavailable { .. } => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_unavailable",
            ),
            UpstreamFailed(_) => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
            UpstreamRejected { status, .. } => (
                StatusCode::from_u16(*status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_REQUEST),
                INVALID,
                "upstream_rejected",
            ),
            QuotaExceeded { code, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                if *code == "insufficient_quota" {
                    "insufficient_quota"
                } else {
                    "rate_limit_error"
                },
                code,
            ),
            ModelLoading(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "model_loading",
            ),
            Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "engine_overloaded",
            ),
            AuditUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "audit_unavailable",
            ),
            EngineUnavailable | ModelUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "model_unavailable",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, INVALID, "not_found"),
            Conflict(_) => (StatusCode::CONFLICT, INVALID, "already_exists"),
            RoleForbidden(_) => (StatusCode::FORBIDDEN, DENIED, "forbidden_by_role"),
            UnreadableDocument(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                INVALID,
                "unreadable_document",
            ),
            LabelRequired(_) => (StatusCode::BAD_REQUEST, INVALID, "label_required"),
            LabelExceedsMaximum(_) => (StatusCode::FORBIDDEN, DENIED, "label_exceeds_maximum"),
            KnowledgeBasesDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "knowledge_bases_disabled",
            ),
        }
    }

    pub fn code(&self) -> &'static str {
        self.parts().2
    }

    pub fn param(&self) -> Option<String> {
        match self {
            ApiError::InvalidParam { param, .. }
            | ApiError::UnsupportedParam { param, .. }
            | ApiError::InvalidLabel { param, .. } => Some(param.clone()),
            ApiError::ModelNotFound(_) | ApiError::WrongModelKind { .. } => Some("model".into()),
            ApiError::ContextLength(_) => Some("messages".into()),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.parts();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param: self.param(),
                code,
            },
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidParam {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::UnsupportedParam {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, code) = self.parts();
        if status == axum::http::StatusCode::UNAUTHORIZED
            || status == axum::http::StatusCode::FORBIDDEN
        {
            metrics::counter!("enclave_denials_total", "code" => code).increment(1);
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        response
            .extensions_mut()
            .insert(crate::audit::ErrorCode(code));
        let retry_after = match &self {
            ApiError::Overloaded(_) => Some(1),
            ApiError::QuotaExceeded { retry_after, .. }
            | ApiError::UpstreamUnavailable {
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
            self,
            ApiError::QuotaExceeded {
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
                self,
                ApiError::ModelLoading(_)
                    | ApiError::ModelUnavailable(_)
                    | ApiError::EngineUnavailable
            )
        {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::ContextOverflow { .. } => ApiError::ContextLength(e.to_string()),
            EngineError::InvalidToken { .. } => ApiError::Unprocessable(e.to_string()),
            EngineError::Template(msg) => ApiError::invalid(
                "messages",
                format!("the chat template rejected the messages: {msg}"),
            ),
            EngineError::Overloaded { .. } => ApiError::Overloaded(e.to_string()),
            EngineError::Stopped => ApiError::EngineUnavailable,
            EngineError::Unavailable(why) => ApiError::ModelUnavailable(why),
            other => {
                tracing::error!(error = %other, "engine failure");
                ApiError::Internal
            }
        }
    }
}
