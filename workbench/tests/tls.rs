//! `serve_tls`: a router served over TLS from certificate and key files,
//! and a changed pair picked up without a restart (a broken pair in between
//! does not stop the listener).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verdict_workbench::config::TlsConfig;
use verdict_workbench::tls::serve_tls;

/// Accepts any certificate: the test reads which one the server sent.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn write_pair(dir: &Path) -> Vec<u8> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.key"), c.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), c.cert.pem()).unwrap();
    c.cert.der().to_vec()
}

/// Connects, asks for `/hello`, and answers the certificate the server
/// sent and the response.
async fn fetch(addr: SocketAddr) -> (Vec<u8>, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    (cert, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_is_served_over_tls_and_a_new_certificate_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pair(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = TlsConfig {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        poll_secs: 1,
    };
    let router = Router::new().route("/hello", get(|| async { "hello over tls" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_tls(listener, router, config, async {
        let _ = stopped.await;
    }));

    let (cert, body) = fetch(addr).await;
    assert_eq!(cert, first);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("hello over tls"), "{body}");

    // A half-written pair (a key that is no key) is refused; the listener
    // keeps serving the first certificate meanwhile.
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fetch(addr).await.0, first);

    let second = write_pair(dir.path());
    assert_ne!(first, second);
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = fetch(addr).await.0;
        if seen == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, second, "the new certificate was never served");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_key_that_does_not_load_stops_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path());
    std::fs::write(dir.path().join("tls.key"), "nope").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = TlsConfig {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        poll_secs: 1,
    };
    let err = serve_tls(listener, Router::new(), config, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tls.key"), "{err}");
}
