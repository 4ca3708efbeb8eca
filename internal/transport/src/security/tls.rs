//! TLS for a node's port and for the clients that connect to it: loading PEM files, building
//! rustls configurations, and tying a certificate to a node id.
//!
//! How a certificate names a node: it carries the DNS subject alternative name
//! `raftd-node-<id>` ([`node_name`]). A node checks that name on the certificate of every peer,
//! both ways: when it dials node 2 it accepts only a server certificate for `raftd-node-2`,
//! and a Hello that claims node 2 counts only if the client certificate of that connection names
//! `raftd-node-2`. Clients (raftctl) check the server's certificate against the address they
//! dialled (an IP or DNS SAN), as any TLS client does, so node certificates also carry their
//! addresses. Node certificates are used on both sides of a connection and need the extended
//! key usages serverAuth and clientAuth.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

/// Why TLS could not be set up. Each says which file to fix.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("the CA file {}: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("the certificate {} is not usable as node {node}'s: {reason} (it must be signed by the CA, be valid now, and name DNS:{})", path.display(), node_name(*node))]
    NotThisNode {
        path: PathBuf,
        node: u64,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The DNS subject alternative name that marks a certificate as node `id`'s.
pub fn node_name(id: u64) -> String {
    format!("raftd-node-{id}")
}

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A node's TLS: the server side of its port, and the client side of its connections to peers.
pub struct NodeTls {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) peer_client: Arc<ClientConfig>,
    pub(crate) client_cert_auth: bool,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("client_cert_auth", &self.client_cert_auth)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads node `id`'s certificate, key and CA. Fails (saying which file) unless the
    /// certificate chains to the CA, is valid now, and names this node, so a node never starts
    /// with a certificate its peers would refuse. With `client_cert_auth`, clients must present a
    /// certificate from the CA too; without, they may connect with none (peers always need one).
    pub fn load(files: &TlsFiles, id: u64, client_cert_auth: bool) -> Result<NodeTls, TlsError> {
        let provider = provider();
        let roots = Arc::new(load_roots(&files.ca)?);
        let chain = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;

        let not_this_node = |reason: String| TlsError::NotThisNode {
            path: files.cert.clone(),
            node: id,
            reason,
        };
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: files.ca.clone(),
                    reason: e.to_string(),
                })?;
        let name = ServerName::try_from(node_name(id)).map_err(|e| not_this_node(e.to_string()))?;
        server_verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map_err(|e| not_this_node(e.to_string()))?;

        let client_verifier = {
            let b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            // Peers are held to their certificate when they say Hello (see `names_node`);
            // without --client-cert-auth a client may come without one.
            let b = if client_cert_auth {
                b
            } else {
                b.allow_unauthenticated()
            };
            b.build().map_err(|e| TlsError::BadCa {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?
        };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.key.display())))?;
        let peer_client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.key.display())))?;
        Ok(NodeTls {
            server: Arc::new(server),
            peer_client: Arc::new(peer_client),
            client_cert_auth,
        })
    }

    /// Whether clients must present a certificate from the CA.
    /// The server side of the node's TLS, for another listener of the same node (its HTTP
    /// port) to serve with the same certificate and client-certificate rule.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    pub fn client_cert_auth(&self) -> bool {
        self.client_cert_auth
    }
}

/// The TLS settings of a client (raftctl, the client library, the benchmark): the CA that signs
/// the nodes' certificates and, for nodes started with `--client-cert-auth`, the client's own
/// certificate and key.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", key.display())))?,
    };
    Ok(Arc::new(config))
}

/// Whether `cert` (already verified against the CA by the handshake) names node `id`.
pub fn names_node(cert: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&name).is_ok(),
        Err(_) => false,
    }
}

/// ring, chosen explicitly rather than through rustls's process-wide default, so that no other
/// crate's feature choice can change (or break) it.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
