//! The one retry loop of the client: what a failed attempt leads to (redirect, another
//! endpoint, back off, give up), for publishes and administrative requests alike.
//!
//! Invariants:
//! * A call never outlives its deadline: before every back-off the loop checks that the
//!   back-off still fits, and gives up with the last error otherwise.
//! * A client that has never had an answer from any endpoint gives up after
//!   `unreachable_timeout` (a wrong address or a cluster that is down is reported in seconds,
//!   not after the whole deadline); one that was answered before keeps retrying until the
//!   deadline, since a leader change or a rolling restart makes every node refuse for a while.
//! * Retrying resends the same request (for a publish: the same event ids), so a retry after
//!   an answer that was lost is stored once.

use crate::error::ClientError;
use eventstream_proto::ErrorCode;
use std::time::{Duration, Instant};

/// What an error code from a node means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCode {
    /// Return the error: retrying cannot help, or the operator decides.
    Fail,
    /// Back off and retry on the same connection.
    Retry,
    /// Retry on the next endpoint (this node is not the leader, or is shutting down).
    Elsewhere,
    /// Retry; the second such answer in a row moves to the next endpoint (an old leader cut
    /// off from the majority answers `Unavailable` or `Timeout` until it notices).
    ElsewhereIfRepeated,
}

/// How one kind of call retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// What the call is, for errors and retry notices ("publish").
    pub what: &'static str,
    /// First back-off; doubled after every failed attempt up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// What a node's error code leads to (a `NotLeader` naming the leader is always a
    /// redirect, whatever this says).
    pub on_code: fn(ErrorCode) -> OnCode,
}

/// Publishes: only a malformed request is final; everything else may succeed later with the
/// same ids.
pub(crate) const PUBLISH: Policy = Policy {
    what: "publish",
    first_backoff: Duration::from_millis(10),
    max_backoff: Duration::from_millis(200),
    on_code: |code| match code {
        ErrorCode::BadRequest => OnCode::Fail,
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => OnCode::Elsewhere,
        ErrorCode::Unavailable | ErrorCode::Timeout => OnCode::ElsewhereIfRepeated,
        _ => OnCode::Retry,
    },
};

/// Administrative requests: refusals (`Refused`, `UnknownMember`, `BadRequest`,
/// `ConfChangeInProgress`, `Timeout`, ...) are returned at once, the operator decides.
pub(crate) const ADMIN: Policy = Policy {
    what: "administrative request",
    first_backoff: Duration::from_millis(20),
    max_backoff: Duration::from_millis(500),
    on_code: |code| match code {
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => OnCode::Elsewhere,
        ErrorCode::Unavailable | ErrorCode::Busy => OnCode::Retry,
        _ => OnCode::Fail,
    },
};

/// Tells the caller what is being retried (the command-line tools print it); called for the
/// first failed attempt of a call and then at most once a second.
pub type RetryNotice = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The state of one call's retries.
pub(crate) struct Attempts<'a> {
    policy: &'a Policy,
    start: Instant,
    deadline: Duration,
    unreachable_timeout: Duration,
    backoff: Duration,
    repeated: u32,
    notice: Option<&'a RetryNotice>,
    noticed_at: Option<Instant>,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        policy: &'a Policy,
        deadline: Duration,
        unreachable_timeout: Duration,
        notice: Option<&'a RetryNotice>,
    ) -> Self {
        Attempts {
            policy,
            start: Instant::now(),
            deadline,
            unreachable_timeout,
            backoff: policy.first_backoff,
            repeated: 0,
            notice,
            noticed_at: None,
        }
    }

    /// What an error answer with `code` leads to, counting repeated stale answers.
    pub(crate) fn on_code(&mut self, code: ErrorCode) -> OnCode {
        match (self.policy.on_code)(code) {
            OnCode::ElsewhereIfRepeated => {
                self.repeated += 1;
                if self.repeated >= 2 {
                    self.repeated = 0;
                    OnCode::Elsewhere
                } else {
                    OnCode::Retry
                }
            }
            other => other,
        }
    }

    /// True while a redirect may be followed at once (the first 50 ms of a call); after that
    /// a redirect that keeps bouncing backs off like any retry.
    pub(crate) fn redirect_now(&self) -> bool {
        self.start.elapsed() < Duration::from_millis(50)
    }

    /// Waits before the next attempt, or returns the error the call ends with: the deadline
    /// would pass, or no endpoint has ever answered for `unreachable_timeout`.
    pub(crate) async fn back_off(
        &mut self,
        last: ClientError,
        ever_answered: bool,
        endpoints: &[String],
    ) -> Result<(), ClientError> {
        let elapsed = self.start.elapsed();
        tracing::debug!(what = self.policy.what, error = %last, ?elapsed, "attempt failed; retrying");
        if !ever_answered && elapsed >= self.unreachable_timeout {
            return Err(ClientError::Timeout(format!(
                "{} gave up after {elapsed:.1?}: no endpoint answered ({}); last error: {last}",
                self.policy.what,
                endpoints.join(", ")
            )));
        }
        if elapsed + self.backoff > self.deadline {
            return Err(ClientError::Timeout(format!(
                "{} gave up after {elapsed:.1?}: {last}",
                self.policy.what
            )));
        }
        self.notify(&last, ever_answered, elapsed);
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        Ok(())
    }

    fn notify(&mut self, last: &ClientError, ever_answered: bool, elapsed: Duration) {
        let Some(notice) = self.notice else { return };
        if self
            .noticed_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.noticed_at = Some(Instant::now());
        let limit = if ever_answered {
            self.deadline
        } else {
            self.unreachable_timeout.min(self.deadline)
        };
        notice(&format!(
            "{}: {last}; retrying for up to {:.1?} more",
            self.policy.what,
            limit.saturating_sub(elapsed)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_answers_move_on_the_second_time() {
        let mut a = Attempts::new(
            &PUBLISH,
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        );
        assert_eq!(a.on_code(ErrorCode::Unavailable), OnCode::Retry);
        assert_eq!(a.on_code(ErrorCode::Timeout), OnCode::Elsewhere);
        assert_eq!(a.on_code(ErrorCode::Timeout), OnCode::Retry);
        assert_eq!(a.on_code(ErrorCode::BadRequest), OnCode::Fail);
        assert_eq!(a.on_code(ErrorCode::Busy), OnCode::Retry);
    }

    #[test]
    fn admin_refusals_are_final_and_leader_changes_are_not() {
        let mut a = Attempts::new(&ADMIN, Duration::from_secs(1), Duration::from_secs(1), None);
        for code in [
            ErrorCode::Refused,
            ErrorCode::UnknownMember,
            ErrorCode::ConfChangeInProgress,
            ErrorCode::Timeout,
            ErrorCode::Unauthorized,
        ] {
            assert_eq!(a.on_code(code), OnCode::Fail, "{code:?}");
        }
        assert_eq!(a.on_code(ErrorCode::NotLeader), OnCode::Elsewhere);
        assert_eq!(a.on_code(ErrorCode::Unavailable), OnCode::Retry);
    }

    #[tokio::test]
    async fn unreachable_endpoints_give_up_early_and_the_deadline_always_holds() {
        let refused = || ClientError::Timeout("connection refused".into());
        let eps = vec!["127.0.0.1:1".to_owned()];
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let notice: RetryNotice = std::sync::Arc::new(move |m: &str| {
            log.lock().unwrap().push(m.to_owned());
        });
        let mut a = Attempts::new(
            &PUBLISH,
            Duration::from_secs(30),
            Duration::from_millis(60),
            Some(&notice),
        );
        let t = Instant::now();
        let err = loop {
            if let Err(e) = a.back_off(refused(), false, &eps).await {
                break e;
            }
        };
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let msg = err.to_string();
        assert!(
            msg.contains("no endpoint answered") && msg.contains("127.0.0.1:1"),
            "{msg}"
        );
        // One notice (the first failure), rate-limited afterwards.
        let notices = seen.lock().unwrap().clone();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(notices[0].starts_with("publish: "), "{notices:?}");

        // Answered before: only the deadline ends it.
        let mut a = Attempts::new(&PUBLISH, Duration::from_millis(100), Duration::ZERO, None);
        let t = Instant::now();
        let err = loop {
            if let Err(e) = a.back_off(refused(), true, &eps).await {
                break e;
            }
        };
        assert!(
            t.elapsed() <= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(!err.to_string().contains("no endpoint answered"), "{err}");
    }
}
