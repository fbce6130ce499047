//! The listener of `tally serve`, through the real binary: HTTPS with a generated certificate over
//! HTTP/1.1 and HTTP/2 (ALPN), plain HTTP/2 by prior knowledge, TLS files refused at start with the
//! setting named, and the limits that keep slow or greedy clients from holding connections.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{App, json_of, spawn_app, spawn_app_with};
use reqwest::{StatusCode, Version};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM into `dir`.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

fn generate_cert(dir: &Path) -> Cert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
    let pem = cert.pem();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &pem).expect("write cert.pem");
    std::fs::write(&key_path, signing_key.serialize_pem()).expect("write key.pem");
    Cert {
        cert: cert_path,
        key: key_path,
        pem,
    }
}

/// A client trusting only `cert` (no built-in roots), so success proves the server presented it.
fn client_trusting(cert: &Cert, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.pem.as_bytes()).expect("the generated PEM"),
        );
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("a TLS client")
}

fn spawn_tls(dir: &Path, cert: &Cert) -> App {
    spawn_app_with(
        dir,
        &[
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
        ],
        &[],
    )
}

// Multi-threaded: the client's connections must keep answering (HTTP/2 pings during the graceful
// shutdown) while `stop` blocks the test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate_cert(dir.path());
    let mut app = spawn_tls(dir.path(), &cert);
    assert!(
        app.url.starts_with("https://127.0.0.1:"),
        "the listening line says https: {}",
        app.url
    );

    let http1 = client_trusting(&cert, true);
    let r = http1
        .get(app.at("/healthz"))
        .send()
        .await
        .expect("GET /healthz over HTTP/1.1 + TLS");
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.status(), StatusCode::OK);

    // ALPN picks h2 when the client offers it: the default client speaks HTTP/2 here.
    app.client = client_trusting(&cert, false);
    let r = app.get_raw("/healthz", None).await;
    assert_eq!(r.version(), Version::HTTP_2, "ALPN negotiated h2");
    assert_eq!(r.status(), StatusCode::OK);
    let position = app
        .run_ok(
            "/v1/suppliers",
            &json!({"supplier_id": "acme", "name": "Acme Foods"}),
        )
        .await;
    assert!(position >= 1);

    // Its event over HTTP/1.1: both protocols reach the same API.
    let r = http1
        .get(app.at("/v1/events?after=0&limit=10"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .expect("GET /v1/events");
    assert_eq!(r.version(), Version::HTTP_11);
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["type"], "SupplierRegistered", "{body}");
    // A graceful stop with an HTTP/2 client connected: GOAWAY, and the connection closes at once.
    let stopping = Instant::now();
    app.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate_cert(dir.path());
    let app = spawn_tls(dir.path(), &cert);
    let plain_url = app.at("/healthz").replacen("https://", "http://", 1);
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let answer = plain.get(&plain_url).send().await;
    assert!(
        answer.is_err(),
        "plain HTTP to the TLS listener must fail, got {:?}",
        answer.map(|r| r.status())
    );
    // A client that does not trust the certificate is refused too.
    let untrusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let e = untrusting
        .get(app.at("/healthz"))
        .send()
        .await
        .expect_err("an unknown certificate is not trusted");
    assert!(e.is_connect(), "{e:?}");
    // The server is unharmed by both.
    let ok = client_trusting(&cert, false)
        .get(app.at("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(ok.status(), StatusCode::OK);
}

/// Runs `tally serve` expecting it to refuse to start; returns its stderr.
fn refused_start(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_TLS_CERT")
        .env_remove("TALLY_TLS_KEY")
        .current_dir(dir)
        .output()
        .expect("run tally serve");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("listening"),
        "tally serve {args:?} must refuse to start: {stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_tls_files_stop_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cert = generate_cert(dir.path());
    let (cert_path, key_path) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());

    let missing = dir.path().join("missing-key.pem");
    let err = refused_start(
        dir.path(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            missing.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("--tls-key") && err.contains("TALLY_TLS_KEY"),
        "{err}"
    );
    assert!(err.contains("missing-key.pem"), "names the file: {err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = refused_start(
        dir.path(),
        &[
            "--tls-cert",
            garbage.to_str().unwrap(),
            "--tls-key",
            key_path,
        ],
    );
    assert!(
        err.contains("--tls-cert") && err.contains("garbage.pem"),
        "{err}"
    );
    assert!(err.contains("no PEM certificate"), "{err}");

    let other = generate_cert(&{
        let d = dir.path().join("other");
        std::fs::create_dir(&d).unwrap();
        d
    });
    let err = refused_start(
        dir.path(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            other.key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("does not fit the certificate"), "{err}");

    let err = refused_start(dir.path(), &["--tls-cert", cert_path]);
    assert!(err.contains("--tls-key"), "half a TLS setting: {err}");
}

#[tokio::test]
async fn plain_http_speaks_http2_with_prior_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c.get(app.at("/healthz")).send().await.expect("h2c GET");
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.get_raw("/healthz", None).await;
    assert_eq!(
        r.version(),
        Version::HTTP_11,
        "and HTTP/1.1 on the same port"
    );
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut buf))
        .await
        .expect("the server closes the connection well before 30 s");
    // Closed (EOF) or reset: either way the connection is gone and nothing was answered.
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "unexpected answer to a request never finished: {:?}",
        read.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed after {:?}: too early for a header timeout",
        started.elapsed()
    );
    // Others are served meanwhile and after.
    let r = app.get_raw("/healthz", None).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path());
    let r = app
        .client
        .get(app.at("/healthz"))
        .header("x-padding", "a".repeat(100 * 1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let r = app
        .client
        .get(app.at("/healthz"))
        .header("x-padding", "a".repeat(8 * 1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), StatusCode::OK, "ordinary headers pass");
}
