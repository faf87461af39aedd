//! Stored responses of the Responses API: per tenant, at the label their answer reached. A
//! response is read (or continued with `previous_response_id`) only by its tenant and only while
//! the reader's clearance dominates its label; anyone else is told there is no such response.
//! A continuation is admitted no lower than the label it continues, so a context never falls.

use enclave_label::Label;
use enclave_store::StoredResponse;
use serde_json::Value;

use crate::Service;
use crate::error::Error;
use crate::principal::Principal;

/// A stored response, as its reader may see it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub label: Label,
    /// Every item the model saw and wrote.
    pub context: Vec<Value>,
    /// The items that request sent.
    pub input: Vec<Value>,
    /// The response object.
    pub body: Value,
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "stored response failure");
    Error::Internal
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("there is no response `{id}`"))
}

/// Keeps a response made by `principal` at `label` (a banner the service computed).
pub async fn save(
    state: &Service,
    principal: &Principal,
    id: &str,
    label: &str,
    (context, input, body): (&[Value], &[Value], &Value),
) -> Result<(), Error> {
    state
        .store
        .create_response(&StoredResponse {
            id: id.to_string(),
            tenant_id: principal.tenant_id.clone(),
            key_id: principal.key_id.clone(),
            label: label.to_string(),
            context: Value::from(context.to_vec()).to_string(),
            input: Value::from(input.to_vec()).to_string(),
            body: body.to_string(),
            created_at: enclave_store::now(),
        })
        .await
        .map_err(store_error)
}

/// The response `id`, if `principal` may read it.
pub async fn load(state: &Service, principal: &Principal, id: &str) -> Result<Stored, Error> {
    let r = state
        .store
        .response(id)
        .await
        .map_err(store_error)?
        .filter(|r| r.tenant_id == principal.tenant_id)
        .ok_or_else(|| not_found(id))?;
    let label = state
        .policy
        .scheme
        .parse(&r.label)
        .map_err(|_| not_found(id))?;
    let clearance = crate::monitor::clearance(&state.policy, principal)?;
    if !clearance.dominates(&label) {
        return Err(not_found(id));
    }
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|_| Error::Internal);
    let array = |v: Value| match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    Ok(Stored {
        label,
        context: array(parse(&r.context)?),
        input: array(parse(&r.input)?),
        body: parse(&r.body)?,
    })
}

/// Deletes a response `principal` may read.
pub async fn delete(state: &Service, principal: &Principal, id: &str) -> Result<(), Error> {
    load(state, principal, id).await?;
    if state.store.delete_response(id).await.map_err(store_error)? {
        Ok(())
    } else {
        Err(not_found(id))
    }
}
