//! Test certificates from openssl: a CA, a server certificate for 127.0.0.1 and a client
//! certificate, for the TLS checks and the TLS bench (`ca.crt`, `server.{crt,key}`,
//! `client.{crt,key}` in one directory).
use std::{fs, path::Path, process::Command};

use anyhow::Result;

use super::process;

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    process::output(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {}", args[..2].join(" ")),
    )
    .map(drop)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA.
pub fn certificates(dir: &Path) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kdump-agent test CA",
    ]);
    openssl(dir, &ca)?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        fs::write(dir.join(format!("{name}.ext")), ext)?;
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN=kdump-agent test {name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        )?;
    }
    Ok(())
}
