//! TLS for every listener: the operator's certificate, or a self-signed one generated on first
//! start so that STARTTLS works out of the box.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("generating a certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Loads `cert`/`key`, or, when they are not given, the self-signed pair in `data_dir`
/// (creating it for `hostname` if missing).
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => {
            let c = data_dir.join("tls-cert.pem");
            let k = data_dir.join("tls-key.pem");
            if !c.exists() || !k.exists() {
                generate_self_signed(&c, &k, hostname)?;
            }
            (c, k)
        }
    };
    let certs = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

fn generate_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsError> {
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    write_private(key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.cert.pem()).map_err(|e| file_err(cert, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no private key in the file"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        super::server_config(None, None, dir.path(), "mx.test").unwrap();
        let first = std::fs::read(dir.path().join("tls-cert.pem")).unwrap();
        super::server_config(None, None, dir.path(), "mx.test").unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join("tls-cert.pem")).unwrap()
        );
    }
}
