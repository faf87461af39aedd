//! An embeddings call from admission to its vectors, whichever caller made it: admit (label,
//! clearance, authorize, route, redact), reserve quota, dispatch, settle and meter.

use enclave_engine::EmbedInput;

use crate::Service;
use crate::dispatch::{self, UpstreamClock};
use crate::error::Error;
use crate::info::EnclaveInfo;
use crate::monitor::{self, Declared};
use crate::note::CallNote;
use crate::policy::ModelKind;
use crate::principal::Principal;

/// Embeddings as a deployment gave them, with what the answer says about itself.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the inputs took.
    pub tokens: u32,
    pub info: EnclaveInfo,
}

/// Embeds `inputs` with `model` for `principal`. `dimensions` asks for shorter vectors, where
/// the model can give them; a model that cannot is refused after the fact (nothing is charged).
#[allow(clippy::too_many_arguments, reason = "each is one input of the call")]
pub async fn embed(
    state: &Service,
    principal: &Principal,
    declared: Option<&Declared>,
    model: &str,
    inputs: Vec<EmbedInput>,
    dimensions: Option<u32>,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Embedded, Error> {
    // Token ids are inspected as the text they stand for; before the model loads, there is no
    // vocabulary to decode them with.
    let decoder = state.models.embedding.get().cloned();
    let mut texts: Vec<String> = Vec::with_capacity(inputs.len());
    for input in &inputs {
        texts.push(match input {
            EmbedInput::Text(s) => s.clone(),
            EmbedInput::Tokens(ids) => match &decoder {
                Some(engine) => engine.decode(ids),
                None => return Err(Error::ModelLoading(model.to_string())),
            },
        });
    }
    let mut admitted = monitor::noted(
        monitor::admit(
            &state.policy,
            principal,
            ModelKind::Embedding,
            model,
            declared,
            None,
            &mut texts,
            false,
        ),
        &mut note.decision,
    )?;
    let estimate: u64 = texts.iter().map(|t| (t.len() as u64).div_ceil(4) + 2).sum();
    let ticket = state
        .quotas
        .reserve(&state.policy, principal, model, estimate)
        .await?;
    tracing::debug!(tenant = %principal.tenant_name, inputs = inputs.len(), "embeddings");
    let redacted = admitted.redacted.as_ref().map(|(t, _)| t.clone());
    let work = dispatch::Work::Embed {
        inputs: &inputs,
        plain: &texts,
        redacted: redacted.as_deref(),
        dimensions,
    };
    let dispatched = dispatch::embed(state, &admitted.routes, &work, &mut note.attempts, clock)
        .await
        .and_then(|(out, index)| {
            admitted.serve(index);
            note.decision = Some(admitted.decision.clone());
            match (dimensions, out.vectors.first()) {
                (Some(d), Some(v)) if v.len() != d as usize => Err(Error::unsupported(
                    "dimensions",
                    format!(
                        "`{model}` gives {} dimensions and cannot be shortened to {d}",
                        v.len()
                    ),
                )),
                _ => Ok(out),
            }
        });
    let (out, ticket) = ticket.unless_refused(dispatched).await?;
    let tokens = u32::try_from(out.tokens).unwrap_or(u32::MAX);
    ticket.settle(tokens, 0).await;
    crate::telemetry::tokens(model, tokens, 0);
    note.outcome.tokens(u64::from(tokens), 0);
    Ok(Embedded {
        vectors: out.vectors,
        tokens,
        info: admitted.info,
    })
}
