//! TLS for Backstop's own SQL session, with libpq's `sslmode` meanings so that the session and
//! `pg_dump`/`pg_restore` (which get the same `PGSSLMODE`/`PGSSLROOTCERT`) behave alike:
//!
//! | sslmode | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | when the server offers it | none |
//! | `require` | always | none, or as `verify-ca` when `sslrootcert` is given |
//! | `verify-ca` | always | chain to `sslrootcert` (or the system roots) |
//! | `verify-full` | always | chain and host name |
//!
//! RDS for PostgreSQL 15+ refuses plaintext by default (`rds.force_ssl`); give
//! `sslmode=verify-full&sslrootcert=/path/to/global-bundle.pem` for full verification.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::error::Error;

pub use crate::model::run::{strictness, SSLMODES};

/// How the session should use TLS.
pub struct TlsPlan {
    pub mode: SslMode,
    pub connector: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The plan for an `sslmode` (None = libpq's default, `prefer`) and optional root certificate.
pub fn plan(sslmode: Option<&str>, rootcert: Option<&Path>) -> Result<TlsPlan, Error> {
    let check = match (sslmode.unwrap_or("prefer"), rootcert) {
        ("disable", _) => {
            return Ok(TlsPlan {
                mode: SslMode::Disable,
                connector: None,
            })
        }
        ("allow" | "prefer", _) => Check::None,
        ("require", None) => Check::None,
        ("require" | "verify-ca", _) => Check::Chain,
        ("verify-full", _) => Check::Full,
        (other, _) => {
            return Err(Error::InvalidInput(format!(
                "sslmode {other:?}: use disable, allow, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    let mode = match sslmode.unwrap_or("prefer") {
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidInput(format!("TLS set-up: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::None => Arc::new(NoCheck(provider)),
        Check::Chain | Check::Full => {
            let roots = Arc::new(roots(rootcert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::InvalidInput(format!("TLS root certificates: {e}")))?;
            if matches!(check, Check::Full) {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(TlsPlan {
        mode,
        connector: Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
    })
}

enum Check {
    None,
    Chain,
    Full,
}

pub(crate) fn roots(rootcert: Option<&Path>) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match rootcert {
        Some(path) => {
            let bad =
                |why: String| Error::InvalidInput(format!("sslrootcert {}: {why}", path.display()));
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                store
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(bad("no certificate in the file".to_string()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

/// `require`/`prefer` without a root certificate: encrypted, the certificate is not checked
/// (libpq does the same); the handshake signature still is.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_map_like_libpq() {
        assert!(plan(Some("disable"), None).unwrap().connector.is_none());
        assert_eq!(plan(None, None).unwrap().mode, SslMode::Prefer);
        assert_eq!(
            plan(Some("verify-full"), None).unwrap().mode,
            SslMode::Require
        );
        assert_eq!(
            plan(Some("sometimes"), None).err().map(|e| e.error_type()),
            Some("InvalidInput")
        );
        let missing = plan(Some("verify-ca"), Some(Path::new("/nonexistent/root.crt")));
        assert_eq!(missing.err().map(|e| e.error_type()), Some("InvalidInput"));
    }
}
