//! The Redis client the runner's steps share (the Redis sink, Redis dead letters, `runner
//! lookup`): connecting with retries through transient failures, and URLs shown without their
//! password.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RetryMethod};

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unparseable URL)".into(),
    }
}

/// Whether sending again may succeed: the connection dropped, timed out, was refused (the server
/// restarts), or the server said to try again. Bad credentials or commands are not transient.
pub fn transient(e: &RedisError) -> bool {
    !matches!(e.kind(), ErrorKind::AuthenticationFailed) && !matches!(e.retry_method(), RetryMethod::NoRetry)
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` has passed.
pub async fn with_retries<T, F, Fut>(deadline: Duration, what: &str, mut attempt: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if transient(&e) && started.elapsed() + backoff < deadline => {
                tracing::warn!("{what} failed ({e}); retrying in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The error after the last attempt: transient ones were retried until the deadline.
pub fn give_up(what: &str, e: &RedisError, deadline: Duration) -> anyhow::Error {
    if transient(e) {
        anyhow::anyhow!("{what}: {e} (still failing after {} s of retries)", deadline.as_secs())
    } else {
        anyhow::anyhow!("{what}: {e}")
    }
}

/// Connects, retrying through transient failures for `retry_seconds`.
pub async fn connect(url: &str, retry_seconds: u64) -> anyhow::Result<ConnectionManager> {
    let shown = redacted(url);
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("{shown}: invalid Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2);
    let deadline = Duration::from_secs(retry_seconds);
    let what = format!("connecting to {shown}");
    with_retries(deadline, &what, || ConnectionManager::new_with_config(client.clone(), config.clone()))
        .await
        .map_err(|e| give_up(&what, &e, deadline))
}
