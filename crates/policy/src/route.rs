//! Sovereign routing: which deployments may receive a request, and whether its personal data must
//! be redacted first.
//!
//! A deployment qualifies when its accreditation dominates the request label and its
//! jurisdiction is one the tenant allows (`enclave`, meaning on this platform's own hardware, is
//! always allowed). A request carrying personal data goes outside the enclave only where the
//! tenant allows redaction for that jurisdiction, and then only redacted. There is no way to
//! redact classified content into fitness: a label above a deployment's accreditation refuses it.

use std::collections::BTreeSet;

use enclave_label::{Label, Scheme};

/// The jurisdiction of deployments on the platform's own hardware.
pub const ENCLAVE: &str = "enclave";

/// What routing needs to know of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    /// The highest label it may process.
    pub accreditation: Label,
    /// Where its data physically goes: `enclave`, `eu`, `us`, ...
    pub jurisdiction: String,
}

/// A tenant's data-handling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// The label of a request that declares none.
    pub default_label: Label,
    /// Jurisdictions outside the enclave its data may go to.
    pub jurisdictions: BTreeSet<String>,
    /// Jurisdictions personal data may go to once redacted. Each must also be in `jurisdictions`.
    pub redact_pii_for: BTreeSet<String>,
}

impl TenantPolicy {
    /// Only the enclave, no personal data out, requests at `default_label`.
    pub fn enclave_only(default_label: Label) -> Self {
        Self {
            default_label,
            jurisdictions: BTreeSet::new(),
            redact_pii_for: BTreeSet::new(),
        }
    }

    pub fn allows(&self, jurisdiction: &str) -> bool {
        jurisdiction == ENCLAVE || self.jurisdictions.contains(jurisdiction)
    }
}

/// A deployment routing accepted: its index among the candidates, and whether to redact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    pub redact: bool,
}

/// A deployment routing refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub deployment: String,
    pub reason: String,
}

/// The deployments, in the operator's order of preference, that may serve a request at `label`
/// (`personal`: whether it contains personal data) for `tenant`; or, when none may, every
/// candidate with the reason it was refused. Fallback may use only what this returns.
pub fn route(
    scheme: &Scheme,
    label: &Label,
    personal: bool,
    tenant: &TenantPolicy,
    candidates: &[Placement],
) -> Result<Vec<Choice>, Vec<Refused>> {
    let mut chosen = Vec::new();
    for (index, c) in candidates.iter().enumerate() {
        if !c.accreditation.dominates(label) {
            continue;
        }
        if !tenant.allows(&c.jurisdiction) {
            continue;
        }
        let outside = c.jurisdiction != ENCLAVE;
        if personal && outside && !tenant.redact_pii_for.contains(&c.jurisdiction) {
            continue;
        }
        chosen.push(Choice {
            index,
            redact: personal && outside,
        });
    }
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    // Refusals are rare; only they pay for the sentences.
    Err(candidates
        .iter()
        .map(|c| Refused {
            deployment: c.name.clone(),
            reason: refusal(scheme, label, personal, tenant, c),
        })
        .collect())
}

fn refusal(
    scheme: &Scheme,
    label: &Label,
    personal: bool,
    tenant: &TenantPolicy,
    c: &Placement,
) -> String {
    if let Some(why) = scheme.explain_shortfall(&c.accreditation, label) {
        return format!(
            "accredited only to {} ({why})",
            scheme.banner(&c.accreditation)
        );
    }
    if !tenant.allows(&c.jurisdiction) {
        return format!(
            "its jurisdiction `{}` is not one this tenant's data may go to",
            c.jurisdiction
        );
    }
    if personal {
        return format!(
            "the request contains personal data and this tenant does not allow it to go to `{}`, \
             even redacted",
            c.jurisdiction
        );
    }
    "not refused".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclave_label::{Level, Releasability};
    use proptest::prelude::*;

    fn scheme() -> Scheme {
        Scheme::builtin("US").unwrap()
    }

    const PLACES: [&str; 4] = [ENCLAVE, "eu", "us", "de"];
    const NATIONS: [&str; 3] = ["USA", "GBR", "DEU"];

    /// Whether content at `label` may go to a deployment operated by `nation`.
    fn releasable(label: &Label, nation: &str) -> bool {
        match &label.releasability {
            Releasability::Unrestricted => true,
            Releasability::To(set) => set.contains(nation),
        }
    }

    fn nation(p: &Placement) -> &str {
        match &p.accreditation.releasability {
            Releasability::To(set) => set.iter().next().map_or("", String::as_str),
            Releasability::Unrestricted => "",
        }
    }

    fn label() -> impl Strategy<Value = Label> {
        let comps = proptest::sample::subsequence(vec!["SI", "TK", "ORCON"], 0..=3);
        let rel = prop_oneof![
            Just(Releasability::Unrestricted),
            proptest::sample::subsequence(vec!["USA", "GBR", "AUS", "DEU"], 0..=4)
                .prop_map(|c| Releasability::To(c.into_iter().map(String::from).collect())),
        ];
        (0u8..5, comps, rel).prop_map(|(l, c, r)| Label {
            level: Level(l),
            compartments: c.into_iter().map(String::from).collect(),
            releasability: r,
        })
    }

    fn places() -> impl Strategy<Value = BTreeSet<String>> {
        proptest::sample::subsequence(PLACES[1..].to_vec(), 0..=3)
            .prop_map(|p| p.into_iter().map(String::from).collect())
    }

    fn setup() -> impl Strategy<Value = (Vec<Placement>, TenantPolicy, Label, bool)> {
        // A deployment reads as the nation operating it: its accreditation's releasability is
        // that nation alone (as `gateway::policy` builds it).
        let placement = (
            label(),
            proptest::sample::select(PLACES.to_vec()),
            proptest::sample::select(NATIONS.to_vec()),
        )
            .prop_map(|(mut accreditation, j, nation)| {
                accreditation.releasability =
                    Releasability::To(BTreeSet::from([nation.to_string()]));
                (accreditation, j.to_string())
            });
        (
            proptest::collection::vec(placement, 0..6),
            places(),
            places(),
            label(),
            any::<bool>(),
        )
            .prop_map(|(ps, jur, red, label, personal)| {
                let placements = ps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (accreditation, jurisdiction))| Placement {
                        name: format!("d{i}"),
                        accreditation,
                        jurisdiction,
                    })
                    .collect();
                let tenant = TenantPolicy {
                    default_label: Label::level(0),
                    jurisdictions: jur,
                    redact_pii_for: red,
                };
                (placements, tenant, label, personal)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Over random configurations and requests: every deployment chosen dominates the label,
        /// is operated by a nation the content is releasable to, and sits in an allowed
        /// jurisdiction, personal data leaves only redacted and only where
        /// allowed, and a request is refused exactly when no deployment qualifies.
        #[test]
        fn routing_never_crosses_a_label_or_a_border((placements, tenant, label, personal) in setup()) {
            let s = scheme();
            let qualifies = |p: &Placement| {
                p.accreditation.dominates(&label)
                    && (p.jurisdiction == ENCLAVE || tenant.jurisdictions.contains(&p.jurisdiction))
                    && (!personal || p.jurisdiction == ENCLAVE || tenant.redact_pii_for.contains(&p.jurisdiction))
            };
            match route(&s, &label, personal, &tenant, &placements) {
                Ok(chosen) => {
                    prop_assert!(!chosen.is_empty());
                    for c in &chosen {
                        let p = &placements[c.index];
                        prop_assert!(p.accreditation.dominates(&label));
                        prop_assert!(releasable(&label, nation(p)), "NOFORN or REL TO crossed a border");
                        prop_assert!(tenant.allows(&p.jurisdiction));
                        prop_assert_eq!(c.redact, personal && p.jurisdiction != ENCLAVE);
                        if c.redact { prop_assert!(tenant.redact_pii_for.contains(&p.jurisdiction)); }
                    }
                    let all: Vec<usize> = (0..placements.len()).filter(|i| qualifies(&placements[*i])).collect();
                    prop_assert_eq!(chosen.iter().map(|c| c.index).collect::<Vec<_>>(), all);
                }
                Err(refused) => {
                    prop_assert!(!placements.iter().any(qualifies));
                    prop_assert_eq!(refused.len(), placements.len());
                    for r in &refused { prop_assert!(r.reason != "not refused"); }
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_reason() {
        let s = scheme();
        let cands = vec![
            Placement {
                name: "local".into(),
                accreditation: s.clearance(s.parse("S").unwrap()),
                jurisdiction: ENCLAVE.into(),
            },
            Placement {
                name: "cloud-eu".into(),
                accreditation: s.clearance(s.parse("U").unwrap()),
                jurisdiction: "eu".into(),
            },
        ];
        let tenant = TenantPolicy::enclave_only(Label::level(0));
        let ts = s.parse("TS//SI").unwrap();
        let refused = route(&s, &ts, false, &tenant, &cands).unwrap_err();
        assert!(
            refused[0]
                .reason
                .contains("accredited only to SECRET//NOFORN"),
            "{refused:?}"
        );
        assert!(
            refused[0]
                .reason
                .contains("level TOP SECRET is above SECRET")
        );
        assert!(refused[1].reason.contains("accredited only to"));
        let u = Label::level(0);
        let ok = route(&s, &u, true, &tenant, &cands).unwrap();
        assert_eq!(
            ok,
            vec![Choice {
                index: 0,
                redact: false
            }]
        );
    }
}
