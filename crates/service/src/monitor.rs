//! Mandatory access control on the request path: label the request, check it against the
//! caller's clearance, authorize, route, redact. One function, [`admit`], in that order, so no
//! handler can skip a step or take them out of order.

use enclave_label::Label;
use enclave_policy::{Action, Decision, Redactions, Subject, check_clearance, label_request};
use serde_json::Value;

use crate::error::Error;
use crate::info::EnclaveInfo;
use crate::policy::{Deployment, ModelKind, Policy};
use crate::principal::Principal;

/// Where in a body's `metadata` a label may be declared.
pub const LABEL_METADATA: &str = "enclave_label";

/// A deployment the request may go to, and whether only its redacted copy may.
#[derive(Debug, Clone)]
pub struct Route {
    pub deployment: Deployment,
    pub redact: bool,
}

/// A request the reference monitor let through.
#[derive(Debug)]
pub struct Admitted {
    pub label: Label,
    /// The caller's clearance, as admission read it: answers are checked against it too.
    pub clearance: Label,
    banner: String,
    /// Every deployment routing allowed, in the operator's order; fallback uses only these.
    pub routes: Vec<Route>,
    /// The texts with personal data replaced by placeholders, and how to restore the answer;
    /// set when some route needs them.
    pub redacted: Option<(Vec<String>, Redactions)>,
    findings: std::collections::BTreeMap<enclave_policy::Kind, usize>,
    /// The decision and answer info for the route that serves (see [`Admitted::serve`]).
    pub decision: Decision,
    pub info: EnclaveInfo,
    /// The route now serving.
    pub deployment: Deployment,
}

impl Admitted {
    /// The request's label as a banner, as the answer carries it.
    pub fn banner(&self) -> &str {
        &self.info.label
    }

    /// Makes route `index` the one that serves: the decision and answer info name it.
    pub fn serve(&mut self, index: usize) {
        let Some(route) = self.routes.get(index) else {
            return;
        };
        let d = &route.deployment;
        let redacted = if route.redact {
            self.redacted.as_ref().map_or(0, |(_, r)| r.len())
        } else {
            0
        };
        self.decision = Decision {
            allowed: true,
            code: None,
            label: Some(self.banner.clone()),
            findings: self.findings.clone(),
            deployment: Some(d.placement.name.clone()),
            redacted,
            reason: format!(
                "routed to `{}` ({}, accredited to {})",
                d.placement.name, d.placement.jurisdiction, d.accreditation
            ),
        };
        self.info = EnclaveInfo {
            label: self.banner.clone(),
            deployment: d.placement.name.clone(),
            jurisdiction: d.placement.jurisdiction.clone(),
            redacted: redacted > 0,
            citations: std::mem::take(&mut self.info.citations),
        };
        self.deployment = d.clone();
    }

    /// The restorer for an answer from route `index`, when its request went redacted.
    pub fn redactions_for(&self, index: usize) -> Option<&Redactions> {
        let route = self.routes.get(index)?;
        if !route.redact {
            return None;
        }
        self.redacted
            .as_ref()
            .map(|(_, r)| r)
            .filter(|r| !r.is_empty())
    }
}

/// A label a caller declared, and where it was declared (for the error naming it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `Enclave-Label`, `metadata.enclave_label`, or a job's field.
    pub source: &'static str,
    pub text: String,
}

impl Declared {
    /// The label declared in a request's `metadata.enclave_label`, if any.
    pub fn from_metadata(metadata: Option<&Value>) -> Result<Option<Self>, Error> {
        match metadata.and_then(|m| m.get(LABEL_METADATA)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Declared {
                source: "metadata.enclave_label",
                text: s.clone(),
            })),
            Some(_) => Err(Error::InvalidLabel {
                param: "metadata.enclave_label".into(),
                message: "`metadata.enclave_label` must be a string such as \"SECRET//NOFORN\""
                    .into(),
            }),
        }
    }
}

/// Whether `principal` may read something its tenant keeps at the label `banner`: its own
/// tenant's, at a label its clearance dominates. A label that does not parse is not readable
/// (fail closed). Callers answer "not found" either way, so nothing tells a reader what it may
/// not see exists.
pub fn may_read(
    policy: &Policy,
    principal: &Principal,
    tenant_id: &str,
    banner: &str,
) -> Result<bool, Error> {
    if tenant_id != principal.tenant_id {
        return Ok(false);
    }
    let Ok(label) = policy.scheme.parse(banner) else {
        return Ok(false);
    };
    Ok(clearance(policy, principal)?.dominates(&label))
}

/// The caller's clearance, its stored banner parsed against the scheme in force.
pub fn clearance(policy: &Policy, principal: &Principal) -> Result<Label, Error> {
    policy.clearance(&principal.clearance).map_err(|e| {
        Error::InvalidClearance(format!(
            "the key's stored clearance `{}` is not a label of scheme {}: {e}; an admin must issue a new key",
            principal.clearance,
            policy.scheme.name()
        ))
    })
}

/// Whether the policy lets `principal` do `action` on `target` (a model for a model call, else a
/// tenant or [`enclave_policy::ALL_TENANTS`]): Cedar decides every role rule, and every refusal
/// is 403 `forbidden_by_policy`.
pub fn authorize(
    policy: &Policy,
    principal: &Principal,
    action: Action,
    target: &str,
) -> Result<(), Error> {
    let subject = Subject {
        key_id: &principal.key_id,
        tenant: &principal.tenant_name,
        role: principal.role.as_str(),
    };
    if policy.authz.is_allowed(subject, action, target) {
        return Ok(());
    }
    let target = if target == enclave_policy::ALL_TENANTS {
        "every tenant".to_string()
    } else {
        format!("`{target}`")
    };
    Err(Error::ForbiddenByPolicy(format!(
        "the policy does not allow a `{}` key of tenant `{}` to {} {target}",
        principal.role,
        principal.tenant_name,
        action.describe()
    )))
}

/// A request the reference monitor refused: the error for the caller, the decision for the audit.
#[derive(Debug)]
pub struct Denied {
    pub error: Error,
    pub decision: Decision,
}

fn deny(err: Error, label: Option<&Label>, policy: &Policy, reason: String) -> Box<Denied> {
    let decision = Decision {
        allowed: false,
        code: Some(err.code()),
        label: label.map(|l| policy.scheme.banner(l)),
        findings: Default::default(),
        deployment: None,
        redacted: 0,
        reason,
    };
    Box::new(Denied {
        error: err,
        decision,
    })
}

/// The sentence refusing the first marking with a control the scheme does not know: which
/// control, in which marking, in which text and where in it.
pub fn unrecognized<T: AsRef<str>>(
    scheme: &enclave_label::Scheme,
    texts: &[T],
    findings: &[Vec<enclave_policy::Finding>],
) -> Option<String> {
    texts.iter().zip(findings).enumerate().find_map(|(i, (text, found))| {
        let text = text.as_ref();
        let f = found.iter().find(|f| !f.unrecognized.is_empty())?;
        let marking = text.get(f.start..f.end).unwrap_or_default();
        let column = text.get(..f.start).map_or(0, |t| t.chars().count());
        Some(format!(
            "the marking `{}` in text {} of the request (at character {column}) carries `{}`, which scheme {} does not know; a marking Enclave cannot read is refused rather than ignored: write it with the scheme's controls, or have the operator add it to the scheme",
            marking.trim(),
            i + 1,
            f.unrecognized.join("`, `"),
            scheme.name()
        ))
    })
}

/// `admitted` with its decision noted for the audit record, whether it admits or denies.
pub fn noted(
    admitted: Result<Admitted, Box<Denied>>,
    decision: &mut Option<Decision>,
) -> Result<Admitted, Error> {
    match admitted {
        Ok(a) => {
            *decision = Some(a.decision.clone());
            Ok(a)
        }
        Err(denied) => {
            *decision = Some(denied.decision);
            Err(denied.error)
        }
    }
}

/// Runs the reference monitor over a request: `texts` is everything the request sends (every
/// message, system prompt and earlier turn); it is redacted in place when routing requires it.
#[allow(
    clippy::too_many_arguments,
    reason = "each is one input of the decision"
)]
pub fn admit(
    policy: &Policy,
    principal: &Principal,
    want: ModelKind,
    model: &str,
    declared: Option<&Declared>,
    floor: Option<&Label>,
    texts: &mut [String],
    images: bool,
) -> Result<Admitted, Box<Denied>> {
    let action = match want {
        ModelKind::Chat => Action::Chat,
        ModelKind::Embedding => Action::Embed,
    };
    let mut candidates: Vec<&Deployment> = policy.deployments_for(model).collect();
    let Some(first) = candidates.first() else {
        let e = Error::ModelNotFound(model.to_string());
        let reason = e.to_string();
        return Err(deny(e, None, policy, reason));
    };
    let first = *first;
    // An image goes only where the model reads images, and never out of the enclave: it cannot
    // be inspected for markings or personal data, nor redacted, so it is read as what the
    // request declares (or the tenant's default) and kept home.
    if images {
        candidates.retain(|d| d.vision && d.placement.jurisdiction == enclave_policy::ENCLAVE);
        if candidates.is_empty() {
            let e = Error::ImagesNotSupported(format!(
                "no deployment of `{model}` inside the enclave reads images (`vision = true`): images never leave the enclave, since they cannot be inspected or redacted; send text only, or choose a model that reads images"
            ));
            let reason = e.to_string();
            return Err(deny(e, None, policy, reason));
        }
    }
    if first.kind != want {
        let e = Error::WrongModelKind {
            model: model.to_string(),
            actual: match first.kind {
                ModelKind::Chat => "a chat",
                ModelKind::Embedding => "an embedding",
            },
            route: match want {
                ModelKind::Chat => "chat completions",
                ModelKind::Embedding => "embeddings",
            },
        };
        let reason = e.to_string();
        return Err(deny(e, None, policy, reason));
    }

    // 1. The label: declared or the tenant's default, joined with what inspection finds.
    let clearance = clearance(policy, principal).map_err(|err| {
        let reason = err.to_string();
        deny(err, None, policy, reason)
    })?;
    let tenant = policy.tenant(&principal.tenant_name);
    let declared_label = match declared {
        Some(Declared { source, text }) => policy.scheme.parse(text).map_err(|e| {
            let err = Error::InvalidLabel {
                param: source.to_string(),
                message: format!(
                    "`{text}` in `{source}` is not a label of scheme {}: {e}",
                    policy.scheme.name()
                ),
            };
            let reason = err.to_string();
            deny(err, None, policy, reason)
        })?,
        None => tenant.default_label.clone(),
    };
    // What the request carries beyond its own text (retrieved passages) raises its label.
    let declared_label = match floor {
        Some(f) => declared_label.join(f),
        None => declared_label,
    };
    let labelled = label_request(
        &policy.inspector,
        &declared_label,
        texts.iter().map(String::as_str),
    );
    let label = labelled.label.clone();
    let with_findings = |mut d: Box<Denied>| {
        d.decision.findings = labelled.summary.counts.clone();
        d
    };

    // A control the scheme does not know is refused, never read as nothing (fail closed).
    if let Some(why) = unrecognized(&policy.scheme, texts, &labelled.findings) {
        let err = Error::UnrecognizedMarking(why.clone());
        return Err(with_findings(deny(err, Some(&label), policy, why)));
    }

    // 2. Never above the caller's clearance.
    check_clearance(&policy.scheme, &clearance, &label).map_err(|why| {
        let err = Error::LabelExceedsClearance(why.clone());
        with_findings(deny(err, Some(&label), policy, why))
    })?;

    // 3. Who may call what: Cedar, on roles and tenants only.
    if let Err(err) = authorize(policy, principal, action, model) {
        let why = err.to_string();
        return Err(with_findings(deny(err, Some(&label), policy, why)));
    }

    // 4. Only deployments accredited for the label, in jurisdictions the tenant allows.
    let placements: Vec<_> = candidates.iter().map(|d| d.placement.clone()).collect();
    let personal = labelled.summary.personal_data();
    let chosen = enclave_policy::route(&policy.scheme, &label, personal, tenant, &placements)
        .map_err(|refused| {
            let list: Vec<String> = refused
                .iter()
                .map(|r| format!("`{}`: {}", r.deployment, r.reason))
                .collect();
            let why = format!(
                "no deployment of `{model}` may receive a request labelled {}{}: {}",
                policy.scheme.banner(&label),
                if personal {
                    " containing personal data"
                } else {
                    ""
                },
                list.join("; ")
            );
            let err = Error::NoAccreditedDeployment(why.clone());
            with_findings(deny(err, Some(&label), policy, why))
        })?;
    let routes: Vec<Route> = chosen
        .iter()
        .filter_map(|c| {
            candidates.get(c.index).map(|d| Route {
                deployment: (*d).clone(),
                redact: c.redact,
            })
        })
        .collect();
    if routes.is_empty() {
        let why = "routing chose nothing".to_string();
        return Err(with_findings(deny(
            Error::Internal,
            Some(&label),
            policy,
            why,
        )));
    }

    // 5. Personal data leaves only as placeholders: a redacted copy for the routes that need it.
    let redacted = if routes.iter().any(|r| r.redact) {
        let mut r = Redactions::default();
        let copy: Vec<String> = texts
            .iter()
            .zip(&labelled.findings)
            .map(|(text, findings)| r.redact(text, findings))
            .collect();
        Some((copy, r))
    } else {
        None
    };
    let banner = policy.scheme.banner(&label);
    let mut admitted = Admitted {
        label,
        clearance,
        banner,
        routes,
        redacted,
        findings: labelled.summary.counts.clone(),
        decision: Decision::default(),
        info: EnclaveInfo {
            label: String::new(),
            deployment: String::new(),
            jurisdiction: String::new(),
            redacted: false,
            citations: Vec::new(),
        },
        deployment: candidates[0].clone(),
    };
    admitted.serve(0);
    Ok(admitted)
}
