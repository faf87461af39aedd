//! The console's pages: chat, knowledge bases, administration and audit. Each is rendered from
//! what the principal's own service calls return; the page's script calls `/v1` for the rest.

use axum::extract::{Request, State};
use axum::response::Response;
use enclave_label::{Label, Scheme};
use enclave_policy::Action;
use enclave_service::error::Error;
use enclave_service::principal::Principal;
use minijinja::context;

use super::{parse_or_lowest, render, shown, signed_in};
use crate::AppState;

/// `GET /console`: the chat page.
#[utoipa::path(get, path = "/console", tag = "console", security(()),
    responses(
        (status = 200, description = "The chat page, under banners", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to /login"),
        (status = 401, description = "A session or certificate that is not accepted, and why", content_type = "text/html", body = String),
    ))]
pub async fn chat(State(state): State<AppState>, req: Request) -> Response {
    let (principal, cookie, parts) = match signed_in(&state, req, "/console").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let scheme = &state.policy.scheme;
    let labels = working_labels(scheme, &parse_or_lowest(scheme, &principal.clearance));
    let models = crate::openai::models::visible(&state, &principal);
    let csrf = csrf_of(cookie.as_deref());
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    let wanted = query
        .iter()
        .find(|(k, _)| k == "c")
        .map(|(_, v)| v.as_str());
    let page = match chat_page(&state, &principal, wanted).await {
        Ok(page) => page,
        Err(e) => return crate::browser::error_page(&e),
    };
    render(
        "chat.html",
        context! {
            models => models,
            labels => labels,
            conversations => page.conversations,
            current => page.current,
            messages => page.messages,
            notice => page.notice,
            kbs => page.kbs,
            ..frame(&state, &principal, &csrf, ("Chat", "chat"), &page.high)
        },
    )
}

/// What the chat page shows beside the composer, each read through the principal's own calls.
struct ChatPage {
    conversations: Vec<minijinja::Value>,
    /// The open conversation's id; empty for a new one.
    current: String,
    messages: Vec<minijinja::Value>,
    /// The open conversation's label: the page's banner.
    high: Label,
    notice: Option<String>,
    kbs: Vec<minijinja::Value>,
}

async fn chat_page(
    state: &AppState,
    principal: &Principal,
    wanted: Option<&str>,
) -> Result<ChatPage, Error> {
    use enclave_service::history;
    let scheme = &state.policy.scheme;
    let portion_of = |banner: &str| scheme.portion(&parse_or_lowest(scheme, banner));
    let mut page = ChatPage {
        conversations: Vec::new(),
        current: String::new(),
        messages: Vec::new(),
        high: scheme.lowest(),
        notice: None,
        kbs: Vec::new(),
    };
    if let Some(id) = wanted {
        match history::open(state, principal, id).await {
            Ok(kept) => {
                page.high = parse_or_lowest(scheme, &kept.conversation.label);
                page.current = kept.conversation.id;
                page.messages = kept
                    .messages
                    .into_iter()
                    .map(|m| {
                        let citations: Vec<minijinja::Value> = m
                            .citations
                            .iter()
                            .map(|c| {
                                let label = c["label"].as_str().unwrap_or_default();
                                context! {
                                    index => c["index"].as_u64().unwrap_or_default(),
                                    label => label,
                                    portion => portion_of(label),
                                    document => c["document_name"].as_str().unwrap_or_default(),
                                    text => c["text"].as_str().unwrap_or_default(),
                                }
                            })
                            .collect();
                        context! {
                            role => m.role,
                            label => m.label,
                            portion => m.portion,
                            content => m.content,
                            citations => citations,
                        }
                    })
                    .collect();
            }
            Err(Error::NotFound(message)) => page.notice = Some(message),
            Err(e) => return Err(e),
        }
    }
    // A conversation with no message yet (the page makes one as its first message is written)
    // is listed only while it is open.
    page.conversations = history::list(state, principal)
        .await?
        .into_iter()
        .filter(|c| !c.title.is_empty() || c.id == page.current)
        .map(|c| {
            context! {
                current => c.id == page.current,
                portion => portion_of(&c.label),
                title => if c.title.is_empty() { "New conversation".to_string() } else { c.title },
                id => c.id,
            }
        })
        .collect();
    if let Some(kbs) = &state.kb
        && may(state, principal, Action::ReadKnowledgeBases)
    {
        page.kbs = kbs
            .list(&principal.tenant_name)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|k| context! { id => k.id, name => k.name })
            .collect();
    }
    Ok(page)
}

fn user_context(scheme: &Scheme, principal: &Principal) -> minijinja::Value {
    context! {
        name => principal.user.clone().unwrap_or_else(|| principal.key_id.clone()),
        tenant => principal.tenant_name.clone(),
        role => principal.role.as_str(),
        clearance => scheme.banner(&parse_or_lowest(scheme, &principal.clearance)),
    }
}

/// `GET /console/audit`: records, the latest checkpoint, and inclusion verified in the page.
#[utoipa::path(get, path = "/console/audit", tag = "console", security(()),
    responses(
        (status = 200, description = "The audit page, under banners", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to /login"),
    ))]
pub async fn audit(State(state): State<AppState>, req: Request) -> Response {
    let (principal, cookie, _) = match signed_in(&state, req, "/console/audit").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let csrf = csrf_of(cookie.as_deref());
    let lowest = state.policy.scheme.lowest();
    render(
        "audit.html",
        frame(&state, &principal, &csrf, ("Audit", "audit"), &lowest),
    )
}

/// `GET /console/admin`: tenants, users, keys, usage, deployments and models, as the
/// administrator's own API calls return them.
#[utoipa::path(get, path = "/console/admin", tag = "console", security(()),
    responses(
        (status = 200, description = "The administration page, under banners", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to /login"),
    ))]
pub async fn admin(State(state): State<AppState>, req: Request) -> Response {
    let page = ("/console/admin", "admin.html", "Administration", "admin");
    managing(&state, req, page, Action::ManageKeys).await
}

/// `GET /console/knowledge-bases`: knowledge bases, their documents, uploads and search.
#[utoipa::path(get, path = "/console/knowledge-bases", tag = "console", security(()),
    responses(
        (status = 200, description = "The knowledge-base page, under banners", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to /login"),
    ))]
pub async fn knowledge_bases(State(state): State<AppState>, req: Request) -> Response {
    let page = (
        "/console/knowledge-bases",
        "kb.html",
        "Knowledge bases",
        "kb",
    );
    managing(&state, req, page, Action::CreateKnowledgeBase).await
}

/// A page whose script does the work through the API: the frame, the labels the person may work
/// at, and whether they may make changes there (`manage`, for which Cedar's `action` decides).
async fn managing(
    state: &AppState,
    req: Request,
    (here, template, title, page): (&str, &str, &str, &str),
    action: Action,
) -> Response {
    let (principal, cookie, _) = match signed_in(state, req, here).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let scheme = &state.policy.scheme;
    let csrf = csrf_of(cookie.as_deref());
    let lowest = scheme.lowest();
    render(
        template,
        context! {
            labels => working_labels(scheme, &parse_or_lowest(scheme, &principal.clearance)),
            manage => may(state, &principal, action),
            ..frame(state, &principal, &csrf, (title, page), &lowest)
        },
    )
}

fn csrf_of(cookie: Option<&str>) -> String {
    cookie
        .map(enclave_service::session::csrf_token)
        .unwrap_or_default()
}

/// Whether Cedar lets the principal do `action` on its own tenant.
fn may(state: &AppState, principal: &Principal, action: Action) -> bool {
    enclave_service::monitor::authorize(&state.policy, principal, action, &principal.tenant_name)
        .is_ok()
}

/// What every page's frame shows: title, navigation the principal may use, the anti-forgery
/// token, the banner at `high`, and who is signed in.
fn frame(
    state: &AppState,
    principal: &Principal,
    csrf: &str,
    (title, page): (&str, &str),
    high: &Label,
) -> minijinja::Value {
    let scheme = &state.policy.scheme;
    context! {
        title => title,
        page => page,
        csrf => csrf,
        banner => shown(scheme, high),
        user => user_context(scheme, principal),
        audit => may(state, principal, Action::ReadAudit),
        admin => may(state, principal, Action::ReadTenant),
        knowledge => state.kb.is_some() && may(state, principal, Action::ReadKnowledgeBases),
    }
}

/// Labels a person may work at: each level from the lowest up to the clearance's, and the
/// clearance's own compartments at its level, as data may carry them.
fn working_labels(scheme: &Scheme, clearance: &Label) -> Vec<String> {
    let mut labels: Vec<String> = (0..=clearance.level.0)
        .map(|level| scheme.banner(&Label::level(level)))
        .collect();
    if !clearance.compartments.is_empty() {
        let mut top = Label::level(clearance.level.0);
        top.compartments.clone_from(&clearance.compartments);
        labels.push(scheme.banner(&top));
    }
    labels
}
