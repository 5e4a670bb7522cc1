//! The signal both servers stop on.

use std::future::Future;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this function is *called*, not when the future is first
/// polled: a server may answer requests before it polls its shutdown future, and a SIGTERM in
/// that window would otherwise take the default action and kill the process mid-request.
#[cfg(unix)]
pub fn signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            },
            (term, interrupt) => {
                let error = term.err().or(interrupt.err()).map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(%error, "cannot listen for SIGTERM/SIGINT; falling back to Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
pub fn signal() -> impl Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received, shutting down");
    }
}
