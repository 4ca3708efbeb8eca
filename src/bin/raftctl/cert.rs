//! `raftctl cert`: the certificates a TLS cluster needs, without openssl.
//!
//! ```text
//! raftctl cert ca --dir certs                       # certs/ca.pem, certs/ca-key.pem
//! raftctl cert node 1 --dir certs [--host IP|NAME]  # certs/node-1.pem, certs/node-1-key.pem
//! raftctl cert client alice --dir certs             # certs/alice.pem, certs/alice-key.pem
//! ```
//! Node certificates name `raftd-node-<ID>` (which peers check) and each `--host` (which
//! clients check; default 127.0.0.1 and localhost). Keys are written with mode 0600 and no file
//! is ever overwritten: to rotate, make new files elsewhere and restart each node on them.

use clap::Subcommand;
use raftd_transport::security::certs::{Ca, Issued, Validity};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// A new certificate authority: DIR/ca.pem and DIR/ca-key.pem.
    Ca {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Node ID's certificate, signed by DIR's CA: DIR/node-ID.pem and DIR/node-ID-key.pem.
    Node {
        id: u64,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// An address or DNS name clients use for this node (repeatable).
        #[arg(long = "host", value_name = "IP|NAME", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// A client certificate (for --client-cert-auth), signed by DIR's CA: DIR/NAME.pem and
    /// DIR/NAME-key.pem.
    Client {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

pub fn run(cmd: &CertCmd) -> ExitCode {
    match make(cmd) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftctl cert: {e}");
            ExitCode::from(2)
        }
    }
}

fn make(cmd: &CertCmd) -> Result<Vec<PathBuf>, String> {
    match cmd {
        CertCmd::Ca { dir, days } => {
            let ca =
                Ca::generate("raftd cluster CA", validity(*days)?).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let issued = Issued {
                cert_pem: ca.cert_pem().to_string(),
                key_pem: ca.key_pem().to_string(),
            };
            write_pair(dir, "ca", &issued)
        }
        CertCmd::Node {
            id,
            dir,
            hosts,
            days,
        } => {
            if *id == 0 {
                return Err("node ids are positive integers".into());
            }
            let issued = load_ca(dir)?
                .node(*id, hosts, validity(*days)?)
                .map_err(|e| e.to_string())?;
            write_pair(dir, &format!("node-{id}"), &issued)
        }
        CertCmd::Client { name, dir, days } => {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(format!("{name:?} cannot be a file name"));
            }
            let issued = load_ca(dir)?
                .client(name, validity(*days)?)
                .map_err(|e| e.to_string())?;
            write_pair(dir, name, &issued)
        }
    }
}

fn validity(days: i64) -> Result<Validity, String> {
    if !(1..=36500).contains(&days) {
        return Err("--days must be between 1 and 36500".into());
    }
    Ok(Validity::days(days))
}

fn load_ca(dir: &Path) -> Result<Ca, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (make a CA first: raftctl cert ca --dir {})",
                path.display(),
                dir.display()
            )
        })
    };
    Ca::load(&read("ca.pem")?, &read("ca-key.pem")?).map_err(|e| e.to_string())
}

/// Writes NAME.pem and NAME-key.pem (the key readable by its owner only), never replacing a file.
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> Result<Vec<PathBuf>, String> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(format!(
                "{} exists; not replacing it (to rotate, write new files to another --dir)",
                path.display()
            ));
        }
    }
    write_new(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_new(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    Ok(vec![cert, key])
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
