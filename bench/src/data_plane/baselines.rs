//! The baseline proxy pairs the sidecars are compared with (DESIGN §10): nginx and haproxy from
//! the Debian packages, each as two foreground processes shaped like the mesh path.
//!
//! ```text
//!  client ─► A 127.0.61.{30,40}:8080 (plain) ══ TLS 1.3, client cert, pooled ══►
//!            B 127.0.61.{31,41}:8443 (TLS, client cert required) ─► app 127.0.0.1:<port> (pooled)
//! ```
//!
//! This module installs the packages if absent (`apt-get`), makes an ECDSA P-256 CA and two leaf
//! certificates with the `openssl` CLI (the same key type as meshfed's SVIDs), writes the
//! configs into the run's temp dir and spawns the processes (pinned with `taskset`) into the
//! caller's `TestEnv`, whose drop kills them. It does not measure anything. Every process logs
//! one access-log line per request, as the sidecars do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use mesh_chaos_tests::harness::{ProcSpec, TestEnv};

/// SNI and DNS name of both B sides' server certificates.
const SERVER_NAME: &str = "b.bench";

/// A started proxy pair.
pub(crate) struct Pair {
    /// A's plain listener: where the load goes.
    pub(crate) entry: SocketAddr,
    /// Handles in the `TestEnv` (A, then B).
    pub(crate) handles: [usize; 2],
    pub(crate) version: String,
}

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    fn host(self) -> u8 {
        match self {
            Kind::Nginx => 30,
            Kind::Haproxy => 40,
        }
    }
}

/// Make sure `nginx` and `haproxy` are on PATH, installing the missing ones with apt-get.
/// Returns each binary, or why it is unavailable.
pub(crate) fn ensure_installed() -> [(Kind, Result<PathBuf, String>); 2] {
    let missing: Vec<&str> = ["nginx", "haproxy"]
        .into_iter()
        .filter(|b| which(b).is_none())
        .collect();
    let mut install_note = String::new();
    if !missing.is_empty() {
        eprintln!("installing {} with apt-get", missing.join(" "));
        let out = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        install_note = match out {
            Ok(o) if o.status.success() => String::new(),
            Ok(o) => format!(
                "`apt-get install -y {}` failed: {}",
                missing.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run apt-get: {e}"),
        };
    }
    [Kind::Nginx, Kind::Haproxy].map(|k| {
        let found = which(k.name()).ok_or_else(|| {
            format!(
                "{} is not installed and could not be installed. {install_note}",
                k.name()
            )
        });
        (k, found)
    })
}

/// CA and leaf certificates for both pairs, in `dir`.
pub(crate) fn make_certs(dir: &Path) -> anyhow::Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=bench-ca",
            ],
        ]
        .concat(),
    )?;
    for (leaf, ext) in [
        (
            "server",
            format!("subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n"),
        ),
        (
            "client",
            "subjectAltName=DNS:client.bench\nextendedKeyUsage=clientAuth\n".to_owned(),
        ),
    ] {
        let (key, csr, pem, extf) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.pem"),
            format!("{leaf}.ext"),
        );
        std::fs::write(dir.join(&extf), ext)?;
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={leaf}.bench"),
                ],
            ]
            .concat(),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &extf,
                "-out",
                &pem,
            ],
        )?;
        // haproxy wants certificate and key in one file.
        let bundle =
            std::fs::read_to_string(dir.join(&pem))? + &std::fs::read_to_string(dir.join(&key))?;
        std::fs::write(dir.join(format!("{leaf}-bundle.pem")), bundle)?;
    }
    Ok(())
}

/// Start pair `kind` in `env`, forwarding to the app on `app`, pinned to `cpus`. Certificates
/// must be in `dir` already ([`make_certs`]).
pub(crate) fn start(
    env: &mut TestEnv,
    kind: Kind,
    bin: &Path,
    dir: &Path,
    app: SocketAddr,
    cpus: &str,
) -> anyhow::Result<Pair> {
    let entry = SocketAddr::from(([127, 0, 61, kind.host()], 8080));
    let tls = SocketAddr::from(([127, 0, 61, kind.host() + 1], 8443));
    let mut handles = [0; 2];
    for (i, side) in ["a", "b"].into_iter().enumerate() {
        let name = format!("{}-{side}", kind.name());
        let conf = dir.join(format!("{name}.conf"));
        let text = match (kind, side) {
            (Kind::Nginx, "a") => nginx_a(dir, entry, tls),
            (Kind::Nginx, _) => nginx_b(dir, tls, app),
            (Kind::Haproxy, "a") => haproxy_a(dir, entry, tls),
            (Kind::Haproxy, _) => haproxy_b(dir, tls, app),
        };
        std::fs::write(&conf, text)?;
        let conf = conf.display().to_string();
        let args: Vec<String> = match kind {
            Kind::Nginx => {
                let prefix = dir.join(&name);
                std::fs::create_dir_all(&prefix)?;
                vec![
                    "-p".into(),
                    prefix.display().to_string(),
                    "-e".into(),
                    prefix.join("error.log").display().to_string(),
                    "-c".into(),
                    conf,
                    "-g".into(),
                    "daemon off;".into(),
                ]
            }
            Kind::Haproxy => vec!["-f".into(), conf, "-db".into()],
        };
        let spec = ProcSpec::new(name, "taskset")
            .args(["-c".to_string(), cpus.to_owned(), bin.display().to_string()])
            .args(args);
        handles[i] = env.spawn(spec)?;
    }
    Ok(Pair {
        entry,
        handles,
        version: version(bin),
    })
}

fn nginx_a(dir: &Path, listen: SocketAddr, b: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# nginx A: plain HTTP in, TLS 1.3 with a client certificate to B over pooled connections.
master_process off;
worker_processes 1;
pid {d}/nginx-a.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/nginx-a/access.log;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream to_b {{ server {b}; keepalive 16; keepalive_requests 1000000; keepalive_timeout 300s; }}
  server {{
    listen {listen};
    location / {{
      proxy_pass https://to_b;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate {d}/client.pem;
      proxy_ssl_certificate_key {d}/client.key;
      proxy_ssl_trusted_certificate {d}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name {SERVER_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"
    )
}

fn nginx_b(dir: &Path, listen: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# nginx B: TLS 1.3 in, client certificate required, plain HTTP to the app, pooled.
master_process off;
worker_processes 1;
pid {d}/nginx-b.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/nginx-b/access.log;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream app {{ server {app}; keepalive 16; keepalive_requests 1000000; keepalive_timeout 300s; }}
  server {{
    listen {listen} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/ca.pem;
    ssl_verify_client on;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
"
    )
}

const HAPROXY_COMMON: &str = "global
  nbthread 1
  maxconn 1024
  log stdout format raw local0
defaults
  mode http
  log global
  option httplog
  http-reuse always
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
";

fn haproxy_a(dir: &Path, listen: SocketAddr, b: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# haproxy A: plain HTTP in, TLS 1.3 with a client certificate to B over pooled connections.
{HAPROXY_COMMON}frontend a
  bind {listen}
  default_backend to_b
backend to_b
  server b {b} ssl crt {d}/client-bundle.pem ca-file {d}/ca.pem verify required verifyhost {SERVER_NAME} sni str({SERVER_NAME}) ssl-min-ver TLSv1.3
"
    )
}

fn haproxy_b(dir: &Path, listen: SocketAddr, app: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# haproxy B: TLS 1.3 in, client certificate required, plain HTTP to the app, pooled.
{HAPROXY_COMMON}frontend b
  bind {listen} ssl crt {d}/server-bundle.pem ca-file {d}/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app {app}
"
    )
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (needed for the baseline proxies' certificates)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    let out = Command::new("which").arg(bin).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = path.trim();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Name and version from `-v` (nginx prints it on stderr, haproxy on stdout).
fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // "nginx version: nginx/1.22.1", "HAProxy version 2.6.12-1 2025/10/03 - <site>".
            let first = text.lines().next().unwrap_or("");
            let first = first.split(" - ").next().unwrap_or(first);
            first.replace("nginx version: ", "").trim().to_owned()
        })
        .unwrap_or_default()
}
