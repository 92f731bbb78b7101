//! The ports a test runtime serves when asked (ingress, admin API, public webhook listener):
//! bound once at build and kept across restarts, so their addresses never change.

use std::net::{SocketAddr, TcpListener};

use super::TestRuntimeError;
use crate::runtime::Port;

/// The sockets of the ports asked for.
#[derive(Default)]
pub(super) struct Ports {
    pub(super) ingress: Option<TcpListener>,
    pub(super) admin: Option<TcpListener>,
    pub(super) webhooks: Option<TcpListener>,
}

impl Ports {
    /// Binds each address given (port 0: a free one).
    pub(super) fn bind(
        ingress: Option<SocketAddr>,
        admin: Option<SocketAddr>,
        webhooks: Option<SocketAddr>,
    ) -> Result<Self, TestRuntimeError> {
        let bind = |addr: Option<SocketAddr>| {
            addr.map(|addr| {
                TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(TestRuntimeError::Listen)
            })
            .transpose()
        };
        Ok(Self {
            ingress: bind(ingress)?,
            admin: bind(admin)?,
            webhooks: bind(webhooks)?,
        })
    }

    /// The ports that are open, with their sockets.
    pub(super) fn open(&self) -> impl Iterator<Item = (Port, &TcpListener)> {
        [
            (Port::Ingress, &self.ingress),
            (Port::Admin, &self.admin),
            (Port::Webhooks, &self.webhooks),
        ]
        .into_iter()
        .filter_map(|(port, listener)| Some((port, listener.as_ref()?)))
    }

    /// `http://<address>` of one port, when it is open.
    pub(super) fn url(&self, port: Port) -> Option<String> {
        let (_, listener) = self.open().find(|(open, _)| *open == port)?;
        Some(format!("http://{}", listener.local_addr().ok()?))
    }
}
