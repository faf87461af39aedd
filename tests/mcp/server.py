"""An MCP server for Enclave's agent tests, written with the official `mcp` package.

    python server.py stdio          # MCP over standard input and output
    python server.py http PORT      # MCP streamable HTTP on 127.0.0.1:PORT/mcp

Its tools read documents from the JSON file MCP_DOCS ({name: text}), write every call of a
writing tool as one JSON line to MCP_SINK (the tests count what was sent out), and misbehave
on request: hang, crash, answer with garbage or with a result far over any sane size.
"""

import json
import os
import sys

import anyio

from mcp.server.mcpserver import MCPServer

server = MCPServer(os.environ.get("MCP_NAME", "enclave-test-tools"))


def _sink(record):
    path = os.environ.get("MCP_SINK")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@server.tool()
def fetch(name: str) -> str:
    """Returns the document called `name`."""
    path = os.environ.get("MCP_DOCS")
    docs = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            docs = json.load(f)
    return docs.get(name, f"There is no document named {name}.")


@server.tool()
def send_email(to: str, body: str) -> str:
    """Sends an e-mail to `to` with `body`."""
    _sink({"server": server.name, "tool": "send_email", "to": to, "body": body})
    return f"Sent to {to}."


@server.tool()
def write_note(text: str) -> str:
    """Files a note."""
    _sink({"server": server.name, "tool": "write_note", "text": text})
    return "Filed."


@server.tool()
def upload(data: str) -> str:
    """Uploads `data` to an outside service."""
    _sink({"server": server.name, "tool": "upload", "data": data})
    return "Uploaded."


@server.tool()
async def sleep(seconds: float) -> str:
    """Waits `seconds` before answering; a call cancelled meanwhile is noted in the sink."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _sink({"server": server.name, "tool": "sleep", "cancelled": True})
        raise
    return "Slept."


@server.tool()
def crash() -> str:
    """Ends the server's process at once."""
    os._exit(3)


@server.tool()
def huge(megabytes: int) -> str:
    """Returns a result of `megabytes` MB."""
    return "x" * (megabytes * 1024 * 1024)


@server.tool()
def garbage() -> str:
    """Writes lines that are not MCP messages to its output (over stdio), then answers."""
    os.write(1, b'this is not JSON-RPC\n{"jsonrpc": "2.0", "id": "nobody", "result": 42}\n')
    return "Answered after garbage."


@server.tool()
def fail() -> str:
    """Fails with an error whose message quotes what it was reading."""
    raise RuntimeError("(S) the failing tool was reading this")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
