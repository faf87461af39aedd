//! Who is at the other end of a connection, as the handlers see it (axum's connect info): the
//! address, over plain TCP and over TLS alike.

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};

use crate::client_auth::ClientIdentity;

#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate the TLS handshake verified, and who it names.
    pub client: Option<std::sync::Arc<ClientIdentity>>,
}

/// Plain TCP, with Nagle's algorithm off: small writes (SSE chunks) leave at once.
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            client: None,
        }
    }
}
