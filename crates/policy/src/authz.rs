//! Who may do what, as Cedar policies validated against a schema in strict mode: every role rule
//! of the platform (model calls, knowledge bases, the audit trail, usage) is an action here, so
//! an operator can narrow any of them, and every refusal has one error code.
//!
//! Cedar answers role and tenant questions only. Labels are never a Cedar question: dominance is
//! decided by the `label` crate, the reference monitor. Cedar skips a policy whose evaluation
//! errors as if it were absent, which could turn a broken `forbid` into an allow; so any
//! evaluation error here is a deny.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer as CedarAuthorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

/// The entity and action model operators write policies against.
pub const SCHEMA: &str = r#"
namespace Enclave {
  // An agency.
  entity Tenant;
  // An API key, member of its tenant. `role` is `user`, `admin` or `auditor`.
  entity Key in [Tenant] { role: String };
  // A model alias as clients name it; `kind` is `chat` or `embedding`.
  entity Model { kind: String };

  action "chat" appliesTo { principal: [Key], resource: [Model] };
  action "embed" appliesTo { principal: [Key], resource: [Model] };

  // Actions on a tenant's data: the resource is the tenant acted on, or `*` for every tenant at
  // once (a key is `in` only its own tenant).
  action "knowledge_bases.create" appliesTo { principal: [Key], resource: [Tenant] };
  action "knowledge_bases.read" appliesTo { principal: [Key], resource: [Tenant] };
  action "knowledge_bases.write" appliesTo { principal: [Key], resource: [Tenant] };
  action "audit.read" appliesTo { principal: [Key], resource: [Tenant] };
  action "usage.read" appliesTo { principal: [Key], resource: [Tenant] };
  // Administration: reading a tenant's users, keys, quotas, and the deployments and models that
  // serve it; minting and revoking its keys.
  action "tenant.read" appliesTo { principal: [Key], resource: [Tenant] };
  action "keys.manage" appliesTo { principal: [Key], resource: [Tenant] };
}
"#;

/// The policies in force before an operator adds any.
pub const DEFAULT_POLICIES: &str = r#"
// Users and admins may call every model; auditors read the audit trail, not models.
@id("default-model-access")
permit (
  principal,
  action in [Enclave::Action::"chat", Enclave::Action::"embed"],
  resource
) when { principal.role == "user" || principal.role == "admin" };

// Admins create their tenant's knowledge bases; users and admins read them and add or delete
// documents.
@id("default-knowledge-bases-create")
permit (principal, action == Enclave::Action::"knowledge_bases.create", resource)
when { principal.role == "admin" && principal in resource };
@id("default-knowledge-bases-use")
permit (
  principal,
  action in [Enclave::Action::"knowledge_bases.read", Enclave::Action::"knowledge_bases.write"],
  resource
) when { (principal.role == "user" || principal.role == "admin") && principal in resource };

// Auditors read every tenant's audit records; admins their own tenant's.
@id("default-audit-auditors")
permit (principal, action == Enclave::Action::"audit.read", resource)
when { principal.role == "auditor" };
@id("default-audit-admins")
permit (principal, action == Enclave::Action::"audit.read", resource)
when { principal.role == "admin" && principal in resource };

// Every key reads its own tenant's usage; auditors any tenant's, or all.
@id("default-usage-own")
permit (principal, action == Enclave::Action::"usage.read", resource)
when { principal in resource };
@id("default-usage-auditors")
permit (principal, action == Enclave::Action::"usage.read", resource)
when { principal.role == "auditor" };

// Admins read and manage their own tenant (keys of users and admins; auditor keys are the
// operator's, from the command line); auditors read any tenant.
@id("default-tenant-read-admins")
permit (principal, action == Enclave::Action::"tenant.read", resource)
when { principal.role == "admin" && principal in resource };
@id("default-tenant-read-auditors")
permit (principal, action == Enclave::Action::"tenant.read", resource)
when { principal.role == "auditor" };
@id("default-keys-manage")
permit (principal, action == Enclave::Action::"keys.manage", resource)
when { principal.role == "admin" && principal in resource };
"#;

/// The resource of a tenant-wide action that spans every tenant.
pub const ALL_TENANTS: &str = "*";

/// What is being asked. Model calls act on a model; the others on a tenant (or
/// [`ALL_TENANTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Chat,
    Embed,
    CreateKnowledgeBase,
    ReadKnowledgeBases,
    WriteKnowledgeBases,
    ReadAudit,
    ReadUsage,
    ReadTenant,
    ManageKeys,
}

impl Action {
    /// The action's id in Cedar.
    pub fn id(self) -> &'static str {
        match self {
            Action::Chat => "chat",
            Action::Embed => "embed",
            Action::CreateKnowledgeBase => "knowledge_bases.create",
            Action::ReadKnowledgeBases => "knowledge_bases.read",
            Action::WriteKnowledgeBases => "knowledge_bases.write",
            Action::ReadAudit => "audit.read",
            Action::ReadUsage => "usage.read",
            Action::ReadTenant => "tenant.read",
            Action::ManageKeys => "keys.manage",
        }
    }

    /// What the action does, as the end of "may not …".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Chat => "chat with",
            Action::Embed => "embed with",
            Action::CreateKnowledgeBase => "create knowledge bases of",
            Action::ReadKnowledgeBases => "read knowledge bases of",
            Action::WriteKnowledgeBases => "add or delete documents of",
            Action::ReadAudit => "read the audit records of",
            Action::ReadUsage => "read the usage of",
            Action::ReadTenant => "read the users, keys and quotas of",
            Action::ManageKeys => "create or revoke keys of",
        }
    }

    /// The model kind a model action needs; `None` for an action on a tenant.
    fn kind(self) -> Option<&'static str> {
        match self {
            Action::Chat => Some("chat"),
            Action::Embed => Some("embedding"),
            _ => None,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub key_id: &'a str,
    pub tenant: &'a str,
    pub role: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("the Cedar schema does not parse: {0}")]
    Schema(String),
    #[error("the Cedar policies in {source_name} do not parse: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("the Cedar policies do not validate against Enclave's schema (strict mode): {0}")]
    Invalid(String),
}

/// A validated policy set.
#[derive(Debug)]
pub struct Authorizer {
    /// Decisions already made. The policies are fixed for this authorizer's life and a decision
    /// depends only on the subject, the action and the target, all in the key, so a cached
    /// decision is the one Cedar would make again (Cedar's entity checks cost as much as the
    /// rest of a request's admission).
    decided: quick_cache::sync::Cache<DecisionKey, bool>,
    policies: PolicySet,
    schema: Schema,
    cedar: CedarAuthorizer,
    key_type: EntityTypeName,
    tenant_type: EntityTypeName,
    model_type: EntityTypeName,
    action_type: EntityTypeName,
}

/// Everything a decision depends on: key, tenant, role, action, target.
type DecisionKey = (String, String, String, Action, String);

/// Decisions kept: distinct (key, action, target) triples in use at once.
const DECISIONS_KEPT: usize = 16_384;

fn type_name(s: &str) -> Result<EntityTypeName, AuthzError> {
    EntityTypeName::from_str(s).map_err(|e| AuthzError::Schema(e.to_string()))
}

impl Authorizer {
    /// The default policies plus the operator's (`extra`: source name and text), validated.
    pub fn new(extra: Option<(&str, &str)>) -> Result<Self, AuthzError> {
        let (schema, _) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| AuthzError::Schema(e.to_string()))?;
        let mut text = DEFAULT_POLICIES.to_string();
        let mut source_name = "the default policies".to_string();
        if let Some((name, src)) = extra {
            text.push('\n');
            text.push_str(src);
            source_name = name.to_string();
        }
        let policies = PolicySet::from_str(&text).map_err(|e| AuthzError::Parse {
            source_name,
            message: format!("{e:?}").chars().take(2000).collect(),
        })?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(AuthzError::Invalid(errors.join("; ")));
        }
        Ok(Self {
            decided: quick_cache::sync::Cache::new(DECISIONS_KEPT),
            policies,
            schema,
            cedar: CedarAuthorizer::new(),
            key_type: type_name("Enclave::Key")?,
            tenant_type: type_name("Enclave::Tenant")?,
            model_type: type_name("Enclave::Model")?,
            action_type: type_name("Enclave::Action")?,
        })
    }

    /// Whether `who` may do `action` on `target`: the model for a model call, else the tenant
    /// (or [`ALL_TENANTS`]). Any error, in building the request or in evaluating a policy, is a
    /// deny.
    pub fn is_allowed(&self, who: Subject<'_>, action: Action, target: &str) -> bool {
        let key = (
            who.key_id.to_string(),
            who.tenant.to_string(),
            who.role.to_string(),
            action,
            target.to_string(),
        );
        if let Some(allowed) = self.decided.get(&key) {
            return allowed;
        }
        let allowed = self.decide(who, action, target).unwrap_or(false);
        self.decided.insert(key, allowed);
        allowed
    }

    fn decide(&self, who: Subject<'_>, action: Action, target: &str) -> Option<bool> {
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let tenant = uid(&self.tenant_type, who.tenant);
        let key = uid(&self.key_type, who.key_id);
        let mut entities = vec![
            Entity::new_no_attrs(tenant.clone(), HashSet::new()),
            Entity::new(
                key.clone(),
                HashMap::from([(
                    "role".to_string(),
                    RestrictedExpression::new_string(who.role.to_string()),
                )]),
                HashSet::from([tenant]),
            )
            .ok()?,
        ];
        let resource = match action.kind() {
            Some(kind) => {
                let model = uid(&self.model_type, target);
                entities.push(
                    Entity::new(
                        model.clone(),
                        HashMap::from([(
                            "kind".to_string(),
                            RestrictedExpression::new_string(kind.to_string()),
                        )]),
                        HashSet::new(),
                    )
                    .ok()?,
                );
                model
            }
            None => {
                let acted_on = uid(&self.tenant_type, target);
                if target != who.tenant {
                    entities.push(Entity::new_no_attrs(acted_on.clone(), HashSet::new()));
                }
                acted_on
            }
        };
        let entities = Entities::from_entities(entities, Some(&self.schema)).ok()?;
        let request = Request::new(
            key,
            uid(&self.action_type, action.id()),
            resource,
            Context::empty(),
            Some(&self.schema),
        )
        .ok()?;
        let response = self
            .cedar
            .is_authorized(&request, &self.policies, &entities);
        if response.diagnostics().errors().next().is_some() {
            return Some(false);
        }
        Some(response.decision() == Decision::Allow)
    }

    /// How many policies are in force.
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(role: &'a str, tenant: &'a str) -> Subject<'a> {
        Subject {
            key_id: "k1",
            tenant,
            role,
        }
    }

    #[test]
    fn defaults_let_users_and_admins_call_models_but_not_auditors() {
        let a = Authorizer::new(None).unwrap();
        assert!(a.is_allowed(who("user", "t"), Action::Chat, "m"));
        assert!(a.is_allowed(who("admin", "t"), Action::Embed, "m"));
        assert!(!a.is_allowed(who("auditor", "t"), Action::Chat, "m"));
    }

    #[test]
    fn remembered_decisions_are_the_ones_cedar_makes() {
        // A policy naming one key and one model: every part of the subject and target matters.
        let a = Authorizer::new(Some((
            "ops.cedar",
            r#"forbid (principal == Enclave::Key::"k2", action == Enclave::Action::"chat", resource == Enclave::Model::"big");"#,
        )))
        .unwrap();
        let k = |key_id, role, tenant| Subject {
            key_id,
            tenant,
            role,
        };
        for _ in 0..3 {
            assert!(a.is_allowed(k("k1", "user", "t"), Action::Chat, "big"));
            assert!(!a.is_allowed(k("k2", "user", "t"), Action::Chat, "big"));
            assert!(a.is_allowed(k("k2", "user", "t"), Action::Chat, "small"));
            assert!(a.is_allowed(k("k2", "user", "t"), Action::Embed, "big"));
            assert!(!a.is_allowed(k("k1", "auditor", "t"), Action::Chat, "big"));
            assert!(a.is_allowed(k("k1", "admin", "t"), Action::ReadAudit, "t"));
            assert!(!a.is_allowed(k("k1", "admin", "u"), Action::ReadAudit, "t"));
        }
    }

    #[test]
    fn defaults_keep_every_role_rule_of_the_platform() {
        let a = Authorizer::new(None).unwrap();
        let may = |role, action, target| a.is_allowed(who(role, "t"), action, target);
        use Action::*;
        // Knowledge bases: admins create; users and admins read and write; only their own.
        assert!(may("admin", CreateKnowledgeBase, "t"));
        assert!(!may("user", CreateKnowledgeBase, "t"));
        assert!(!may("admin", CreateKnowledgeBase, "other"));
        for role in ["user", "admin"] {
            assert!(may(role, ReadKnowledgeBases, "t") && may(role, WriteKnowledgeBases, "t"));
            assert!(!may(role, ReadKnowledgeBases, "other"));
        }
        assert!(!may("auditor", ReadKnowledgeBases, "t"));
        // The audit trail: auditors everywhere, admins their own tenant, users nowhere.
        assert!(may("auditor", ReadAudit, ALL_TENANTS) && may("auditor", ReadAudit, "other"));
        assert!(may("admin", ReadAudit, "t"));
        assert!(!may("admin", ReadAudit, "other") && !may("admin", ReadAudit, ALL_TENANTS));
        assert!(!may("user", ReadAudit, "t"));
        // Usage: every key its own tenant; auditors any, or all.
        for role in ["user", "admin", "auditor"] {
            assert!(may(role, ReadUsage, "t"));
        }
        assert!(!may("admin", ReadUsage, "other") && !may("user", ReadUsage, ALL_TENANTS));
        assert!(may("auditor", ReadUsage, "other") && may("auditor", ReadUsage, ALL_TENANTS));
    }

    #[test]
    fn operators_narrow_tenant_actions_too() {
        let extra = r#"forbid (principal, action == Enclave::Action::"knowledge_bases.write", resource) when { principal.role == "user" };"#;
        let a = Authorizer::new(Some(("ops.cedar", extra))).unwrap();
        assert!(!a.is_allowed(who("user", "t"), Action::WriteKnowledgeBases, "t"));
        assert!(a.is_allowed(who("user", "t"), Action::ReadKnowledgeBases, "t"));
        assert!(a.is_allowed(who("admin", "t"), Action::WriteKnowledgeBases, "t"));
    }

    #[test]
    fn operator_policies_narrow_per_tenant_and_model() {
        let extra = r#"forbid (principal in Enclave::Tenant::"fraud", action == Enclave::Action::"chat", resource == Enclave::Model::"big");"#;
        let a = Authorizer::new(Some(("ops.cedar", extra))).unwrap();
        assert!(!a.is_allowed(who("user", "fraud"), Action::Chat, "big"));
        assert!(a.is_allowed(who("user", "fraud"), Action::Chat, "small"));
        assert!(a.is_allowed(who("user", "other"), Action::Chat, "big"));
    }

    #[test]
    fn invalid_policies_stop_start_up() {
        let typo = r#"permit (principal, action, resource) when { principal.rolle == "user" };"#;
        let e = Authorizer::new(Some(("ops.cedar", typo))).unwrap_err();
        assert!(matches!(e, AuthzError::Invalid(_)), "{e}");
        let syntax = "permit (principal action resource);";
        let e = Authorizer::new(Some(("ops.cedar", syntax))).unwrap_err();
        assert!(e.to_string().contains("ops.cedar"), "{e}");
    }

    #[test]
    fn an_erroring_policy_denies() {
        // Strict validation rejects most errors up front; an integer overflow is only caught at
        // evaluation, where Cedar would skip the forbid and allow. Here it denies instead.
        let extra = r#"
            permit (principal, action, resource) when { principal.role == "auditor" };
            forbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };
        "#;
        let a = Authorizer::new(Some(("ops.cedar", extra))).unwrap();
        assert!(!a.is_allowed(who("auditor", "t"), Action::Chat, "m"));
    }
}
