//! Logging: `tracing` as JSON lines (CloudWatch Logs reads them), one field per key, so every line of a
//! transition carries its execution, node and attempt.

/// Installs the JSON subscriber; the level comes from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .try_init();
}
