//! `enclave-mock-upstream`: the fault-injecting model server, as its own process (benchmarks,
//! manual tests). `--listen ADDR` (default 127.0.0.1:0), `--delay-ms N` before every answer.
//! Prints `listening on http://ADDR` once bound.

use std::net::SocketAddr;
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: enclave-mock-upstream [--listen 127.0.0.1:0] [--delay-ms 0]\n\
         A model server speaking OpenAI chat completions and Anthropic Messages at\n\
         http://ADDR/{{scenario}}/v1 (scenarios: ok, slow-MS, stall, stall-mid, status-CODE,\n\
         fail-N-CODE, close, bad-sse, bad-sse-mid, marked, personal, agent); GET /stats\n\
         reports counters."
    );
    std::process::exit(2)
}

fn main() {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => listen = v,
                None => usage(),
            },
            "--delay-ms" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => delay = Duration::from_millis(v),
                None => usage(),
            },
            _ => usage(),
        }
    }
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the runtime");
        std::process::exit(1)
    };
    rt.block_on(async {
        match enclave_mock_upstream::MockUpstream::bind(listen, delay).await {
            Ok(m) => {
                eprintln!("listening on http://{}", m.addr);
                std::future::pending::<()>().await;
            }
            Err(e) => {
                eprintln!("cannot listen on {listen}: {e}");
                std::process::exit(1)
            }
        }
    });
}
