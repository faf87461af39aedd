//! Reading a verified token's claims as its issuer's configuration says: which claim (a dotted
//! path) holds the user, the tenant, the role or the groups that give one, and the clearance.

use std::collections::BTreeMap;
use std::str::FromStr;

use enclave_service::token::TokenClaims;
use enclave_store::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[identity.issuers.claims]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMap {
    /// The claim naming the person or program (`sub`, `preferred_username`, `upn`).
    pub user: String,
    /// The claim naming the tenant.
    pub tenant: Option<String>,
    /// The tenant of every token of this issuer, when no claim names it.
    pub tenant_value: Option<String>,
    /// The claim holding the clearance, as a label of the scheme (`SECRET//NOFORN`). Tokens
    /// without it are refused.
    pub clearance: String,
    /// The claim holding a role (`user`, `admin`, `auditor`).
    pub role: Option<String>,
    /// The claim holding a list of groups, read through `roles`.
    pub groups: Option<String>,
    /// Group → role; the first of the token's groups named here gives the role.
    pub roles: BTreeMap<String, String>,
    /// The claim holding the person's compartments: a list, or one space-separated string.
    pub compartments: Option<String>,
    /// Group → compartment: each of the token's groups named here adds its compartment.
    pub group_compartments: BTreeMap<String, String>,
    /// The claim holding the person's citizenship(s) as ISO 3166 trigraphs (`USA`, `GBR`): what
    /// they may read by releasability. When named, a token without it is refused; when not, the
    /// scheme's owner nation is assumed.
    pub citizenship: Option<String>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            user: "sub".into(),
            tenant: None,
            tenant_value: None,
            clearance: "clearance".into(),
            role: None,
            groups: None,
            roles: BTreeMap::new(),
            compartments: None,
            group_compartments: BTreeMap::new(),
            citizenship: None,
        }
    }
}

/// The value at a dotted path (`realm_access.roles`).
fn at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// The strings a claim holds: a list's, or a string's words.
fn list(claims: &Value, path: &str) -> Vec<String> {
    match at(claims, path) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl ClaimMap {
    /// Refuses a map that cannot produce a tenant or names roles that do not exist.
    pub fn check(&self) -> Result<(), String> {
        if self.tenant.is_none() && self.tenant_value.is_none() {
            return Err("[claims] needs `tenant` (a claim) or `tenant_value` (fixed)".into());
        }
        for (group, role) in &self.roles {
            Role::from_str(role).map_err(|_| {
                format!("[claims.roles] `{group}` = `{role}`: roles are user, admin and auditor")
            })?;
        }
        Ok(())
    }

    /// The user `claims` name, as [`ClaimMap::read`] would find it (nothing else checked).
    pub(crate) fn user_of(&self, claims: &Value) -> Option<String> {
        match at(claims, &self.user) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        }
    }

    pub(crate) fn read(
        &self,
        issuer: &str,
        claims: &Value,
        expires_at: i64,
        verify_again_after: std::time::Duration,
    ) -> Result<TokenClaims, String> {
        let string = |path: &str| -> Result<String, String> {
            match at(claims, path) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Some(_) => Err(format!("its `{path}` claim is not a string")),
                None => Err(format!("it has no `{path}` claim")),
            }
        };
        let user = string(&self.user)?;
        let tenant = match (&self.tenant, &self.tenant_value) {
            (Some(path), _) => string(path)?,
            (None, Some(fixed)) => fixed.clone(),
            (None, None) => return Err("the issuer's claim map names no tenant".into()),
        };
        let clearance = string(&self.clearance)?;
        let role = match &self.role {
            Some(path) => {
                let text = string(path)?;
                Role::from_str(&text)
                    .map_err(|_| format!("its `{path}` claim `{text}` is not a role"))?
            }
            None => self.role_from_groups(claims)?,
        };
        let mut compartments: Vec<String> = match &self.compartments {
            Some(path) => list(claims, path),
            None => Vec::new(),
        };
        if let Some(path) = &self.groups {
            compartments.extend(
                list(claims, path)
                    .iter()
                    .filter_map(|g| self.group_compartments.get(g).cloned()),
            );
        }
        compartments.sort();
        compartments.dedup();
        let citizenship = match &self.citizenship {
            Some(path) => {
                let nations = list(claims, path);
                if nations.is_empty() {
                    return Err(format!("it has no `{path}` claim"));
                }
                if let Some(bad) = nations
                    .iter()
                    .find(|n| n.len() != 3 || !n.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    return Err(format!(
                        "its `{path}` claim `{bad}` is not an ISO 3166 trigraph (USA, GBR, ...)"
                    ));
                }
                Some(nations)
            }
            None => None,
        };
        Ok(TokenClaims {
            issuer: issuer.to_string(),
            user,
            tenant,
            role,
            clearance,
            compartments,
            citizenship,
            expires_at,
            verify_again_after,
        })
    }

    fn role_from_groups(&self, claims: &Value) -> Result<Role, String> {
        let Some(path) = &self.groups else {
            return Ok(Role::User);
        };
        let groups = match at(claims, path) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        Ok(groups
            .iter()
            .find_map(|g| self.roles.get(*g))
            .and_then(|r| Role::from_str(r).ok())
            .unwrap_or(Role::User))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    fn map() -> ClaimMap {
        ClaimMap {
            tenant: Some("org.tenant".into()),
            groups: Some("groups".into()),
            roles: [("enclave-admins".to_string(), "admin".to_string())].into(),
            ..ClaimMap::default()
        }
    }

    #[test]
    fn claims_are_read_at_dotted_paths_and_groups_give_roles() {
        let claims = json!({
            "sub": "alice", "org": {"tenant": "default"}, "clearance": "SECRET",
            "groups": ["staff", "enclave-admins"]
        });
        let read = map()
            .read("https://idp", &claims, 10, SECOND)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                read.user.as_str(),
                read.tenant.as_str(),
                read.role,
                read.clearance.as_str()
            ),
            ("alice", "default", Role::Admin, "SECRET")
        );
        let staff = json!({"sub": "bob", "org": {"tenant": "default"}, "clearance": "U", "groups": ["staff"]});
        assert_eq!(
            map().read("i", &staff, 0, SECOND).map(|c| c.role),
            Ok(Role::User)
        );
    }

    #[test]
    fn compartments_come_from_a_claim_and_from_groups_and_citizenship_is_checked() {
        let mut m = map();
        m.compartments = Some("sci".into());
        m.group_compartments = [("sigint-cell".to_string(), "SI".to_string())].into();
        m.citizenship = Some("nations".into());
        let claims = json!({
            "sub": "dave", "org": {"tenant": "d"}, "clearance": "SECRET",
            "sci": "TK G", "groups": ["sigint-cell", "staff"], "nations": ["GBR", "USA"]
        });
        let read = m
            .read("i", &claims, 0, SECOND)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.compartments, ["G", "SI", "TK"]);
        assert_eq!(read.citizenship, Some(vec!["GBR".into(), "USA".into()]));
        let stateless = json!({"sub": "x", "org": {"tenant": "d"}, "clearance": "S"});
        assert_eq!(
            m.read("i", &stateless, 0, SECOND).map(|c| c.user),
            Err("it has no `nations` claim".to_string()),
            "a configured citizenship claim is required"
        );
        let lowercase =
            json!({"sub": "x", "org": {"tenant": "d"}, "clearance": "S", "nations": "gbr"});
        assert!(m.read("i", &lowercase, 0, SECOND).is_err());
    }

    #[test]
    fn a_missing_or_malformed_claim_is_a_refusal_not_a_default() {
        let no_clearance = json!({"sub": "alice", "org": {"tenant": "default"}});
        assert_eq!(
            map().read("i", &no_clearance, 0, SECOND).map(|c| c.user),
            Err("it has no `clearance` claim".to_string())
        );
        let number = json!({"sub": "alice", "org": {"tenant": "default"}, "clearance": 3});
        assert!(map().read("i", &number, 0, SECOND).is_err());
        let mut with_role = map();
        with_role.role = Some("role".into());
        let bad_role =
            json!({"sub": "a", "org": {"tenant": "d"}, "clearance": "U", "role": "root"});
        assert!(with_role.read("i", &bad_role, 0, SECOND).is_err());
        assert!(ClaimMap::default().check().is_err(), "no tenant source");
    }
}
