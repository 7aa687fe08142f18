//! The process's stop signal: SIGTERM (Kubernetes) or SIGINT (Ctrl-C) cancels one token that
//! every server, relay and consumer of the process watches.
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT. Runs until then.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("stop signal received; draining");
    token.cancel();
}

/// Once a server reports itself not ready, it goes on serving for `delay` before it stops
/// accepting: a load balancer that polls readiness (or removes the endpoint meanwhile) stops
/// sending it requests first, so none meets a closed port.
pub async fn lame_duck(delay: std::time::Duration) {
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis(),
            "not ready; serving on for the shutdown delay"
        );
        tokio::time::sleep(delay).await;
    }
}
