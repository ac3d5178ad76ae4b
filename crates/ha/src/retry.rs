//! Backing off an action that keeps failing the same way.
//!
//! Some actions only prepare this member's own PostgreSQL (initdb, a clone,
//! starting a standby). When one fails because of something only the
//! operator can fix (a data directory its user cannot create, a full disk),
//! retrying it every round fills the log and the event history with the same
//! line and hides the failure behind a note that reads like progress. Such an
//! action, failing again and again, waits longer between attempts (0.5 s,
//! doubling to [`MAX_DELAY_MS`]), and the plan's note says it is failing,
//! how often, and why.
//!
//! Nothing that guards the cluster's safety backs off: taking, renewing or
//! giving up the leader key, stopping, promoting, starting as primary, the
//! synchronous settings all run whenever a round plans them.

use crate::observation::Millis;
use crate::plan::{Action, Plan};

/// The first wait after a failure.
pub const FIRST_DELAY_MS: Millis = 500;

/// How the plan's note of a member whose action keeps failing begins;
/// `ctl list` reads it there.
pub const FAILING_NOTE: &str = "FAILING: ";
/// The longest wait between two attempts: short enough that a member whose
/// problem was fixed catches up within seconds (and well inside the
/// simulation's liveness bound), long enough to keep the log readable.
pub const MAX_DELAY_MS: Millis = 10_000;

/// The action failing in a row, and what is known of its failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    pub action: Action,
    /// Failures in a row (1 after the first).
    pub count: u32,
    /// The last error.
    pub error: String,
    /// No attempt before this time (monotonic ms).
    pub retry_at: Millis,
}

impl Failing {
    /// Whether this failure is worth a new event: the first, then each
    /// time the count doubles (2, 4, 8, …), so a failure that lasts a day
    /// makes a handful of events with a count, not thousands.
    pub fn worth_telling(&self) -> bool {
        self.count.is_power_of_two()
    }
}

/// Whether a failure of `action` makes the next attempt wait.
pub fn backs_off(action: &Action) -> bool {
    matches!(
        action,
        Action::InitDb
            | Action::CloneFrom { .. }
            | Action::Reclone { .. }
            | Action::StartReplica { .. }
    )
}

/// Whether `a` is another attempt at `b`: a re-clone's reason names how
/// long the standby has been stuck, which changes from round to round.
fn same(a: &Action, b: &Action) -> bool {
    match (a, b) {
        (Action::Reclone { leader: a, .. }, Action::Reclone { leader: b, .. }) => a == b,
        _ => a == b,
    }
}

/// The wait after `count` failures in a row.
pub fn delay(count: u32) -> Millis {
    let doublings = count.saturating_sub(1).min(16);
    (FIRST_DELAY_MS << doublings).min(MAX_DELAY_MS)
}

/// Records how `action` ended at `now` in `failing`.
pub(crate) fn record(
    failing: &mut Option<Failing>,
    now: Millis,
    action: &Action,
    result: Result<(), &str>,
) {
    match result {
        Ok(()) => {
            if failing.as_ref().is_some_and(|f| same(&f.action, action)) {
                *failing = None;
            }
        }
        Err(error) if backs_off(action) => {
            let count = match failing {
                Some(f) if same(&f.action, action) => f.count.saturating_add(1),
                _ => 1,
            };
            *failing = Some(Failing {
                action: action.clone(),
                count,
                error: error.to_string(),
                retry_at: now.saturating_add(delay(count)),
            });
        }
        Err(_) => {}
    }
}

/// `plan` as it may run at `now`: when it holds the failing action and its
/// wait is not over, the plan stops before it; either way the note says the
/// action is failing and why.
pub(crate) fn hold_back(failing: Option<&Failing>, now: Millis, mut plan: Plan) -> Plan {
    let Some(failing) = failing else {
        return plan;
    };
    let Some(at) = plan.actions.iter().position(|a| same(a, &failing.action)) else {
        return plan;
    };
    let times = match failing.count {
        1 => "once".to_string(),
        n => format!("{n} times in a row"),
    };
    if now < failing.retry_at {
        plan.actions.truncate(at);
        let wait = failing.retry_at - now;
        plan.note = format!(
            "{FAILING_NOTE}{} failed {times}, next attempt in {}: {} (was: {})",
            failing_what(&failing.action),
            seconds(wait),
            failing.error,
            plan.note
        );
    } else {
        plan.note = format!(
            "{} (retrying; it failed {times}: {})",
            plan.note, failing.error
        );
    }
    plan
}

fn failing_what(action: &Action) -> String {
    match action {
        Action::InitDb => "initdb".to_string(),
        Action::CloneFrom { leader } => format!("cloning from {leader}"),
        Action::Reclone { leader, .. } => format!("re-cloning from {leader}"),
        Action::StartReplica { .. } => "starting PostgreSQL as a standby".to_string(),
        other => format!("{other:?}"),
    }
}

fn seconds(ms: Millis) -> String {
    format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_half_a_second_up_to_its_cap() {
        let waits: Vec<Millis> = (1..=8).map(delay).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(delay(u32::MAX), MAX_DELAY_MS);
    }

    #[test]
    fn only_the_first_failure_and_each_doubling_are_told() {
        let told: Vec<u32> = (1..=40)
            .filter(|&count| {
                Failing {
                    action: Action::InitDb,
                    count,
                    error: String::new(),
                    retry_at: 0,
                }
                .worth_telling()
            })
            .collect();
        assert_eq!(told, [1, 2, 4, 8, 16, 32]);
    }
}
