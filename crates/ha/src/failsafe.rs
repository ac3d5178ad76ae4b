//! Failsafe mode, the answering side: a primary that cannot reach the store
//! asks the other members whether they still follow it. Yes is a promise,
//! kept by the answering member's core ([`crate::Observation::failsafe_promise`]):
//! no leadership taken and nobody deposed while it holds. Its length is the
//! answering member's own (two of its TTLs), never the caller's: whoever can
//! call `POST /failsafe` must not be able to shorten it.

use crate::observation::Millis;

/// TTLs outside this range are not a real cluster's.
pub const TTL_RANGE_MS: std::ops::RangeInclusive<Millis> = 1_000..=600_000;

/// The question a primary in failsafe mode asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub leader: String,
    /// The term the asking primary leads in.
    pub term: u64,
    /// Its TTL: how long it relies on the answer. Checked against the
    /// answering member's, never used for the promise's length.
    pub ttl_ms: Millis,
}

/// What the answering member knows, as of its agent's last round and a
/// store check made for this question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answerer {
    pub member: String,
    /// Its agent has looked at PostgreSQL at least once.
    pub observed: bool,
    /// Its PostgreSQL runs as a primary.
    pub primary: bool,
    /// The leader and term it last read from the store.
    pub leader: Option<(String, u64)>,
    /// The store answers it now.
    pub store_reachable: bool,
    /// The cluster's TTL as it last read it: the promise lasts two.
    pub ttl_ms: Millis,
}

/// Why a question is malformed (a 400 before anything is looked at).
pub fn question_problem(question: &Question) -> Option<String> {
    (!TTL_RANGE_MS.contains(&question.ttl_ms)).then(|| {
        format!(
            "ttl_ms = {} is outside {}..={}",
            question.ttl_ms,
            TTL_RANGE_MS.start(),
            TTL_RANGE_MS.end()
        )
    })
}

/// For how long the member may promise to follow the asking primary, or
/// why it cannot. Only when the store is out of reach here too: a member
/// that reaches it sees the leader key expire and takes part in the
/// election instead, so the primary must step down.
pub fn answer(me: &Answerer, question: &Question) -> Result<Millis, String> {
    if !me.observed {
        // Its agent has not looked at PostgreSQL yet: it might be a primary.
        return Err(format!("{} has not finished its first round", me.member));
    }
    if me.member == question.leader {
        return Err(format!("{} is this member", question.leader));
    }
    if me.primary {
        return Err(format!(
            "{} runs as a primary itself; it follows nobody",
            me.member
        ));
    }
    let asked = (question.leader.clone(), question.term);
    if me.leader.as_ref() != Some(&asked) {
        return Err(format!(
            "{} last saw {} lead, not {} in term {}: {} is not the leader any more",
            me.member,
            match &me.leader {
                Some((name, term)) => format!("{name} in term {term}"),
                None => "nobody".to_string(),
            },
            question.leader,
            question.term,
            question.leader
        ));
    }
    if me.store_reachable {
        return Err(format!(
            "{} reaches the store: {} must step down, and an election follows in the store",
            me.member, question.leader
        ));
    }
    if let Some(problem) = question_problem(question) {
        return Err(problem);
    }
    if question.ttl_ms > me.ttl_ms {
        // It would rely on the answer longer than this member's promise
        // covers with margin: the TTLs disagree (a change half read).
        return Err(format!(
            "{} asks with ttl_ms = {}, longer than the TTL {} knows ({} ms): the members disagree on the TTL",
            question.leader, question.ttl_ms, me.member, me.ttl_ms
        ));
    }
    // Longer than the primary relies on the answer (one TTL from when it
    // asked), so it stops before this member could take over.
    Ok(2 * me.ttl_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(leader: &str) -> Question {
        Question {
            leader: leader.to_string(),
            term: 7,
            ttl_ms: 3_000,
        }
    }

    fn standby() -> Answerer {
        Answerer {
            member: "db2".into(),
            observed: true,
            primary: false,
            leader: Some(("db1".into(), 7)),
            store_reachable: false,
            ttl_ms: 3_000,
        }
    }

    #[test]
    fn a_standby_cut_off_from_the_store_too_promises_two_ttls() {
        assert_eq!(answer(&standby(), &ask("db1")), Ok(6_000));
    }

    #[test]
    fn the_promise_is_two_of_the_answering_members_ttls_whatever_the_caller_says() {
        let mut short = ask("db1");
        short.ttl_ms = 1_000;
        assert_eq!(answer(&standby(), &short), Ok(6_000));
        let mut long = ask("db1");
        long.ttl_ms = 10_000;
        assert!(answer(&standby(), &long)
            .unwrap_err()
            .contains("disagree on the TTL"));
    }

    #[test]
    fn refusals_say_why() {
        let reaches = Answerer {
            store_reachable: true,
            ..standby()
        };
        assert!(answer(&reaches, &ask("db1"))
            .unwrap_err()
            .contains("db1 must step down"));
        let primary = Answerer {
            primary: true,
            ..standby()
        };
        assert!(answer(&primary, &ask("db1"))
            .unwrap_err()
            .contains("primary itself"));
        assert!(answer(&standby(), &ask("db2"))
            .unwrap_err()
            .contains("this member"));
        let mut stale = ask("db1");
        stale.term = 6;
        assert!(answer(&standby(), &stale)
            .unwrap_err()
            .contains("not the leader any more"));
        let starting = Answerer {
            observed: false,
            ..standby()
        };
        assert!(answer(&starting, &ask("db1"))
            .unwrap_err()
            .contains("first round"));
        let mut odd = ask("db1");
        odd.ttl_ms = 10;
        assert!(answer(&standby(), &odd).unwrap_err().contains("outside"));
        assert!(question_problem(&odd).is_some());
        assert!(question_problem(&ask("db1")).is_none());
    }
}
