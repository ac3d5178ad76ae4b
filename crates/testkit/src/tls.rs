//! Throwaway TLS certificates, made with the `openssl` command line tool:
//! a CA, a server certificate for 127.0.0.1 and localhost, and a client
//! certificate (CN `root`), valid for two days.

use std::path::Path;
use std::process::Command;

use lab::etcd::TlsFiles;

/// Certificates in a directory of their own, removed on drop.
#[derive(Debug)]
pub struct Certificates {
    pub files: TlsFiles,
    _dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes a fresh set in a new `/tmp/pgwarden-test-*` directory.
    pub fn make() -> Result<Certificates, String> {
        let dir = tempfile::Builder::new()
            .prefix(lab::ScratchDir::PREFIX)
            .tempdir()
            .map_err(|e| format!("cannot create a directory for certificates: {e}"))?;
        Ok(Certificates {
            files: make_certificates(dir.path())?,
            _dir: dir,
        })
    }
}

/// Makes the certificates in `dir`; says what failed, with openssl's own
/// words.
pub fn make_certificates(dir: &Path) -> Result<TlsFiles, String> {
    let file = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| {
                format!(
                    "openssl {}: {e}; install the openssl command line tool",
                    args.join(" ")
                )
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=pgwarden test CA",
    ];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca)?;
    for (name, subject, usage) in [
        (
            "server",
            "/CN=127.0.0.1",
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("client", "/CN=root", "extendedKeyUsage=clientAuth"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(file(&ext), usage).map_err(|e| format!("cannot write {ext}: {e}"))?;
        let mut request = vec!["req", "-subj", subject, "-keyout", &key, "-out", &csr];
        request.extend(ec);
        openssl(&request)?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ])?;
    }
    Ok(TlsFiles {
        ca: file("ca.pem"),
        server_cert: file("server.pem"),
        server_key: file("server.key"),
        client_cert: file("client.pem"),
        client_key: file("client.key"),
    })
}
