//! A private CA for Redis over TLS: the server's certificate (for 127.0.0.1) and a
//! client certificate, as `redis-server --tls-*` and the server's `redis.tls_*_file`
//! settings take them.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tempfile::TempDir;

pub struct RedisTlsFiles {
    _dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisTlsFiles {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "private redis CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, usage: &[ExtendedKeyUsagePurpose]| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usage.to_vec();
            (params.signed_by(&key, &issuer).unwrap(), key)
        };
        // Redis nodes are clients of each other too (replication, the cluster bus,
        // sentinels): their certificate says both.
        let (server, server_key) = leaf(
            "redis",
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client, client_key) = leaf("provisiond", &[ExtendedKeyUsagePurpose::ClientAuth]);
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Self {
            ca: write("ca.crt", ca_cert.pem()),
            server_cert: write("redis.crt", server.pem()),
            server_key: write("redis.key", server_key.serialize_pem()),
            client_cert: write("client.crt", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }

    /// `redis-server` arguments for TLS on `tls_port` (beside its plain port, which the
    /// tests use to look inside), client certificates required, as Redis's default is.
    pub fn server_args(&self, tls_port: u16) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&self.server_cert),
            "--tls-key-file".into(),
            path(&self.server_key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    }
}

impl RedisTlsFiles {
    /// The same arguments as lines of a `redis.conf` (a sentinel's), with the TLS
    /// settings a sentinel needs to reach the primary it watches over TLS.
    pub fn sentinel_conf(&self, tls_port: u16) -> String {
        format!(
            "port 0\ntls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients yes\ntls-replication yes\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }
}
