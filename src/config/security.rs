//! The security flags: TLS files, the cluster secret, `--client-cert-auth` and `--insecure`,
//! and the rule that a node reachable from other machines authenticates its peers.

use super::ConfigError;
use raftd_transport::security::secret::SecretError;
use raftd_transport::security::tls::TlsError;
use raftd_transport::{ClusterSecret, NodeTls, Security, TlsFiles};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The security settings as given (validated, files not read yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `--tls-cert`, `--tls-key`, `--tls-ca`: all three or none.
    pub tls: Option<TlsFiles>,
    /// `--client-cert-auth`: clients must present a certificate from the CA (needs TLS).
    pub client_cert_auth: bool,
    /// `--cluster-secret-file`.
    pub cluster_secret_file: Option<PathBuf>,
    /// `--insecure`: allow a non-loopback listen address without TLS or a secret.
    pub insecure: bool,
}

/// Why the security settings were refused or their files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("--tls-cert, --tls-key and --tls-ca go together; missing {0}")]
    IncompleteTls(&'static str),
    #[error("--client-cert-auth needs TLS (--tls-cert, --tls-key, --tls-ca)")]
    ClientAuthWithoutTls,
    #[error("refusing to listen on {0} without peer authentication: give --cluster-secret-file FILE or --tls-cert/--tls-key/--tls-ca, or --insecure to accept that anyone who can reach the port can act as a member")]
    Unauthenticated(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl SecurityConfig {
    /// Checks the flags against each other and the listen address.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        client_cert_auth: bool,
        cluster_secret_file: Option<PathBuf>,
        insecure: bool,
        listen: SocketAddr,
    ) -> Result<SecurityConfig, ConfigError> {
        let tls = match (cert, key, ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            (cert, key, _) => {
                let missing = if cert.is_none() {
                    "--tls-cert"
                } else if key.is_none() {
                    "--tls-key"
                } else {
                    "--tls-ca"
                };
                return Err(SecurityError::IncompleteTls(missing).into());
            }
        };
        if client_cert_auth && tls.is_none() {
            return Err(SecurityError::ClientAuthWithoutTls.into());
        }
        let cfg = SecurityConfig {
            tls,
            client_cert_auth,
            cluster_secret_file,
            insecure,
        };
        if !cfg.authenticates_peers() && !insecure && !listen.ip().is_loopback() {
            return Err(SecurityError::Unauthenticated(listen).into());
        }
        Ok(cfg)
    }

    pub fn authenticates_peers(&self) -> bool {
        self.tls.is_some() || self.cluster_secret_file.is_some()
    }

    /// Reads the certificate, key, CA and secret files; fails naming the file to fix.
    pub fn load(&self, id: u64) -> Result<Security, ConfigError> {
        let tls = match &self.tls {
            Some(files) => Some(Arc::new(
                NodeTls::load(files, id, self.client_cert_auth).map_err(SecurityError::from)?,
            )),
            None => None,
        };
        let secret = match &self.cluster_secret_file {
            Some(path) => {
                warn_if_readable_by_others(path);
                Some(ClusterSecret::load(path).map_err(SecurityError::from)?)
            }
            None => None,
        };
        Ok(Security { tls, secret })
    }
}

/// A secret others can read is no secret; say so (as ssh does) but start anyway, since the
/// operator may have reasons (a container whose only user is the node).
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                ::log::warn!(
                    "the cluster secret {} is readable by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
