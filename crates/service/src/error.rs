//! Every refusal and failure the request path can end in, in domain terms: no HTTP status here.
//! Each surface maps these to its own wire (the gateway's error table); the stable
//! [`Error::code`] is the same everywhere, in answers and in audit records.

use enclave_engine::EngineError;

/// Why a call was refused or failed, whichever caller made it. Messages are sentences about the
/// request, never internals; [`Error::code`] is the stable code clients, audit records and
/// every surface's error table key on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no API key was given: send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key `{0}` has been revoked")]
    RevokedKey(String),
    #[error("the client certificate is valid but maps to no user: {0}")]
    UnmappedCertificate(String),
    #[error("the user `{0}` has been disabled")]
    DisabledUser(String),
    #[error("the token is not accepted: {0}")]
    InvalidToken(String),
    /// A session cookie that names no live session: logged out, timed out, or never made.
    #[error("the session has ended ({0}): sign in again at /login")]
    SessionEnded(String),
    /// A browser sign-in that could not complete; the reason says which step refused it.
    #[error("the sign-in did not complete: {0}")]
    SignInFailed(String),
    #[error("browser sign-in is not configured: no `[[identity.issuers]]` has a `client_id`")]
    SignInNotConfigured,
    /// A browser's credential (session cookie or client certificate) on a request that changes
    /// something, sent from another site or without the page's anti-forgery token.
    #[error("{0}")]
    CsrfRefused(String),
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
    /// The shared quota ledger cannot be read: nothing is admitted that could not be counted.
    #[error(
        "the quota ledger cannot be reached, so the call cannot be counted and is not served; retry when `GET /readyz` answers 200"
    )]
    QuotaUnavailable,
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
    /// A request names an MCP server no administrator registered.
    #[error("{0}")]
    UnknownToolServer(String),
    /// A registered MCP server this tenant or key may not use.
    #[error("{0}")]
    ToolNotAllowed(String),
    /// A request carrying images for a model no deployment of which reads them.
    #[error("{0}")]
    ImagesNotSupported(String),
    /// An MCP server could not be started, reached or listed; `code` says which.
    #[error("{message}")]
    ToolServerFailed { code: &'static str, message: String },
}

impl Error {
    /// The stable code. Exhaustive: a new variant does not compile without one.
    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            MissingKey => "missing_api_key",
            InvalidKey => "invalid_api_key",
            RevokedKey(_) => "revoked_api_key",
            UnmappedCertificate(_) => "certificate_not_mapped",
            DisabledUser(_) => "user_disabled",
            InvalidToken(_) => "invalid_token",
            SessionEnded(_) => "session_ended",
            SignInFailed(_) => "sign_in_failed",
            SignInNotConfigured => "sign_in_not_configured",
            CsrfRefused(_) => "csrf_refused",
            ModelNotFound(_) => "model_not_found",
            WrongModelKind { .. } => "wrong_model_kind",
            InvalidJson(_) => "invalid_json",
            InvalidParam { .. } => "invalid_value",
            UnsupportedParam { .. } => "unsupported_parameter",
            BodyTooLarge(_) => "request_too_large",
            ContextLength(_) => "context_length_exceeded",
            Unprocessable(_) => "unprocessable_input",
            NoRoute(_) => "unknown_route",
            MethodNotAllowed => "method_not_allowed",
            InvalidLabel { .. } => "invalid_label",
            UnrecognizedMarking(_) => "unrecognized_marking",
            UnrecognizedMarkingInDocument(_) => "unrecognized_marking",
            InvalidClearance(_) => "invalid_clearance",
            LabelExceedsClearance(_) => "label_exceeds_clearance",
            ForbiddenByPolicy(_) => "forbidden_by_policy",
            NoAccreditedDeployment(_) => "no_accredited_deployment",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            UpstreamFailed(_) => "upstream_error",
            UpstreamRejected { .. } => "upstream_rejected",
            QuotaExceeded { code, .. } => code,
            ModelLoading(_) => "model_loading",
            Overloaded(_) => "engine_overloaded",
            AuditUnavailable => "audit_unavailable",
            QuotaUnavailable => "quota_unavailable",
            EngineUnavailable | ModelUnavailable(_) => "model_unavailable",
            Internal => "internal_error",
            NotFound(_) => "not_found",
            Conflict(_) => "already_exists",
            UnreadableDocument(_) => "unreadable_document",
            LabelRequired(_) => "label_required",
            LabelExceedsMaximum(_) => "label_exceeds_maximum",
            KnowledgeBasesDisabled => "knowledge_bases_disabled",
            ImagesNotSupported(_) => "images_not_supported",
            UnknownToolServer(_) => "unknown_mcp_server",
            ToolNotAllowed(_) => "tool_not_allowed",
            ToolServerFailed { code, .. } => code,
        }
    }

    /// The request field the error is about, where there is one.
    pub fn param(&self) -> Option<String> {
        match self {
            Error::InvalidParam { param, .. }
            | Error::UnsupportedParam { param, .. }
            | Error::InvalidLabel { param, .. } => Some(param.clone()),
            Error::ModelNotFound(_) | Error::WrongModelKind { .. } => Some("model".into()),
            Error::ContextLength(_) => Some("messages".into()),
            _ => None,
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidParam {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::UnsupportedParam {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::ContextOverflow { .. } => Error::ContextLength(e.to_string()),
            EngineError::InvalidToken { .. } => Error::Unprocessable(e.to_string()),
            EngineError::Template(msg) => Error::invalid(
                "messages",
                format!("the chat template rejected the messages: {msg}"),
            ),
            EngineError::Overloaded { .. } => Error::Overloaded(e.to_string()),
            EngineError::Stopped => Error::EngineUnavailable,
            EngineError::Unavailable(why) => Error::ModelUnavailable(why),
            other => {
                tracing::error!(error = %other, "engine failure");
                Error::Internal
            }
        }
    }
}
