//! Knowledge bases over HTTP: create, add documents (JSON or multipart), status, delete, search,
//! answer with citations, and retrieval for chat completions (`metadata.knowledge_bases`).
//!
//! Every route is scoped to the caller's tenant (another tenant's knowledge base is "not
//! found"). Reading happens at a ceiling: the declared request label if any (never above the
//! clearance), else the clearance; the indexes filter by it inside their searches. An answer's
//! label is the join of the request label and every passage placed in the prompt, and routing
//! uses that label, so passages only reach deployments accredited for them.

use std::convert::Infallible;

use axum::Extension;
use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use enclave_label::Label;
use enclave_policy::{Action, Decision};
use enclave_service::answer::Step;
use enclave_service::conversation::{Conversation, Role as TurnRole, Turn};
use enclave_service::dispatch::UpstreamClock;
use enclave_service::info::mark_cited;
use enclave_service::monitor::authorize;
use enclave_service::retrieval::{
    DEFAULT_PASSAGES, Retrieved, build, ceiling, clearance, knowledge_bases, parse_label, require,
};
use enclave_service::types::{Hit, Mode, Upload};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::parse;
use crate::labels::{LABEL_HEADER, declared, header_value};

fn note_for(label: Option<&Label>, state: &AppState, reason: &str) -> CallNote {
    CallNote {
        decision: Some(Decision {
            allowed: true,
            label: label.map(|l| state.policy.scheme.banner(l)),
            reason: reason.to_string(),
            ..Decision::default()
        }),
        ..CallNote::default()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    max_label: String,
    #[serde(default)]
    default_label: Option<String>,
    /// Optional: must be the key's own tenant.
    #[serde(default)]
    tenant: Option<String>,
}

/// `POST /v1/knowledge-bases` (admins).
#[utoipa::path(post, path = "/v1/knowledge-bases", tag = "knowledge bases", request_body = CreateRequest, responses((status = 200, description = "The knowledge base", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let kbs = knowledge_bases(&state)?;
    let req: CreateRequest = parse(&body)?;
    let tenant = req.tenant.as_deref().unwrap_or(&principal.tenant_name);
    authorize(
        &state.policy,
        &principal,
        Action::CreateKnowledgeBase,
        tenant,
    )?;
    let max = parse_label(&state, "max_label", &req.max_label)?;
    let default = req
        .default_label
        .as_deref()
        .map(|d| parse_label(&state, "default_label", d))
        .transpose()?;
    let clearance = clearance(&state, &principal)?;
    let info = kbs
        .create(
            &principal.tenant_name,
            &req.name,
            &max,
            default.as_ref(),
            &clearance,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /v1/knowledge-bases`.
#[utoipa::path(get, path = "/v1/knowledge-bases", tag = "knowledge bases", responses((status = 200, description = "The tenant's knowledge bases", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let kbs = knowledge_bases(&state)?;
    require(&state, &principal, Action::ReadKnowledgeBases)?;
    let data = kbs.list(&principal.tenant_name).await?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/knowledge-bases/{kb}`: the knowledge base with document and chunk counts.
#[utoipa::path(get, path = "/v1/knowledge-bases/{kb}", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name")), responses((status = 200, description = "The knowledge base", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(kb): Path<String>,
) -> Result<Response, ApiError> {
    let kbs = knowledge_bases(&state)?;
    require(&state, &principal, Action::ReadKnowledgeBases)?;
    Ok(Json(kbs.get(&principal.tenant_name, &kb).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRequest {
    name: String,
    /// The document as text (plain, Markdown or HTML)...
    #[serde(default)]
    text: Option<String>,
    /// ...or as base64 bytes (any format).
    #[serde(default)]
    content_base64: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /v1/knowledge-bases/{kb}/documents`: JSON (one document) or multipart (one or more
/// `file` parts, an optional `label` part). Answers 202: ingestion continues in the background.
#[utoipa::path(post, path = "/v1/knowledge-bases/{kb}/documents", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name")), request_body(content((DocumentRequest = "application/json"), (Object = "multipart/form-data"))), responses((status = 200, description = "The documents, queued for indexing, or why each was refused", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(kb): Path<String>,
    request: Request,
) -> Response {
    let mut note = CallNote::default();
    let result = add_documents(&state, &principal, &kb, request, &mut note).await;
    attach(note, result)
}

async fn add_documents(
    state: &AppState,
    principal: &Principal,
    kb: &str,
    request: Request,
    note: &mut CallNote,
) -> Result<Response, ApiError> {
    let kbs = knowledge_bases(state)?;
    require(state, principal, Action::WriteKnowledgeBases)?;
    let clearance = clearance(state, principal)?;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut uploads = Vec::new();
    if multipart {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| Error::invalid("body", format!("bad multipart body: {e}")))?;
        let mut label = None;
        let mut files = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| Error::invalid("body", format!("bad multipart body: {e}")))?
        {
            match field.name() {
                Some("label") => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| Error::invalid("label", e.to_string()))?;
                    label = Some(parse_label(state, "label", text.trim())?);
                }
                Some("file") => {
                    let name = field.file_name().unwrap_or("upload").to_string();
                    let media = field.content_type().map(str::to_string);
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| Error::invalid("file", e.to_string()))?;
                    files.push((name, media, bytes.to_vec()));
                }
                Some(other) => {
                    return Err(Error::invalid(
                        other,
                        format!(
                            "unknown form field `{other}`: send `file` parts and an optional `label`"
                        ),
                    ).into());
                }
                None => {}
            }
        }
        if files.is_empty() {
            return Err(Error::invalid("file", "the form has no `file` part".to_string()).into());
        }
        for (name, media_type, bytes) in files {
            uploads.push(Upload {
                name,
                media_type,
                bytes,
                label: label.clone(),
                uploader: principal.key_id.clone(),
                clearance: clearance.clone(),
            });
        }
    } else {
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| Error::BodyTooLarge(crate::MAX_UPLOAD_BYTES))?;
        let req: DocumentRequest = parse(&body)?;
        let bytes = match (req.text, req.content_base64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| Error::invalid("content_base64", format!("not valid base64: {e}")))?,
            _ => {
                return Err(Error::invalid(
                    "text",
                    "give exactly one of `text` and `content_base64`".to_string(),
                )
                .into());
            }
        };
        let label = req
            .label
            .as_deref()
            .map(|l| parse_label(state, "label", l))
            .transpose()?;
        uploads.push(Upload {
            name: req.name,
            media_type: req.media_type,
            bytes,
            label,
            uploader: principal.key_id.clone(),
            clearance: clearance.clone(),
        });
    }
    // One document: its own status code. Several: each its own result; the rest go on when one
    // fails.
    if uploads.len() == 1 {
        let upload = uploads.pop().ok_or(Error::Internal)?;
        let doc = kbs.add(&principal.tenant_name, kb, upload).await?;
        *note = note_for(
            state.policy.scheme.parse(&doc.label).ok().as_ref(),
            state,
            "document queued",
        );
        return Ok((StatusCode::ACCEPTED, Json(doc)).into_response());
    }
    let mut data = Vec::with_capacity(uploads.len());
    let mut high: Option<Label> = None;
    for upload in uploads {
        let name = upload.name.clone();
        match kbs.add(&principal.tenant_name, kb, upload).await {
            Ok(doc) => {
                if let Ok(l) = state.policy.scheme.parse(&doc.label) {
                    high = Some(high.map_or(l.clone(), |h| h.join(&l)));
                }
                data.push(serde_json::to_value(doc).unwrap_or(Value::Null));
            }
            Err(enclave_service::types::KbError::NoKnowledgeBase(k)) => {
                return Err(ApiError::from(
                    enclave_service::types::KbError::NoKnowledgeBase(k),
                ));
            }
            Err(e) => {
                let err = ApiError::from(e);
                data.push(json!({
                    "name": name,
                    "error": err.body().error,
                    "status": err.status().as_u16(),
                }));
            }
        }
    }
    *note = note_for(high.as_ref(), state, "documents queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "object": "list", "data": data })),
    )
        .into_response())
}

/// `GET /v1/knowledge-bases/{kb}/documents`.
#[utoipa::path(get, path = "/v1/knowledge-bases/{kb}/documents", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name")), responses((status = 200, description = "Its documents and their status", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn documents(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(kb): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kbs = knowledge_bases(&state)?;
    require(&state, &principal, Action::ReadKnowledgeBases)?;
    let data = kbs.documents(&principal.tenant_name, &kb).await?;
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/knowledge-bases/{kb}/documents/{doc}`: queued, indexing, ready, or failed with the
/// reason.
#[utoipa::path(get, path = "/v1/knowledge-bases/{kb}/documents/{doc}", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name"), ("doc" = String, Path, description = "A document id")), responses((status = 200, description = "The document and its status", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn document(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((kb, doc)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kbs = knowledge_bases(&state)?;
    require(&state, &principal, Action::ReadKnowledgeBases)?;
    Ok(Json(kbs.document(&principal.tenant_name, &kb, &doc).await?).into_response())
}

/// `DELETE /v1/knowledge-bases/{kb}/documents/{doc}`: removes its text, chunks and vectors from
/// every index. Audited like every call; the record carries the document's label.
#[utoipa::path(delete, path = "/v1/knowledge-bases/{kb}/documents/{doc}", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name"), ("doc" = String, Path, description = "A document id")), responses((status = 200, description = "Deleted from every index", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((kb, doc)): Path<(String, String)>,
) -> Response {
    let result = async {
        let kbs = knowledge_bases(&state)?;
        require(&state, &principal, Action::WriteKnowledgeBases)?;
        let removed = kbs.delete(&principal.tenant_name, &kb, &doc).await?;
        let label = state.policy.scheme.parse(&removed.label).ok();
        let note = note_for(label.as_ref(), &state, "document deleted");
        Ok::<_, ApiError>((
            Json(json!({ "id": removed.id, "object": "knowledge_base.document.deleted", "deleted": true, "name": removed.name, "chunks": removed.chunks })),
            note,
        ))
    }
    .await;
    match result {
        Ok((body, note)) => attach(note, Ok(body.into_response())),
        Err(e) => attach(CallNote::default(), Err(e)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Passage<'a> {
    #[serde(flatten)]
    hit: &'a Hit,
}

fn mode(m: Option<&str>) -> Result<Mode, ApiError> {
    m.map_or(Ok(Mode::Hybrid), |m| {
        m.parse()
            .map_err(|e: String| Error::invalid("mode", e).into())
    })
}

/// `POST /v1/knowledge-bases/{kb}/search`: passages with document, page, offsets, score and
/// label; only passages the request's ceiling dominates.
#[utoipa::path(post, path = "/v1/knowledge-bases/{kb}/search", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name"), ("Enclave-Label" = Option<String>, Header, description = "Read at this label (at most the key's clearance)")), request_body = SearchRequest, responses((status = 200, description = "Passages the reader may see, best first", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(kb): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut note = CallNote::default();
    let result = async {
        let kbs = knowledge_bases(&state)?;
        require(&state, &principal, Action::ReadKnowledgeBases)?;
        let req: SearchRequest = parse(&body)?;
        let ceiling = ceiling(
            &state,
            &principal,
            declared(&headers, req.metadata.as_ref())?.as_ref(),
        )?;
        let mode = mode(req.mode.as_deref())?;
        let hits = kbs
            .search(
                &principal.tenant_name,
                &kb,
                &ceiling,
                &req.query,
                req.k.unwrap_or(10),
                mode,
            )
            .await?;
        // What was delivered sets the answer's label; the ceiling bounds it.
        let high = hits.iter().fold(None::<Label>, |acc, h| {
            Some(acc.map_or(h.parsed_label.clone(), |a| a.join(&h.parsed_label)))
        });
        note = note_for(Some(high.as_ref().unwrap_or(&ceiling)), &state, "search");
        let label = state
            .policy
            .scheme
            .banner(high.as_ref().unwrap_or(&ceiling));
        let data: Vec<Passage<'_>> = hits.iter().map(|hit| Passage { hit }).collect();
        let mut response = Json(json!({
            "object": "list",
            "data": data,
            "label": label,
            "ceiling": state.policy.scheme.banner(&ceiling),
        }))
        .into_response();
        response
            .headers_mut()
            .insert(LABEL_HEADER, header_value(&label));
        Ok(response)
    }
    .await;
    attach(note, result)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    question: String,
    model: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `POST /v1/knowledge-bases/{kb}/answer`: retrieve, prompt, generate with any permitted
/// deployment; the answer with numbered citations and its label (the high-water mark).
#[utoipa::path(post, path = "/v1/knowledge-bases/{kb}/answer", tag = "knowledge bases", params(("kb" = String, Path, description = "A knowledge base's id or name"), ("Enclave-Label" = Option<String>, Header, description = "Read at this label (at most the key's clearance)")), request_body = AnswerRequest, responses((status = 200, description = "An answer with citations; with `stream: true`, server-sent events", content((Object = "application/json"), (String = "text/event-stream"))), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn answer(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    Path(kb): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut note = CallNote::default();
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = answer_inner(&state, &principal, &kb, &headers, &body, &mut note, &clock).await;
    attach(note, result)
}

#[allow(clippy::too_many_arguments, reason = "each is one input of the call")]
async fn answer_inner(
    state: &AppState,
    principal: &Principal,
    kb: &str,
    headers: &HeaderMap,
    body: &[u8],
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let kbs = knowledge_bases(state)?;
    require(state, principal, Action::ReadKnowledgeBases)?;
    let req: AnswerRequest = parse(body)?;
    if req.question.trim().is_empty() {
        return Err(Error::invalid("question", "`question` is empty".to_string()).into());
    }
    note.model = Some(req.model.clone());
    let ceiling = ceiling(
        state,
        principal,
        declared(headers, req.metadata.as_ref())?.as_ref(),
    )?;
    let k = req.k.unwrap_or(DEFAULT_PASSAGES).clamp(1, 20);
    let hits = kbs
        .search(
            &principal.tenant_name,
            kb,
            &ceiling,
            &req.question,
            k,
            Mode::Hybrid,
        )
        .await?;
    let Retrieved {
        system,
        mut citations,
        floor,
    } = build(hits);
    // Grounded answers default to greedy decoding: the same passages give the same answer.
    let (temperature, top_p) =
        crate::openai::sampling(Some(req.temperature.unwrap_or(0.0)), 2.0, None)?;
    let sampling = enclave_service::types::Sampling {
        temperature,
        top_p,
        seed: rand::random(),
        stop: Vec::new(),
        background: false,
    };
    let conversation = Conversation {
        turns: vec![
            Turn::new(TurnRole::System, system),
            Turn::new(TurnRole::User, req.question.clone()),
        ],
        tools: Vec::new(),
        tool_choice: None,
        sampling,
        max_tokens: req.max_tokens,
        stream: req.stream,
    };
    let declared = declared(headers, req.metadata.as_ref())?;
    let mut a = enclave_service::answer::chat(
        state,
        principal,
        declared.as_ref(),
        &req.model,
        conversation,
        floor.as_ref(),
        note,
        clock,
    )
    .await?;
    let id = format!("kbans_{}", uuid::Uuid::new_v4().simple());
    if req.stream {
        let label = a.info.label.clone();
        let header = header_value(&a.info.label);
        let events = async_stream::stream! {
            let opening = json!({
                "type": "citations",
                "id": id,
                "label": label,
                "citations": citations,
            });
            yield Ok::<_, Infallible>(SseEvent::default().data(opening.to_string()));
            let mut text = String::new();
            while let Some(step) = a.next().await {
                match step {
                    Step::Text(t) => {
                        text.push_str(&t);
                        yield Ok(SseEvent::default().data(json!({"type": "delta", "text": t}).to_string()));
                    }
                    Step::ToolCall(_) => {}
                    Step::Done { reason, prompt_tokens, completion_tokens, .. } => {
                        mark_cited(&mut citations, &text);
                        let cited: Vec<usize> = citations.iter().filter(|c| c.cited).map(|c| c.index).collect();
                        yield Ok(SseEvent::default().data(json!({
                            "type": "done",
                            "finish_reason": reason.as_str(),
                            "cited": cited,
                            // A marking in the answer may have raised its label since it began.
                            "label": a.label().unwrap_or_else(|| label.clone()),
                            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                        }).to_string()));
                        yield Ok(SseEvent::default().data("[DONE]"));
                        return;
                    }
                    Step::Failed(error) => {
                        yield Ok(SseEvent::default().data(serde_json::to_string(&crate::error::body(&error)).unwrap_or_default()));
                        return;
                    }
                }
            }
        };
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
        response.headers_mut().insert(LABEL_HEADER, header);
        return Ok(response);
    }
    let mut text = String::new();
    loop {
        match a.next().await {
            Some(Step::Text(t)) => text.push_str(&t),
            Some(Step::ToolCall(_)) => {}
            Some(Step::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                ..
            }) => {
                mark_cited(&mut citations, &text);
                // A marking in the answer raised its label (within the caller's clearance).
                let label = a.label().unwrap_or_else(|| a.info.label.clone());
                a.info.label = label.clone();
                let mut response = Json(json!({
                    "id": id,
                    "object": "knowledge_base.answer",
                    "model": req.model,
                    "answer": text,
                    "label": label,
                    "citations": citations,
                    "finish_reason": reason.as_str(),
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                    "enclave": a.info,
                }))
                .into_response();
                response
                    .headers_mut()
                    .insert(LABEL_HEADER, header_value(&label));
                return Ok(response);
            }
            Some(Step::Failed(error)) => return Err(error.into()),
            None => return Err(Error::EngineUnavailable.into()),
        }
    }
}
