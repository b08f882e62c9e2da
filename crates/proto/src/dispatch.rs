//! Decoding a call, running it, encoding the reply (in progress).

use std::net::SocketAddr;
use vmshare_wire::rpc::CallHeader;
use vmshare_wire::Encoder;

/// Who is calling: the transport facts a backend needs for access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Peer address and port.
    pub addr: SocketAddr,
}

/// The ports advertised by the portmapper's GETPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ports {
    /// TCP port of NFS v3.
    pub nfs: u16,
    /// TCP port of MOUNT v3.
    pub mount: u16,
}

/// Runs calls against a backend.
#[derive(Debug)]
pub struct Dispatcher<B> {
    backend: B,
    ports: Ports,
}

impl<B> Dispatcher<B> {
    /// A dispatcher for `backend`, advertising `ports` through GETPORT.
    pub fn new(backend: B, ports: Ports) -> Self {
        Dispatcher { backend, ports }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Handles one parsed call: appends the complete RPC reply (header and
    /// results) to `out`. Every call gets a reply; garbage that is not even
    /// a call is filtered out earlier by `vmshare_wire::rpc::parse_call`.
    pub fn handle_call(&self, _client: &Client, call: &CallHeader<'_>, out: &mut Encoder) {
        let _ = (&self.ports, call);
        vmshare_wire::rpc::encode_reply_header(
            out,
            call.xid,
            vmshare_wire::ReplyBody::Accepted(vmshare_wire::AcceptStat::ProgUnavail),
        );
    }
}
