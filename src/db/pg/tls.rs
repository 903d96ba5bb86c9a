//! TLS to PostgreSQL, with libpq's `sslmode` words (rustls through
//! `tokio-postgres-rustls`):
//!
//! - `disable`: plain TCP;
//! - `prefer` (the default) and `require`: TLS when the server offers it
//!   (`require`: or no connection), the certificate not checked, as libpq
//!   does without a root certificate: safe from eavesdroppers, not from a
//!   server that pretends;
//! - `verify-ca`: the certificate must chain to a trusted root;
//! - `verify-full`: that, and it must name the host connected to.
//!
//! Trusted roots are the PEM certificates of `sslrootcert=PATH`, else (or with
//! `sslrootcert=system`) the Mozilla roots built in. tokio-postgres knows
//! only the first three words and no `sslrootcert`, so [`split`] takes
//! them out of the URL before it is given the rest.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// The TLS words of a URL, taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub verify: Verify,
    /// `sslrootcert`: a PEM file; `None` for the built-in roots.
    pub roots: Option<PathBuf>,
    /// `verify-ca` and `verify-full` require TLS.
    pub require: bool,
}

/// Splits `url` into what tokio-postgres reads and the TLS settings. A
/// connection string of `key=value` words is left whole (tokio-postgres
/// reads its `sslmode`; the verifying modes need the URL form).
pub fn split(url: &str) -> Result<(String, Settings), String> {
    let mut settings = Settings {
        verify: Verify::Nothing,
        roots: None,
        require: false,
    };
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Ok((url.to_owned(), settings));
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Ok((url.to_owned(), settings));
    }
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("sslmode", "verify-ca") => {
                settings.verify = Verify::Chain;
                settings.require = true;
            }
            ("sslmode", "verify-full") => {
                settings.verify = Verify::ChainAndName;
                settings.require = true;
            }
            ("sslrootcert", "system") => settings.roots = None,
            ("sslrootcert", path) => settings.roots = Some(PathBuf::from(path)),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.into(), settings))
}

/// The connector for `settings`.
pub fn connector(settings: &Settings) -> Result<MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &settings.roots {
        None => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert: cannot read {shown}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {shown} holds no PEM certificate"));
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match settings.verify {
        Verify::ChainAndName => builder.with_webpki_verifier(webpki),
        verify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { webpki, verify })),
    };
    Ok(MakeRustlsConnect::new(config.with_no_client_auth()))
}

/// The web PKI's checks, fewer of them: none of the certificate for
/// `prefer` and `require` (`Verify::Nothing`), all but the name for
/// `verify-ca` (`Verify::Chain`). The handshake's signatures are always
/// checked.
#[derive(Debug)]
struct Lenient {
    webpki: Arc<WebPkiServerVerifier>,
    verify: Verify,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.verify == Verify::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_keeps_what_tokio_postgres_reads() {
        let (url, s) =
            split("postgres://u:p%40w@db.example:5432/t?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(
            url,
            "postgres://u:p%40w@db.example:5432/t?application_name=x"
        );
        assert_eq!(
            s,
            Settings {
                verify: Verify::ChainAndName,
                roots: Some("/etc/ca.pem".into()),
                require: true
            }
        );
        let (url, s) = split("postgresql://db/t?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(url, "postgresql://db/t");
        assert_eq!((s.verify, s.roots, s.require), (Verify::Chain, None, true));
        for plain in [
            "postgres://db/t?sslmode=require",
            "postgres://db/t",
            "host=db sslmode=disable",
        ] {
            let (url, s) = split(plain).unwrap();
            assert_eq!(url, plain);
            assert_eq!((s.verify, s.require), (Verify::Nothing, false));
        }
    }

    #[test]
    fn connectors_are_built_for_each_mode() {
        for verify in [Verify::Nothing, Verify::Chain, Verify::ChainAndName] {
            let s = Settings {
                verify,
                roots: None,
                require: false,
            };
            assert!(connector(&s).is_ok(), "{verify:?}");
        }
        let missing = Settings {
            verify: Verify::ChainAndName,
            roots: Some("/nonexistent/ca.pem".into()),
            require: true,
        };
        let e = connector(&missing).err().unwrap();
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
