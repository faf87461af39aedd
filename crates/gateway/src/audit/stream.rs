//! A streamed answer's record, written when the stream ends: its real token counts, the label
//! its text reached, the SHA-256 of every byte the client was sent, and how it ended — complete
//! (200), cut by the backend (the status and code of the error event it ended with), or cut by
//! the client going away (499 `client_closed_request`).

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::Response;
use enclave_audit::{OpenCall, Record};
use futures::StreamExt as _;
use sha2::{Digest, Sha256};

use super::Outcome;
use crate::AppState;

/// Content kept for a tenant whose policy keeps it beyond this many bytes of answer is cut.
const KEEP_AT_MOST: usize = 64 << 20;

/// `response`'s body, passed on as it is, whose end closes the call `open` with its record.
pub(super) fn audited(
    state: AppState,
    response: Response,
    open: OpenCall,
    record: Record,
    started: Instant,
    outcome: Outcome,
    keep: Option<(String, Bytes)>,
) -> Response {
    let (parts, body) = response.into_parts();
    let mut data = body.into_data_stream();
    let mut closing = Closing {
        state,
        open: Some(open),
        record,
        started,
        outcome,
        digest: Sha256::new(),
        sent: 0,
        keep: keep.map(|(tenant, request)| (tenant, request, Vec::new())),
    };
    let stream = async_stream::stream! {
        while let Some(frame) = data.next().await {
            match frame {
                Ok(bytes) => {
                    closing.sent(&bytes);
                    yield Ok::<_, axum::Error>(bytes);
                }
                Err(e) => {
                    tracing::error!(error = %e, "a streamed answer's body failed");
                    if let Some(durable) = closing.close(Some((500, "internal_error", e.to_string()))) {
                        durable.await;
                    }
                    yield Err(e);
                    return;
                }
            }
        }
        // The body ends (the client sees its end) once the record is durable.
        if let Some(durable) = closing.close(None) {
            durable.await;
        }
    };
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The end of one streamed call: closes its record however the stream ends, and when the body
/// is dropped unfinished (the client went away), from `Drop`.
struct Closing {
    state: AppState,
    open: Option<OpenCall>,
    /// The record as the stream started; completed at the end.
    record: Record,
    started: Instant,
    outcome: Outcome,
    digest: Sha256,
    sent: u64,
    /// The tenant, request and answer bytes, for a tenant whose policy keeps content.
    keep: Option<(String, Bytes, Vec<u8>)>,
}

impl Closing {
    fn sent(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.sent += bytes.len() as u64;
        if let Some((_, _, kept)) = self.keep.as_mut()
            && kept.len() + bytes.len() <= KEEP_AT_MOST
        {
            kept.extend_from_slice(bytes);
        }
    }

    /// Writes the call's record: `failure` overrides how the answer said it ended. The record
    /// is handed to the log at once; the future waits for it to be durable and reports.
    fn close(
        &mut self,
        failure: Option<(u16, &'static str, String)>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let open = self.open.take()?;
        let ended = self.outcome.get();
        let mut record = std::mem::take(&mut self.record);
        record.prompt_tokens = ended.prompt_tokens;
        record.completion_tokens = ended.completion_tokens;
        record.answer_findings = super::counts(&ended.answer_findings);
        if record.answer_label.is_some()
            && let Some(label) = ended.answer_label
        {
            record.answer_label = Some(label);
        }
        let failure = failure.or_else(|| {
            ended.failure.map(|e| {
                let status = crate::error::status(&e).0.as_u16();
                (status, e.code(), e.to_string())
            })
        });
        if let Some((status, code, detail)) = failure {
            record.status = status;
            record.code = Some(code.to_string());
            record.detail = Some(detail);
        }
        record.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        record.response_sha256 = Some(hex::encode(std::mem::take(&mut self.digest).finalize()));
        let durable = open.close(&record);
        let state = self.state.clone();
        let keep = self.keep.take();
        Some(async move {
            match durable.await {
                Ok(index) => {
                    super::recorded(index);
                    if let Some((tenant, request, answer)) = keep {
                        super::seal(&state, tenant, index, &request, Some(&answer)).await;
                    }
                }
                Err(e) => {
                    metrics::counter!("enclave_audit_failures_total").increment(1);
                    tracing::error!(error = %e, "a streamed answer's record is not durable");
                }
            }
        })
    }
}

impl Drop for Closing {
    /// The body was dropped unfinished: the client went away. The record goes to the log at
    /// once; a task of its own reports how it went.
    fn drop(&mut self) {
        if self.open.is_none() {
            return;
        }
        let detail = format!(
            "the client went away part-way through the streamed answer, after {} bytes",
            self.sent
        );
        if let Some(durable) = self.close(Some((499, "client_closed_request", detail)))
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(durable);
        }
    }
}
