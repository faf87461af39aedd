//! Metrics the request path records through the `metrics` facade (the gateway installs the
//! Prometheus recorder and renders them).

/// A gauge held up while a value lives: `new` adds one, dropping subtracts it.
pub struct Live(&'static str);

impl Live {
    pub fn new(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Counts tokens in and out of a model.
pub fn tokens(model: &str, prompt: u32, completion: u32) {
    let model = model.to_string();
    metrics::counter!("enclave_tokens_total", "model" => model.clone(), "direction" => "in")
        .increment(u64::from(prompt));
    metrics::counter!("enclave_tokens_total", "model" => model, "direction" => "out")
        .increment(u64::from(completion));
}
