//! Egress to tools: whether an agent's tool call may run, by rule and never by a classifier.
//!
//! A tool is placed like a deployment: an accreditation (the highest label its arguments may
//! carry) and a jurisdiction (where its data goes). A call runs only when the context label is
//! within the accreditation and the jurisdiction is one the tenant allows, so nothing is written
//! down. A tool that writes or sends needs a person's approval once content from a tool or a
//! document is in the context (the prompt-injection path), unless the operator marked it safe;
//! approval never overrides the label rule.

use enclave_label::{Label, Scheme};

use crate::route::{Placement, TenantPolicy};

/// What Enclave knows of a tool when deciding a call to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPlacement {
    pub placement: Placement,
    /// It writes or sends: a call has effects outside the conversation.
    pub writes: bool,
    /// The operator marked its writes safe: no approval is needed for them.
    pub safe: bool,
}

/// What the context is when the model asks for a call.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The join of everything in the context so far.
    pub label: &'a Label,
    /// Whether content from a tool or a document is in the context.
    pub tainted: bool,
    /// Whether a person approved this very call.
    pub approved: bool,
}

/// The decision on one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    Run,
    /// Ask a person first; the sentence says why.
    NeedsApproval(String),
    /// Never: `code` is stable, the sentence says why.
    Refused {
        code: &'static str,
        reason: String,
    },
}

/// Decides one call. Cheap: two lattice comparisons and a set lookup; sentences are written
/// only for the calls that do not simply run.
pub fn tool_call(
    scheme: &Scheme,
    tenant: &TenantPolicy,
    tool: &ToolPlacement,
    context: Context<'_>,
) -> Egress {
    let p = &tool.placement;
    if !tenant.allows(&p.jurisdiction) {
        return Egress::Refused {
            code: "tool_jurisdiction_not_allowed",
            reason: format!(
                "the tool `{}` sends its arguments to jurisdiction `{}`, which this tenant's policy does not allow",
                p.name, p.jurisdiction
            ),
        };
    }
    if !p.accreditation.dominates(context.label) {
        let why = scheme
            .explain_shortfall(&p.accreditation, context.label)
            .unwrap_or_else(|| "it does not dominate the context".to_string());
        return Egress::Refused {
            code: "tool_not_accredited",
            reason: format!(
                "the context is labelled {} and the tool `{}` is accredited only to {} ({why}); calling it would write the context down",
                scheme.banner(context.label),
                p.name,
                scheme.banner(&p.accreditation)
            ),
        };
    }
    if tool.writes && context.tainted && !tool.safe && !context.approved {
        return Egress::NeedsApproval(format!(
            "the tool `{}` writes or sends, and content from a tool or a document is in the context: a person must approve this call",
            p.name
        ));
    }
    Egress::Run
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn us() -> Scheme {
        Scheme::builtin("US").unwrap()
    }

    fn tool(
        scheme: &Scheme,
        accreditation: &str,
        jurisdiction: &str,
        writes: bool,
    ) -> ToolPlacement {
        ToolPlacement {
            placement: Placement {
                name: "t".into(),
                accreditation: scheme.parse(accreditation).unwrap(),
                jurisdiction: jurisdiction.into(),
            },
            writes,
            safe: false,
        }
    }

    fn tenant(scheme: &Scheme, outside: &[&str]) -> TenantPolicy {
        TenantPolicy {
            jurisdictions: outside
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            ..TenantPolicy::enclave_only(scheme.lowest())
        }
    }

    fn at<'a>(label: &'a Label, tainted: bool, approved: bool) -> Context<'a> {
        Context {
            label,
            tainted,
            approved,
        }
    }

    #[test]
    fn a_context_above_the_accreditation_is_never_sent() {
        let s = us();
        let secret = s.parse("SECRET").unwrap();
        let t = tool(&s, "CUI", "enclave", false);
        for approved in [false, true] {
            match tool_call(&s, &tenant(&s, &[]), &t, at(&secret, true, approved)) {
                Egress::Refused { code, reason } => {
                    assert_eq!(code, "tool_not_accredited");
                    assert!(
                        reason.contains("SECRET") && reason.contains("CUI"),
                        "{reason}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let cui = s.parse("CUI").unwrap();
        assert_eq!(
            tool_call(&s, &tenant(&s, &[]), &t, at(&cui, false, false)),
            Egress::Run
        );
    }

    #[test]
    fn releasability_counts_as_part_of_the_label() {
        let s = us();
        let noforn = s.parse("SECRET//NOFORN").unwrap();
        let mut t = tool(&s, "SECRET", "eu", false);
        t.placement.accreditation.releasability =
            enclave_label::Releasability::To(BTreeSet::from(["DEU".to_string()]));
        let refused = tool_call(&s, &tenant(&s, &["eu"]), &t, at(&noforn, false, false));
        assert!(
            matches!(
                refused,
                Egress::Refused {
                    code: "tool_not_accredited",
                    ..
                }
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_jurisdiction_the_tenant_does_not_allow_is_refused_first() {
        let s = us();
        let u = s.lowest();
        let t = tool(&s, "TOP SECRET", "us-cloud", false);
        let refused = tool_call(&s, &tenant(&s, &[]), &t, at(&u, false, false));
        assert!(matches!(
            refused,
            Egress::Refused {
                code: "tool_jurisdiction_not_allowed",
                ..
            }
        ));
        assert_eq!(
            tool_call(&s, &tenant(&s, &["us-cloud"]), &t, at(&u, false, false)),
            Egress::Run
        );
    }

    #[test]
    fn a_writing_tool_needs_approval_once_tool_or_document_content_is_in_the_context() {
        let s = us();
        let u = s.lowest();
        let mut t = tool(&s, "SECRET", "enclave", true);
        let none = tenant(&s, &[]);
        assert_eq!(tool_call(&s, &none, &t, at(&u, false, false)), Egress::Run);
        assert!(matches!(
            tool_call(&s, &none, &t, at(&u, true, false)),
            Egress::NeedsApproval(_)
        ));
        assert_eq!(tool_call(&s, &none, &t, at(&u, true, true)), Egress::Run);
        t.safe = true;
        assert_eq!(tool_call(&s, &none, &t, at(&u, true, false)), Egress::Run);
    }
}
