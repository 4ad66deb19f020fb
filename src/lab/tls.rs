//! A simulated lab's certificates for QEMU's TLS migration stream
//! (`migration: { tls: true }`): a certificate authority made for the lab
//! and gone with it, one server certificate naming both hosts' migration
//! addresses (the destination's QEMU serves the stream, and the source's
//! checks the address it dialled), and one client certificate (the
//! destination checks the source's). Both hosts' daemons read the same
//! directory. On a real lab the hosts' own certificates serve (libvirt's
//! `migrate_tls_x509_cert_dir`, `/etc/pki/qemu` by default).

use crate::sh;
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The file names QEMU's x509 credentials look for in their directory.
const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";

/// Makes the lab's certificates in `dir` (created, root's alone), the
/// server's for `addresses`.
pub fn make(dir: &Path, addresses: &[IpAddr]) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
    sh::run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ed25519",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=migsuite simulated lab CA",
            "-keyout",
            &at(CA_KEY),
            "-out",
            &at(CA_CERT),
        ],
    )
    .context("making the simulated lab's TLS authority (openssl: run ci/setup.sh)")?;
    let names: Vec<String> = addresses.iter().map(|a| format!("IP:{a}")).collect();
    certificate(dir, "server", &names.join(","), "serverAuth")?;
    certificate(dir, "client", &names.join(","), "clientAuth")?;
    // Nothing signs with the authority again.
    std::fs::remove_file(dir.join(CA_KEY))?;
    for entry in std::fs::read_dir(dir)? {
        std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// `<role>-key.pem` and `<role>-cert.pem` in `dir`, signed by its authority,
/// for the subject alternative names `names` and the extended key usage
/// `usage`.
fn certificate(dir: &Path, role: &str, names: &str, usage: &str) -> Result<()> {
    let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (key, request, cert) = (
        at(&format!("{role}-key.pem")),
        at(&format!("{role}.csr")),
        at(&format!("{role}-cert.pem")),
    );
    let extensions = at(&format!("{role}.ext"));
    std::fs::write(
        &extensions,
        format!("subjectAltName={names}\nextendedKeyUsage={usage}\nkeyUsage=digitalSignature\n"),
    )?;
    sh::run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ed25519",
            "-nodes",
            "-subj",
            &format!("/CN=migsuite {role}"),
            "-keyout",
            &key,
            "-out",
            &request,
        ],
    )?;
    sh::run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            &at(CA_CERT),
            "-CAkey",
            &at(CA_KEY),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions,
            "-out",
            &cert,
        ],
    )
    .with_context(|| format!("signing the simulated lab's TLS {role} certificate"))?;
    for made in [request, extensions, at("ca-cert.srl")] {
        let _ = std::fs::remove_file(made);
    }
    Ok(())
}
