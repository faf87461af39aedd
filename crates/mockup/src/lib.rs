//! A model server for tests and benchmarks: speaks OpenAI's chat completions and Anthropic's
//! Messages API (streamed and not, with tool calls), and fails on request.
//!
//! The first path segment picks the behaviour: `http://ADDR/{scenario}/v1`, as an upstream's
//! `base_url`. Scenarios: `ok` (or any name starting `ok`, to tell deployments apart),
//! `slow-MS` (wait before answering), `stall` (never answer), `stall-mid` (stream two tokens,
//! then stall), `status-CODE` (answer that HTTP error), `fail-N-CODE` (the first N requests get
//! CODE, then `ok`), `close` (close the connection without answering), `bad-sse` (a malformed
//! first event), `bad-sse-mid` (two good tokens, then a malformed event), `marked` (the answer
//! opens with a US `(S)` portion mark the request did not carry, as a model quoting what it saw
//! would write), `personal` (the answer opens with an e-mail address and an IBAN the request did
//! not carry), `agent` (or `agent-NAME`; obeys every `CALL name {json}` line it reads, anywhere in the
//! conversation, one call per turn: the prompt-injected model agents must be safe against).
//!
//! HTTP/1.1 is spoken by hand over Tokio sockets (with `httparse` for request heads) because
//! the faults need what a server framework hides: closing mid-request, stalling with the
//! socket open, counting connections and noticing the moment a client goes away.
//! `GET /stats` (and [`MockUpstream::stats`]) report connections, requests in flight, cancelled
//! requests, tokens served and the last request body. Test support: never part of a server.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Counters of what the mock has seen.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub requests: AtomicU64,
    pub inflight: AtomicU64,
    /// Requests whose client went away before the answer was complete.
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    by_scenario: Mutex<HashMap<String, u64>>,
    last_request: Mutex<Option<Value>>,
}

impl Stats {
    /// Everything as JSON, as `GET /stats` answers.
    pub fn snapshot(&self) -> Value {
        let by = self
            .by_scenario
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let last = self
            .last_request
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        json!({
            "connections_open": self.connections_open.load(Relaxed),
            "connections_total": self.connections_total.load(Relaxed),
            "requests": self.requests.load(Relaxed),
            "inflight": self.inflight.load(Relaxed),
            "cancelled": self.cancelled.load(Relaxed),
            "prompt_tokens": self.prompt_tokens.load(Relaxed),
            "completion_tokens": self.completion_tokens.load(Relaxed),
            "by_scenario": by,
            "last_request": last,
        })
    }

    fn count(&self, scenario: &str) -> u64 {
        let mut m = match self.by_scenario.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        let n = m.entry(scenario.to_string()).or_default();
        *n += 1;
        *n
    }
}

/// A running mock server.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Serves on `addr` (port 0 picks one); every answer waits `delay` first.
    pub async fn bind(addr: SocketAddr, delay: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                tokio::spawn(connection(sock, Arc::clone(&s), delay));
            }
        });
        Ok(Self { addr, stats, task })
    }

    /// On loopback, any free port.
    pub async fn start() -> io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), Duration::ZERO).await
    }

    /// The `base_url` of a scenario.
    pub fn url(&self, scenario: &str) -> String {
        format!("http://{}/{scenario}/v1", self.addr)
    }

    pub fn stats(&self) -> Value {
        self.stats.snapshot()
    }
}

struct Open(Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

struct Inflight(Arc<Stats>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// One connection: requests one after another (keep-alive) until either side closes.
async fn connection(mut sock: TcpStream, stats: Arc<Stats>, delay: Duration) {
    stats.connections_open.fetch_add(1, Relaxed);
    stats.connections_total.fetch_add(1, Relaxed);
    let _open = Open(Arc::clone(&stats));
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let (head, method, path, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let length = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (
                        n,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        length,
                    );
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            if read_more(&mut sock, &mut buf).await == 0 {
                return;
            }
        };
        while buf.len() < head + length {
            if read_more(&mut sock, &mut buf).await == 0 {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head + length).skip(head).collect();
        stats.requests.fetch_add(1, Relaxed);
        stats.inflight.fetch_add(1, Relaxed);
        let inflight = Inflight(Arc::clone(&stats));
        let keep = respond(&mut sock, &stats, delay, &method, &path, &body).await;
        drop(inflight);
        if !keep {
            return;
        }
    }
}

async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    match sock.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// Waits until the client closes the connection.
async fn until_closed(sock: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = sock.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

/// Sleeps `d`, or returns false early when the client goes away.
async fn pause(sock: &mut TcpStream, stats: &Stats, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = until_closed(sock) => {
            stats.cancelled.fetch_add(1, Relaxed);
            false
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    Ok,
    Slow(u64),
    Stall,
    StallMid,
    Status(u16),
    FailThen(u64, u16),
    Close,
    BadSse,
    BadSseMid,
    Marked,
    Personal,
    Agent,
}

fn scenario(name: &str) -> Option<Scenario> {
    let parts: Vec<&str> = name.split('-').collect();
    Some(match parts.as_slice() {
        [first, ..] if first.starts_with("ok") => Scenario::Ok,
        ["slow", ms] => Scenario::Slow(ms.parse().ok()?),
        ["stall"] => Scenario::Stall,
        ["stall", "mid"] => Scenario::StallMid,
        ["status", code] => Scenario::Status(code.parse().ok()?),
        ["fail", n, code] => Scenario::FailThen(n.parse().ok()?, code.parse().ok()?),
        ["close"] => Scenario::Close,
        ["bad", "sse"] => Scenario::BadSse,
        ["bad", "sse", "mid"] => Scenario::BadSseMid,
        ["marked"] => Scenario::Marked,
        ["personal"] => Scenario::Personal,
        ["agent", ..] => Scenario::Agent,
        _ => return None,
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn write_json(sock: &mut TcpStream, code: u16, body: &Value, extra: &str) -> bool {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
        reason(code),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    sock.write_all(&out).await.is_ok()
}

/// One SSE event as a chunk of a chunked body.
fn chunk(event: Option<&str>, data: &str) -> Vec<u8> {
    let mut payload = String::new();
    if let Some(e) = event {
        payload.push_str("event: ");
        payload.push_str(e);
        payload.push('\n');
    }
    payload.push_str("data: ");
    payload.push_str(data);
    payload.push_str("\n\n");
    let mut out = format!("{:x}\r\n", payload.len()).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// What the mock will answer to a request.
struct Plan {
    words: Vec<String>,
    /// Which call of the conversation this is (1 for the first): call ids differ by it.
    call: usize,
    tool: Option<(String, String)>,
    prompt_tokens: u64,
    truncated: bool,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Echoes the last user text, or reports a tool's result; calls the first (or named) tool when
/// tools are offered and no result has come back yet. Tokens are words.
fn plan(req: &Value, anthropic: bool) -> Plan {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let mut prompt_tokens = text_of(&req["system"]).split_whitespace().count() as u64;
    let mut last_user = String::new();
    let mut tool_result = None;
    for m in &messages {
        prompt_tokens += 1 + text_of(&m["content"]).split_whitespace().count() as u64;
        match (m["role"].as_str(), anthropic) {
            (Some("user"), false) => {
                last_user = text_of(&m["content"]);
                tool_result = None;
            }
            (Some("tool"), false) => tool_result = Some(text_of(&m["content"])),
            (Some("user"), true) => {
                let blocks = m["content"].as_array().cloned().unwrap_or_default();
                let result = blocks
                    .iter()
                    .find(|b| b["type"] == "tool_result")
                    .map(|b| text_of(&b["content"]));
                tool_result = result;
                let t = text_of(&m["content"]);
                if !t.is_empty() {
                    last_user = t;
                }
            }
            _ => {}
        }
    }
    let tools = req["tools"].as_array().cloned().unwrap_or_default();
    let none = req["tool_choice"] == "none" || req["tool_choice"]["type"] == "none";
    let max = req["max_tokens"].as_u64().unwrap_or(16) as usize;
    if tool_result.is_none() && !tools.is_empty() && !none {
        let named = req["tool_choice"]["function"]["name"]
            .as_str()
            .or(req["tool_choice"]["name"].as_str());
        let first = if anthropic {
            tools[0]["name"].as_str()
        } else {
            tools[0]["function"]["name"].as_str()
        };
        let name = named.or(first).unwrap_or("tool").to_string();
        let args = json!({"query": last_user}).to_string();
        return Plan {
            words: vec![],
            call: 1,
            tool: Some((name, args)),
            prompt_tokens,
            truncated: false,
        };
    }
    let text = match tool_result {
        Some(r) => format!("The tool said: {r}"),
        None => format!("You said: {last_user}"),
    };
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let truncated = words.len() > max;
    words.truncate(max);
    Plan {
        words,
        call: 1,
        tool: None,
        prompt_tokens,
        truncated,
    }
}

/// The `agent` scenario: a model that obeys every instruction it reads, as the worst injected
/// model would. Each line `CALL name {json}` in any text of the conversation (system, user,
/// tool results) is an instruction; the model makes them in order, one call per turn, whether
/// or not the tool is offered, and when none is left answers with the last tool result.
fn obey(req: &Value, anthropic: bool) -> Plan {
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let mut texts = vec![text_of(&req["system"])];
    let mut made = 0usize;
    let mut last_result = None;
    for m in &messages {
        let blocks = m["content"].as_array().cloned().unwrap_or_default();
        made += m["tool_calls"].as_array().map_or(0, Vec::len);
        made += blocks.iter().filter(|b| b["type"] == "tool_use").count();
        for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
            let r = text_of(&b["content"]);
            texts.push(r.clone());
            last_result = Some(r);
        }
        // Its own words are not instructions to it.
        if m["role"] == "assistant" {
            continue;
        }
        let t = text_of(&m["content"]);
        if m["role"] == "tool" {
            last_result = Some(t.clone());
        }
        texts.push(t);
    }
    let _ = anthropic;
    let directives: Vec<(String, String)> = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|line| {
            let rest = &line[line.find("CALL ")? + 5..];
            let (name, args) = rest.trim().split_once(' ').unwrap_or((rest.trim(), "{}"));
            Some((name.to_string(), args.trim().to_string()))
        })
        .collect();
    let prompt_tokens = texts
        .iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum();
    if let Some((name, args)) = directives.get(made) {
        return Plan {
            words: vec![],
            call: made + 1,
            tool: Some((name.clone(), args.clone())),
            prompt_tokens,
            truncated: false,
        };
    }
    let text = match last_result {
        Some(r) => format!("Done. The tool said: {r}"),
        None => "Done.".to_string(),
    };
    let max = req["max_tokens"].as_u64().unwrap_or(64) as usize;
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let truncated = words.len() > max;
    words.truncate(max);
    Plan {
        words,
        call: made + 1,
        tool: None,
        prompt_tokens,
        truncated,
    }
}

/// `POST /v1/embeddings`: 8 numbers per input, from its bytes; a token is a word.
async fn embeddings(
    sock: &mut TcpStream,
    stats: &Arc<Stats>,
    delay: Duration,
    name: &str,
    body: &[u8],
) -> bool {
    let n = stats.count(name);
    let status = match scenario(name) {
        Some(Scenario::Status(code)) => Some(code),
        Some(Scenario::FailThen(k, code)) if n <= k => Some(code),
        Some(Scenario::Close) => return false,
        None => Some(404),
        _ => None,
    };
    if let Some(code) = status {
        let body =
            json!({"error": {"message": format!("mock failure {code}"), "type": "server_error"}});
        return write_json(sock, code, &body, "").await;
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return write_json(
            sock,
            400,
            &json!({"error": {"message": "body is not JSON"}}),
            "",
        )
        .await;
    };
    if let Ok(mut last) = stats.last_request.lock() {
        *last = Some(req.clone());
    }
    if !pause(sock, stats, delay).await {
        return false;
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect(),
        _ => vec![],
    };
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += text.split_whitespace().count() as u64;
            let mut v = [0f32; 8];
            for (j, b) in text.bytes().enumerate() {
                v[j % 8] += f32::from(b) / 255.0;
            }
            json!({"object": "embedding", "index": i, "embedding": v.to_vec()})
        })
        .collect();
    stats.prompt_tokens.fetch_add(tokens, Relaxed);
    let body = json!({"object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    write_json(sock, 200, &body, "").await
}

#[allow(
    clippy::too_many_lines,
    reason = "one match over the protocols and faults reads best whole"
)]
async fn respond(
    sock: &mut TcpStream,
    stats: &Arc<Stats>,
    delay: Duration,
    method: &str,
    path: &str,
    body: &[u8],
) -> bool {
    if method == "GET" && path == "/stats" {
        return write_json(sock, 200, &stats.snapshot(), "").await;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, rest) = match segments.as_slice() {
        ["v1", rest @ ..] => ("ok", rest),
        [name, "v1", rest @ ..] => (*name, rest),
        _ => {
            return write_json(
                sock,
                404,
                &json!({"error": {"message": "no such path"}}),
                "",
            )
            .await;
        }
    };
    let anthropic = match rest {
        ["chat", "completions"] => false,
        ["messages"] => true,
        ["embeddings"] => {
            return embeddings(sock, stats, delay, name, body).await;
        }
        _ => {
            return write_json(
                sock,
                404,
                &json!({"error": {"message": "no such path"}}),
                "",
            )
            .await;
        }
    };
    let Some(mut sc) = scenario(name) else {
        return write_json(
            sock,
            404,
            &json!({"error": {"message": "no such scenario"}}),
            "",
        )
        .await;
    };
    let n = stats.count(name);
    if let Scenario::FailThen(k, code) = sc {
        sc = if n <= k {
            Scenario::Status(code)
        } else {
            Scenario::Ok
        };
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return write_json(
            sock,
            400,
            &json!({"error": {"message": "body is not JSON"}}),
            "",
        )
        .await;
    };
    if let Ok(mut last) = stats.last_request.lock() {
        *last = Some(req.clone());
    }
    if !pause(sock, stats, delay).await {
        return false;
    }
    match sc {
        Scenario::Slow(ms) if !pause(sock, stats, Duration::from_millis(ms)).await => {
            return false;
        }
        Scenario::Stall => {
            until_closed(sock).await;
            stats.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        Scenario::Close => return false,
        Scenario::Status(code) => {
            let body = if anthropic {
                json!({"type": "error", "error": {"type": "api_error", "message": format!("mock failure {code}")}})
            } else {
                json!({"error": {"message": format!("mock failure {code}"), "type": "server_error"}})
            };
            let extra = if code == 429 {
                "retry-after: 0\r\n"
            } else {
                ""
            };
            return write_json(sock, code, &body, extra).await;
        }
        _ => {}
    }
    let mut p = if sc == Scenario::Agent {
        obey(&req, anthropic)
    } else {
        plan(&req, anthropic)
    };
    if sc == Scenario::Marked && p.tool.is_none() {
        let mark = ["(S)", "The", "source", "reports:"].map(str::to_string);
        p.words.splice(0..0, mark);
    }
    if sc == Scenario::Personal && p.tool.is_none() {
        let personal = "Write to jane.doe@example.org or pay DE89 3704 0044 0532 0130 00 and"
            .split(' ')
            .map(str::to_string);
        p.words.splice(0..0, personal);
    }
    let completion = if p.tool.is_some() {
        4
    } else {
        p.words.len() as u64
    };
    let stream = req["stream"].as_bool().unwrap_or(false);
    if !stream {
        stats.prompt_tokens.fetch_add(p.prompt_tokens, Relaxed);
        stats.completion_tokens.fetch_add(completion, Relaxed);
        let text = p.words.join(" ");
        let body = if anthropic {
            let mut content = vec![];
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            if let Some((name, args)) = &p.tool {
                let input: Value = serde_json::from_str(args).unwrap_or(Value::Null);
                content.push(
                    json!({"type": "tool_use", "id": format!("toolu_mock{}", p.call), "name": name, "input": input}),
                );
            }
            json!({
                "id": "msg_mock", "type": "message", "role": "assistant", "model": req["model"],
                "content": content,
                "stop_reason": if p.tool.is_some() { "tool_use" } else if p.truncated { "max_tokens" } else { "end_turn" },
                "stop_sequence": null,
                "usage": {"input_tokens": p.prompt_tokens, "output_tokens": completion},
            })
        } else {
            let mut message = json!({"role": "assistant", "content": text});
            if let Some((name, args)) = &p.tool {
                message["content"] = Value::Null;
                message["tool_calls"] = json!([{"id": format!("call_mock{}", p.call), "type": "function", "function": {"name": name, "arguments": args}}]);
            }
            json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": req["model"],
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if p.tool.is_some() { "tool_calls" } else if p.truncated { "length" } else { "stop" }}],
                "usage": {"prompt_tokens": p.prompt_tokens, "completion_tokens": completion, "total_tokens": p.prompt_tokens + completion},
            })
        };
        return write_json(sock, 200, &body, "").await;
    }
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut events: Vec<Vec<u8>> = Vec::new();
    if sc == Scenario::BadSse {
        events.push(chunk(None, "{this is not json"));
    } else if anthropic {
        events.push(chunk(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": req["model"], "content": [], "stop_reason": null, "usage": {"input_tokens": p.prompt_tokens, "output_tokens": 1}}}).to_string()));
        if let Some((name, args)) = &p.tool {
            events.push(chunk(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_mock{}", p.call), "name": name, "input": {}}}).to_string()));
            let (a, b) = args.split_at(args.len() / 2);
            for piece in [a, b] {
                events.push(chunk(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}).to_string()));
            }
        } else {
            events.push(chunk(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()));
            for (i, w) in p.words.iter().enumerate() {
                let t = if i == 0 { w.clone() } else { format!(" {w}") };
                events.push(chunk(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}).to_string()));
            }
        }
        events.push(chunk(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}).to_string(),
        ));
        let stop = if p.tool.is_some() {
            "tool_use"
        } else if p.truncated {
            "max_tokens"
        } else {
            "end_turn"
        };
        events.push(chunk(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": completion}}).to_string()));
        events.push(chunk(
            Some("message_stop"),
            &json!({"type": "message_stop"}).to_string(),
        ));
    } else {
        let base = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": req["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        events.push(chunk(
            None,
            &base(json!({"role": "assistant", "content": ""}), Value::Null),
        ));
        if let Some((name, args)) = &p.tool {
            events.push(chunk(None, &base(json!({"tool_calls": [{"index": 0, "id": format!("call_mock{}", p.call), "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null)));
            let (a, b) = args.split_at(args.len() / 2);
            for piece in [a, b] {
                events.push(chunk(
                    None,
                    &base(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ),
                ));
            }
        } else {
            for (i, w) in p.words.iter().enumerate() {
                let t = if i == 0 { w.clone() } else { format!(" {w}") };
                events.push(chunk(None, &base(json!({"content": t}), Value::Null)));
            }
        }
        let finish = if p.tool.is_some() {
            "tool_calls"
        } else if p.truncated {
            "length"
        } else {
            "stop"
        };
        events.push(chunk(None, &base(json!({}), json!(finish))));
        events.push(chunk(None, &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": req["model"], "choices": [],
            "usage": {"prompt_tokens": p.prompt_tokens, "completion_tokens": completion, "total_tokens": p.prompt_tokens + completion}}).to_string()));
        events.push(chunk(None, "[DONE]"));
    }
    // Faults mid-stream: after the opening event and two tokens.
    let cut = if anthropic { 4 } else { 3 };
    for (i, e) in events.iter().enumerate() {
        if i == cut && sc == Scenario::StallMid {
            until_closed(sock).await;
            stats.cancelled.fetch_add(1, Relaxed);
            return false;
        }
        if i == cut && sc == Scenario::BadSseMid {
            let _ = sock.write_all(&chunk(None, "{broken")).await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return true;
        }
        if sock.write_all(e).await.is_err() {
            stats.cancelled.fetch_add(1, Relaxed);
            return false;
        }
    }
    stats.prompt_tokens.fetch_add(p.prompt_tokens, Relaxed);
    stats.completion_tokens.fetch_add(completion, Relaxed);
    sock.write_all(b"0\r\n\r\n").await.is_ok()
}
