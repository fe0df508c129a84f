//! The project's own certificate authority for TLS on the leaf links: the hub presents a server
//! certificate it signed, and every site's leaf server verifies it against the CA certificate in
//! its bundle, so the WAN carries nothing in the clear and a site dials only the real hub.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::AuthError;

const CA_NAME: &str = "edge orchestrator leaf-link CA";
/// The CA lives ten years, a hub certificate two (re-issue with `edgectl auth tls`).
const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 730;

fn tls_err(e: rcgen::Error) -> AuthError {
    AuthError::Invalid(format!("certificate: {e}"))
}

/// The CA's parameters: the same every time, so that the CA can sign again from its stored key.
fn ca_params() -> Result<CertificateParams, AuthError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(CA_DAYS);
    Ok(p)
}

/// Makes the CA (`ca.pem`, and `ca.key` mode 0600) in `dir` unless it is there.
pub fn ensure_ca(dir: &Path) -> Result<PathBuf, AuthError> {
    let cert = dir.join("ca.pem");
    if cert.exists() {
        return Ok(cert);
    }
    let key = KeyPair::generate().map_err(tls_err)?;
    let ca = ca_params()?.self_signed(&key).map_err(tls_err)?;
    crate::authority::write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
    crate::authority::write(&cert, &ca.pem(), false)?;
    Ok(cert)
}

/// A server certificate and its key, signed by the CA in `dir`, for the hub's leafnode
/// listener, valid for `names` (DNS names or IP addresses the sites dial). Written to
/// `<dir>/hub.pem` and `<dir>/hub.key` (0600).
pub fn issue_server(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), AuthError> {
    if names.is_empty() {
        return Err(AuthError::Invalid("a hub certificate needs at least one name the sites dial".into()));
    }
    ensure_ca(dir)?;
    let ca_key_pem = std::fs::read_to_string(dir.join("ca.key"))
        .map_err(|source| AuthError::Io { path: dir.join("ca.key"), source })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.distinguished_name.push(DnType::CommonName, names[0].clone());
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into().map_err(tls_err)?),
        });
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(SERVER_DAYS);
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = p.signed_by(&key, &issuer).map_err(tls_err)?;
    let (cert_path, key_path) = (dir.join("hub.pem"), dir.join("hub.key"));
    crate::authority::write(&key_path, &key.serialize_pem(), true)?;
    crate::authority::write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_signs_server_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ensure_ca(dir.path()).unwrap();
        let first = std::fs::read_to_string(&ca).unwrap();
        ensure_ca(dir.path()).unwrap();
        assert_eq!(first, std::fs::read_to_string(&ca).unwrap(), "an existing CA is kept");
        let (cert, key) = issue_server(dir.path(), &["hub".into(), "127.0.0.1".into()]).unwrap();
        assert!(std::fs::read_to_string(cert).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [key, dir.path().join("ca.key")] {
                assert_eq!(std::fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        assert!(issue_server(dir.path(), &[]).is_err());
    }
}
