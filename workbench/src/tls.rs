//! Serving any axum router over TLS (rustls), with the certificate and key
//! read from files and loaded again when they change.
//!
//! The files are compared by content, not by modification time, so that a
//! Kubernetes Secret's symlink swap (which keeps the old times) is seen. A
//! pair that does not load is logged and the old one keeps serving; a new
//! pair applies to connections made after it loads.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsConfig;
use crate::error::WorkbenchError;

async fn read_pair(tls: &TlsConfig) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    Ok((
        tokio::fs::read(&tls.cert).await?,
        tokio::fs::read(&tls.key).await?,
    ))
}

fn tls_err(tls: &TlsConfig, why: impl std::fmt::Display) -> WorkbenchError {
    WorkbenchError::Tls {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        why: why.to_string(),
    }
}

/// Reads the certificate and key and builds the TLS configuration once, so
/// that a service can refuse to start with a pair that cannot be used
/// before it spawns [`serve_tls`].
pub async fn check(tls: &TlsConfig) -> Result<(), WorkbenchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = read_pair(tls).await.map_err(|e| tls_err(tls, e))?;
    RustlsConfig::from_pem(cert, key)
        .await
        .map_err(|e| tls_err(tls, e))?;
    Ok(())
}

/// Serves `router` over TLS on `listener` until `shutdown` completes (then
/// lets open requests finish for up to ten seconds). Fails at once when the
/// certificate or key cannot be used.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    router: Router,
    tls: TlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkbenchError> {
    // Only ring is compiled in; installing it names it for rustls even if
    // another dependency brings a second provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = read_pair(&tls).await.map_err(|e| tls_err(&tls, e))?;
    let config = RustlsConfig::from_pem(cert.clone(), key.clone())
        .await
        .map_err(|e| tls_err(&tls, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| tls_err(&tls, e))?;

    let watcher = tokio::spawn(watch(tls.clone(), config.clone(), (cert, key)));
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let served = axum_server::from_tcp_rustls(listener, config)
        .map_err(|e| tls_err(&tls, e))?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await;
    watcher.abort();
    served.map_err(|e| tls_err(&tls, format!("the TLS listener stopped: {e}")))
}

/// Looks at the files every `poll_secs` and loads a changed pair.
async fn watch(tls: TlsConfig, config: RustlsConfig, mut current: (Vec<u8>, Vec<u8>)) {
    let mut every = tokio::time::interval(Duration::from_secs(tls.poll_secs.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let pair = match read_pair(&tls).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(cert = %tls.cert.display(), error = %e, "cannot read the TLS certificate or key; the loaded pair stays");
                continue;
            }
        };
        if pair == current {
            continue;
        }
        match config.reload_from_pem(pair.0.clone(), pair.1.clone()).await {
            Ok(()) => {
                tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
                current = pair;
            }
            Err(e) => {
                // A writer may have replaced one file and not yet the
                // other: the next look tries again.
                tracing::warn!(cert = %tls.cert.display(), error = %e, "the changed TLS certificate or key does not load; the old pair stays");
            }
        }
    }
}
