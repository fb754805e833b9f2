//! The TLS listener's server identity, from the manifest's PEM files.

use anyhow::{Context, bail};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// An acceptor for `cert` (chain, leaf first) and `key`. Errors name the
/// manifest key and the file, since a wrong path is the usual mistake.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let read = |key_path: &str, file: &Path| {
        std::fs::read(file)
            .with_context(|| format!("broker.tls.{key_path}: cannot read {}", file.display()))
    };
    let chain = rustls_pemfile::certs(&mut &read("cert", cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("broker.tls.cert: {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "broker.tls.cert: {} has no CERTIFICATE block",
            cert.display()
        );
    }
    let private_key = rustls_pemfile::private_key(&mut &read("key", key)?[..])
        .with_context(|| format!("broker.tls.key: {} is not PEM", key.display()))?
        .with_context(|| format!("broker.tls.key: {} has no private key block", key.display()))?;
    // The provider is named here rather than installed process-wide.
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("broker.tls: no TLS version in common with the crypto provider")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "broker.tls: {} and {} do not make a server identity",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
