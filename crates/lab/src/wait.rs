//! Waiting for a state with a deadline, never for a fixed time.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a wait saw when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last seen: {last_seen}")]
pub struct WaitError {
    pub what: String,
    pub waited: Duration,
    pub last_seen: String,
}

/// Polls `check` every `poll` until it returns `Ok(value)` or `deadline`
/// passes. `check` returns `Err(state)` to describe what it saw instead, which
/// ends up in the error.
pub async fn wait_for<T, S, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> Result<T, WaitError>
where
    S: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let poll = Duration::from_millis(50);
    let start = Instant::now();
    loop {
        let last_seen = match check().await {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if start.elapsed() >= deadline {
            return Err(WaitError {
                what: what.to_string(),
                waited: start.elapsed(),
                last_seen: format!("{last_seen:?}"),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_state_is_reached() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            let seen = calls;
            async move {
                if seen >= 3 {
                    Ok(seen)
                } else {
                    Err(seen)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn says_what_it_waited_for_and_what_it_saw() {
        let err = wait_for("pigs to fly", Duration::from_millis(120), || async {
            Err::<(), _>("pigs on the ground")
        })
        .await
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("waiting for pigs to fly"), "{message}");
        assert!(
            message.contains("last seen: \"pigs on the ground\""),
            "{message}"
        );
    }
}
