//! MCP servers for agent tests: the repository's `tests/mcp/server.py` (the official `mcp`
//! package) with a folder of documents and a sink that counts what writing tools sent.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Python with the `mcp` package: `ENCLAVE_TEST_PYTHON`, else the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ENCLAVE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn server_script() -> String {
    root().join("tests/mcp/server.py").display().to_string()
}

/// A folder with the documents the `fetch` tool serves and the sink writing tools append to.
pub struct Tools {
    pub dir: tempfile::TempDir,
}

impl Tools {
    pub fn new(docs: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docs.json"), docs.to_string()).unwrap();
        Self { dir }
    }

    /// The stdio command of a server named `name`, reading these documents.
    pub fn command(&self, name: &str) -> Value {
        let p = self.dir.path();
        json!([
            "env",
            format!("MCP_NAME={name}"),
            format!("MCP_DOCS={}", p.join("docs.json").display()),
            format!("MCP_SINK={}", p.join("sink.jsonl").display()),
            python().display().to_string(),
            server_script(),
            "stdio",
        ])
    }

    /// Every call a writing tool received.
    pub fn sent(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("sink.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub fn mcp(server: &str, tools: &[&str], approval: &str) -> Value {
    json!({"type": "mcp", "server_label": server, "allowed_tools": tools, "require_approval": approval})
}
