//! Node certificates bound to one Node object: besides `system:node:<name>`
//! in `system:nodes`, the certificate names the uid of the Node it was
//! issued for, as a URI in its subjectAltName
//! (`urn:skiff:node-uid:<uid>`). A Node deleted and created again under
//! the same name has another uid, so a certificate issued before the
//! deletion names a Node that no longer exists and the agent gateway
//! refuses it ([`crate::agents::membership`]).

use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};

use super::{Ca, Identity};

/// How the Node's uid is written in the certificate.
const URI_PREFIX: &str = "urn:skiff:node-uid:";

/// The most a node certificate is backdated by (for clocks a little
/// behind).
const MAX_BACKDATE: Duration = Duration::from_secs(300);

impl Ca {
    /// A client certificate for the key in `csr_pem`, for node `name`
    /// whose Node object has uid `node_uid`, valid for `validity`.
    /// Whatever the request asks for, the certificate says only this.
    pub fn sign_node_bound(
        &self,
        csr_pem: &str,
        name: &str,
        node_uid: &str,
        validity: Duration,
    ) -> Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate request is not a valid PKCS#10 CSR")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = Identity::node(name).subject();
        params.subject_alt_names = vec![SanType::URI(
            format!("{URI_PREFIX}{node_uid}")
                .try_into()
                .context("the Node's uid is not ASCII")?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        // Backdated by at most a tenth of the validity: agents renew at two
        // thirds of the whole span, so a backdate near the validity would
        // have them renew at once.
        params.not_before = now - (validity / 10).min(MAX_BACKDATE);
        params.not_after = now + validity;
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }
}

/// Check that `csr_pem` is a CSR this CA can sign (before anything is
/// done on its behalf).
pub fn check_csr(csr_pem: &str) -> Result<()> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .context("the certificate request is not a valid PKCS#10 CSR")?;
    Ok(())
}

/// The uid of the Node a node certificate was issued for (None: issued
/// before certificates named one).
pub fn node_uid_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            u.strip_prefix(URI_PREFIX).map(str::to_string)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:masters");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_node_certificate_names_its_node_and_nothing_the_request_asked_for() {
        let ca = Ca::create().unwrap();
        let pem = ca
            .sign_node_bound(&csr(), "n1", "1234-abcd", Duration::from_secs(3600))
            .unwrap();
        let der = der(&pem);
        assert_eq!(node_uid_of(&der).as_deref(), Some("1234-abcd"));
        let who = super::super::identity_of(&der).unwrap();
        assert_eq!(who.node_name(), Some("n1"));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1, "only the uid");
    }

    #[test]
    fn a_certificate_without_a_uid_names_none_and_a_bad_csr_is_refused() {
        let ca = Ca::create().unwrap();
        let issued = ca.issue_client(&Identity::node("n1")).unwrap();
        assert_eq!(node_uid_of(&der(&issued.cert_pem)), None);
        assert!(check_csr("garbage").is_err());
        assert!(check_csr(&csr()).is_ok());
        assert!(ca
            .sign_node_bound("garbage", "n1", "u", Duration::from_secs(60))
            .is_err());
    }
}
