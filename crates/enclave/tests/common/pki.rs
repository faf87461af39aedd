//! A test PKI made with `rcgen`: a root, an issuing CA under it, a server certificate for
//! `localhost` and `127.0.0.1`, smart-card-like client certificates (UPN, PIV authentication
//! policy, client-authentication purpose) and the issuing CA's revocation list, as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// The PIV authentication certificate policy.
pub const PIV_AUTH: &str = "2.16.840.1.101.3.2.1.3.13";
const PIV_AUTH_ARCS: [u64; 10] = [2, 16, 840, 1, 101, 3, 2, 1, 3, 13];
const UPN: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 20, 2, 3];

pub struct Pki {
    dir: tempfile::TempDir,
    issuing: CertifiedIssuer<'static, KeyPair>,
    next_serial: u64,
}

/// A client certificate to make.
pub struct Client<'a> {
    pub upn: Option<&'a str>,
    pub email: Option<&'a str>,
    pub common_name: &'a str,
    pub piv_policy: bool,
    /// Days from now until it expires; negative: expired.
    pub valid_days: i64,
}

impl Default for Client<'_> {
    fn default() -> Self {
        Self {
            upn: None,
            email: None,
            common_name: "Test Person",
            piv_policy: true,
            valid_days: 365,
        }
    }
}

impl Pki {
    /// A root, an issuing CA, and a server certificate valid for `server_days` more days.
    pub fn new(server_days: i64) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.distinguished_name
            .push(DnType::CommonName, "Enclave Test Root");
        let root = CertifiedIssuer::self_signed(root, KeyPair::generate().unwrap()).unwrap();
        let mut issuing = CertificateParams::new(Vec::<String>::new()).unwrap();
        issuing.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuing.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        issuing
            .distinguished_name
            .push(DnType::CommonName, "Enclave Test Issuing CA");
        let issuing =
            CertifiedIssuer::signed_by(issuing, KeyPair::generate().unwrap(), &root).unwrap();

        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "enclave.test");
        let now = time::OffsetDateTime::now_utc();
        leaf.not_before = now - time::Duration::days(2);
        leaf.not_after = now + time::Duration::days(server_days);
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &root).unwrap();
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        // A key that belongs to no certificate here.
        let other = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
        let pki = Pki {
            dir,
            issuing,
            next_serial: 100,
        };
        pki.write_crl(&[]);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(self.path("root.pem")).unwrap()).unwrap()
    }

    /// Makes a client certificate signed by the issuing CA; writes `<name>.pem` (certificate,
    /// issuing CA, key) and returns its serial number.
    pub fn client(&mut self, name: &str, spec: &Client<'_>) -> u64 {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "People");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Agency");
        if let Some(upn) = spec.upn {
            params
                .subject_alt_names
                .push(SanType::OtherName((UPN.to_vec(), upn.into())));
        }
        if let Some(email) = spec.email {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(email.try_into().unwrap()));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.piv_policy {
            let policies = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                                &PIV_AUTH_ARCS,
                            ));
                    });
                });
            });
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(&[2, 5, 29, 32], policies));
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(spec.valid_days);
        self.next_serial += 1;
        let serial = self.next_serial;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuing).unwrap();
        let pem = format!(
            "{}{}{}",
            cert.pem(),
            self.issuing.pem(),
            key.serialize_pem()
        );
        std::fs::write(self.path(&format!("{name}.pem")), pem).unwrap();
        serial
    }

    pub fn identity(&self, name: &str) -> reqwest::Identity {
        reqwest::Identity::from_pem(&std::fs::read(self.path(&format!("{name}.pem"))).unwrap())
            .unwrap()
    }

    /// Writes `issuing.crl` (PEM), revoking `serials`.
    pub fn write_crl(&self, serials: &[u64]) {
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from(now.unix_timestamp_nanos() as u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuing)
        .unwrap();
        // Written whole, then moved into place, as an operator's tooling would.
        let tmp = self.path("issuing.crl.tmp");
        std::fs::write(&tmp, crl.pem().unwrap()).unwrap();
        std::fs::rename(&tmp, self.path("issuing.crl")).unwrap();
    }
}
