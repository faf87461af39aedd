//! Who may call what, as Cedar policies validated against a schema in strict mode.
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
"#;

/// What is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Chat,
    Embed,
}

impl Action {
    fn id(self) -> &'static str {
        match self {
            Action::Chat => "chat",
            Action::Embed => "embed",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Action::Chat => "chat",
            Action::Embed => "embedding",
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
    policies: PolicySet,
    schema: Schema,
    cedar: CedarAuthorizer,
    key_type: EntityTypeName,
    tenant_type: EntityTypeName,
    model_type: EntityTypeName,
    action_type: EntityTypeName,
}

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
            policies,
            schema,
            cedar: CedarAuthorizer::new(),
            key_type: type_name("Enclave::Key")?,
            tenant_type: type_name("Enclave::Tenant")?,
            model_type: type_name("Enclave::Model")?,
            action_type: type_name("Enclave::Action")?,
        })
    }

    /// Whether `who` may do `action` on `model`. Any error, in building the request or in
    /// evaluating a policy, is a deny.
    pub fn is_allowed(&self, who: Subject<'_>, action: Action, model: &str) -> bool {
        self.decide(who, action, model).unwrap_or(false)
    }

    fn decide(&self, who: Subject<'_>, action: Action, model: &str) -> Option<bool> {
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let tenant = uid(&self.tenant_type, who.tenant);
        let key = uid(&self.key_type, who.key_id);
        let resource = uid(&self.model_type, model);
        let entities = [
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
            Entity::new(
                resource.clone(),
                HashMap::from([(
                    "kind".to_string(),
                    RestrictedExpression::new_string(action.kind().to_string()),
                )]),
                HashSet::new(),
            )
            .ok()?,
        ];
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
