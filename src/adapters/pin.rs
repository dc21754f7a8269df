//! Trusting one certificate by its SHA-256 thumbprint, as vCenter, ovftool and govc do.
//!
//! A cell's self-signed certificate made the usual way (`openssl req -x509`) is marked as a CA,
//! and webpki refuses a CA certificate as the server's own (`CaUsedAsEndEntity`), so a CA file
//! cannot trust it. A pin can: the server's end-entity certificate must hash to it. The pin
//! replaces the chain and the name check (the thumbprint names one certificate, which is more
//! than either says) but not the handshake signature: without that check anyone who has copied
//! the public certificate could present it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    pub fn of(der: &[u8]) -> Thumbprint {
        Thumbprint(Sha256::digest(der).into())
    }
}

/// Colon-separated upper-case hex: what vCenter shows and `openssl x509 -fingerprint` prints,
/// so an operator can compare it by eye.
impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbprintError {
    #[error(
        "{0} hex digits, but a SHA-256 thumbprint has 64 (as `openssl x509 -noout -fingerprint -sha256` prints it)"
    )]
    Length(usize),
    #[error("{0:?} is not a hex digit (a SHA-256 thumbprint is 64 hex digits, colons allowed)")]
    NotHex(char),
}

/// Hex in any case, with or without colons (or the spaces some viewers print); the whole
/// `sha256 Fingerprint=…` line of `openssl x509 -fingerprint` is taken as well, since that is
/// what gets pasted.
impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    fn from_str(s: &str) -> Result<Thumbprint, ThumbprintError> {
        let s = s.trim();
        let s = match s.split_once('=') {
            Some((label, rest)) if label.trim().to_ascii_lowercase().ends_with("fingerprint") => rest,
            _ => s,
        };
        let mut digits = Vec::with_capacity(64);
        for c in s.chars().filter(|c| *c != ':' && !c.is_whitespace()) {
            let d = c.to_digit(16).ok_or(ThumbprintError::NotHex(c))?;
            digits.push(u8::try_from(d).expect("a hex digit fits a byte"));
        }
        if digits.len() != 64 {
            return Err(ThumbprintError::Length(digits.len()));
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *o = (pair[0] << 4) | pair[1];
        }
        Ok(Thumbprint(out))
    }
}

/// A pin and the setting it came from, so a mismatch can say what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub thumbprint: Thumbprint,
    /// e.g. "--api-cert-sha256 (CELLCTL_API_CERT_SHA256, [api] cert_sha256)".
    pub setting: &'static str,
}

/// The server's certificate is not the pinned one: says which it was, and where to pin it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's certificate has SHA-256 fingerprint {presented}, not the pinned {pinned}; if that is the right certificate, set {setting} to {presented}"
)]
pub struct Mismatch {
    pub presented: Thumbprint,
    pub pinned: Thumbprint,
    pub setting: &'static str,
}

#[derive(Debug)]
pub struct PinVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub fn new(pin: Pin, provider: Arc<CryptoProvider>) -> PinVerifier {
        PinVerifier { pin, provider }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Thumbprint::of(end_entity.as_ref());
        if presented == self.pin.thumbprint {
            return Ok(ServerCertVerified::assertion());
        }
        // As a certificate error (not a general one), so the server gets the bad_certificate alert.
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(Mismatch {
                presented,
                pinned: self.pin.thumbprint,
                setting: self.pin.setting,
            }),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3f5a0c1d2e4b6a798877665544332211ffeeddccbbaa99887766554433221100";

    #[test]
    fn thumbprints_parse_as_operators_paste_them() {
        let t: Thumbprint = HEX.parse().unwrap();
        let colons = t.to_string();
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert!(
            colons.starts_with("3F:5A:0C:1D:") && colons.ends_with(":11:00"),
            "{colons}"
        );
        for form in [
            colons.clone(),
            colons.to_lowercase(),
            HEX.to_uppercase(),
            format!("  {HEX}\n"),
            format!("sha256 Fingerprint={colons}"),
            format!("SHA256 Fingerprint={colons}"),
            colons.replace(':', " "),
        ] {
            assert_eq!(form.parse::<Thumbprint>(), Ok(t), "{form:?}");
        }
    }

    #[test]
    fn bad_thumbprints_say_why() {
        assert_eq!("".parse::<Thumbprint>(), Err(ThumbprintError::Length(0)));
        assert_eq!(HEX[..40].parse::<Thumbprint>(), Err(ThumbprintError::Length(40)));
        // A SHA-1 thumbprint (what older tools print) is too short, not silently accepted.
        let sha1 = "AB:".repeat(19) + "AB";
        assert_eq!(sha1.parse::<Thumbprint>(), Err(ThumbprintError::Length(40)));
        assert_eq!(
            format!("{HEX}00").parse::<Thumbprint>(),
            Err(ThumbprintError::Length(66))
        );
        let e = format!("{}g", &HEX[..63]).parse::<Thumbprint>().unwrap_err();
        assert_eq!(e, ThumbprintError::NotHex('g'));
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(matches!(
            "sha1=AB".parse::<Thumbprint>(),
            Err(ThumbprintError::NotHex('s'))
        ));
    }

    #[test]
    fn thumbprint_is_the_sha256_of_the_der() {
        // printf abc | sha256sum
        assert_eq!(
            Thumbprint::of(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                .parse()
                .unwrap()
        );
    }

    #[test]
    fn a_mismatch_names_the_presented_fingerprint_and_the_setting() {
        let pinned: Thumbprint = HEX.parse().unwrap();
        let v = PinVerifier::new(
            Pin {
                thumbprint: pinned,
                setting: "--api-cert-sha256",
            },
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let cert = CertificateDer::from(b"abc".to_vec());
        let e = v
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .unwrap_err()
            .to_string();
        let presented = Thumbprint::of(b"abc").to_string();
        assert!(e.contains(&presented) && e.contains("--api-cert-sha256"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let pinned_abc = PinVerifier::new(
            Pin {
                thumbprint: Thumbprint::of(b"abc"),
                setting: "x",
            },
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        assert!(
            pinned_abc
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert!(!v.supported_verify_schemes().is_empty());
    }
}
