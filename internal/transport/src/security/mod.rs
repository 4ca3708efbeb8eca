//! Who may speak as a peer: TLS certificates that name node ids, a cluster secret proved by
//! challenge–response, and the handshake that checks them before a Hello counts.

pub mod certs;
pub(crate) mod handshake;
pub mod secret;
pub mod tls;

use std::sync::Arc;

pub use secret::ClusterSecret;
pub use tls::{NodeTls, TlsFiles};

/// A node's peer authentication. Empty (the default) is insecure: any connection that says
/// Hello speaks as the node it names.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS on the node's port (peers and clients), with certificates that name node ids.
    pub tls: Option<Arc<NodeTls>>,
    /// Both ends of every peer connection prove they know it.
    pub secret: Option<ClusterSecret>,
}

impl Security {
    /// Whether peers are authenticated at all.
    pub fn authenticates_peers(&self) -> bool {
        self.tls.is_some() || self.secret.is_some()
    }
}
