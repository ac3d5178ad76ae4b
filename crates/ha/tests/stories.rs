//! The decision core, story by story: given what a member sees, the plan is …

use std::collections::{BTreeMap, BTreeSet};

use ha::{
    Action, Cluster, FailsafeList, FailsafePromise, Ha, Handoff, Initialize, Leader, Local, Me,
    MemberView, Observation, Reach, Removed, Replica, Running, Settings, StopMode, Stopped,
    StoreView, SwitchoverRequest, SyncMode, SyncSet,
};

const SYSID: u64 = 7_300_000_000_000_000_001;

fn me(name: &str) -> Ha {
    Ha::new(Me {
        name: name.into(),
        nofailover: false,
        priority: 100,
    })
}

fn standby(lsn: u64, upstream: Option<&str>) -> Local {
    Local::Running(Running {
        system_id: SYSID,
        timeline: 1,
        primary: false,
        lsn,
        upstream: upstream.map(str::to_string),
        streaming: upstream.is_some(),
        sync_applied: vec![],
        sync_applied_any: None,
        receiver_quiet_ms: None,
        replicas: vec![],
    })
}

fn primary(lsn: u64) -> Running {
    Running {
        system_id: SYSID,
        timeline: 1,
        primary: true,
        lsn,
        upstream: None,
        streaming: false,
        sync_applied: vec![],
        sync_applied_any: None,
        receiver_quiet_ms: None,
        replicas: vec![],
    }
}

/// A data directory that last ran as the primary, stopped (timeline 1).
fn stopped_primary() -> Local {
    Local::Stopped(Stopped {
        system_id: SYSID,
        timeline: 1,
        was_primary: true,
    })
}

/// `ctl failover --to <to>`.
fn manual_failover(to: &str) -> SwitchoverRequest {
    SwitchoverRequest {
        from: None,
        to: Some(to.into()),
        requested_ms: 0,
        at_ms: None,
        handoff: None,
    }
}

fn member(primary: bool, lsn: u64) -> MemberView {
    MemberView {
        running: true,
        primary,
        timeline: Some(1),
        lsn: Some(lsn),
        priority: 100,
        streaming: !primary,
        ..MemberView::default()
    }
}

/// db1 primary at 1000, db2 and db3 standbys at 1000 and 900.
fn cluster() -> Cluster {
    Cluster {
        settings: Settings::default(),
        initialize: Some(Initialize::Done { system_id: SYSID }),
        leader: Some(Leader {
            member: "db1".into(),
            term: 3,
        }),
        members: BTreeMap::from([
            ("db1".to_string(), member(true, 1_000)),
            ("db2".to_string(), member(false, 1_000)),
            ("db3".to_string(), member(false, 900)),
        ]),
        sync: None,
        latest_timeline: 1,
        last_primary_lsn: Some(1_000),
        switchover: None,
        failsafe_list: None,
        backups: Default::default(),
        removed: BTreeMap::new(),
    }
}

fn leaderless() -> Cluster {
    let mut cluster = cluster();
    cluster.leader = None;
    cluster.members.remove("db1");
    cluster
}

/// What a member sees at `now`; in these stories the wall clock reads the
/// same as the monotonic one.
fn observe(now: u64, local: Local, cluster: Cluster) -> Observation {
    Observation {
        now,
        wall_ms: now,
        local,
        store: StoreView::Reachable(cluster),
        lease_valid_until: None,
        lease_ttl_ms: None,
        failsafe_confirmed: BTreeMap::new(),
        failsafe_promise: None,
        statuses_seen: BTreeMap::new(),
        reach: Reach::Unchecked,
    }
}

/// The agent reports that every action of `plan` took effect.
fn succeeded(ha: &mut Ha, now: u64, plan: &ha::Plan) {
    for action in &plan.actions {
        ha.outcome(now, action, Ok(()));
    }
}

/// A failover's promotion, creating the slots of the other members.
fn promotion(slots: &[&str]) -> Vec<Action> {
    vec![
        Action::AcquireLeader,
        Action::Promote,
        Action::RecordHistory {
            reason: "failover: the leader key expired".into(),
        },
        slots_for(slots),
    ]
}

/// The new primary's slots for the other members, right after promotion.
fn slots_for(members: &[&str]) -> Action {
    Action::KeepSlots {
        names: members.iter().map(|m| m.to_string()).collect(),
        drop: vec![],
    }
}

mod bootstrap {
    use super::*;

    fn fresh() -> Cluster {
        Cluster {
            initialize: None,
            leader: None,
            members: BTreeMap::new(),
            ..cluster()
        }
    }

    #[test]
    fn given_no_cluster_and_an_empty_data_directory_i_claim_the_right_to_initialise() {
        let plan = me("db1").decide(&observe(0, Local::Empty, fresh()));
        assert_eq!(plan.actions, [Action::ClaimInitialize]);
    }

    #[test]
    fn given_i_won_the_claim_i_run_initdb_then_take_the_leader_key_and_record_the_system_id() {
        let mut ha = me("db1");
        let mut claimed = fresh();
        claimed.initialize = Some(Initialize::Claimed { by: "db1".into() });
        assert_eq!(
            ha.decide(&observe(0, Local::Empty, claimed.clone()))
                .actions,
            [Action::InitDb]
        );
        let plan = ha.decide(&observe(1, Local::Running(primary(100)), claimed));
        assert_eq!(
            plan.actions,
            [
                Action::AcquireLeader,
                Action::CompleteInitialize { system_id: SYSID }
            ]
        );
    }

    #[test]
    fn given_initdb_keeps_failing_i_wait_longer_each_time_and_say_why() {
        let mut ha = me("db1");
        let mut claimed = fresh();
        claimed.initialize = Some(Initialize::Claimed { by: "db1".into() });
        let denied =
            "initdb: could not create directory \"/var/lib/postgresql/15/main\": Permission denied";
        let mut now = 0;
        let mut attempts = Vec::new();
        // Rounds every 100 ms for a minute: initdb runs only when its wait
        // is over, and fails every time.
        while now < 60_000 {
            let plan = ha.decide(&observe(now, Local::Empty, claimed.clone()));
            if plan.actions == [Action::InitDb] {
                attempts.push(now);
                ha.outcome(now, &Action::InitDb, Err(denied));
            } else {
                assert!(plan.is_idle(), "{plan:?}");
                assert!(
                    plan.note.starts_with("FAILING: initdb failed")
                        && plan.note.contains("Permission denied"),
                    "{}",
                    plan.note
                );
            }
            now += 100;
        }
        // 0.5 s, doubling, at most 10 s apart: a dozen attempts, not 600.
        let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..6], [500, 1000, 2000, 4000, 8000, 10_000], "{gaps:?}");
        assert!(gaps[6..].iter().all(|&g| g == 10_000), "{gaps:?}");
        assert_eq!(ha.failing().map(|f| f.count), Some(attempts.len() as u32));

        // Fixed by the operator: the next attempt succeeds and the note is
        // plain again.
        let retry_at = ha.failing().unwrap().retry_at;
        let plan = ha.decide(&observe(retry_at, Local::Empty, claimed.clone()));
        assert_eq!(plan.actions, [Action::InitDb]);
        assert!(plan.note.contains("retrying"), "{}", plan.note);
        succeeded(&mut ha, retry_at, &plan);
        assert_eq!(ha.failing(), None);
        let plan = ha.decide(&observe(retry_at + 1, Local::Empty, claimed));
        assert_eq!(plan.note, "initialising the cluster (initdb)");
    }

    #[test]
    fn given_a_failing_clone_the_actions_before_it_still_run_and_nothing_safety_related_waits() {
        let mut ha = me("db4");
        // A primary that cannot stop is not held back: demoting is safety.
        let stop = Action::Stop {
            mode: StopMode::Fast,
        };
        ha.outcome(0, &stop, Err("pg_ctl: server does not shut down"));
        assert_eq!(ha.failing(), None);
        ha.outcome(0, &Action::AcquireLeader, Err("store unreachable"));
        assert_eq!(ha.failing(), None);

        // A clone from db1 failed: a clone from another leader is a new
        // action and does not wait.
        let clone = Action::CloneFrom {
            leader: "db1".into(),
        };
        ha.outcome(0, &clone, Err("pg_basebackup: connection refused"));
        assert_eq!(ha.failing().map(|f| f.retry_at), Some(500));
        let plan = ha.decide(&observe(100, Local::Empty, cluster()));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(
            plan.note.contains("cloning from db1 failed once"),
            "{}",
            plan.note
        );
        let mut other = cluster();
        other.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        other.members.get_mut("db2").unwrap().primary = true;
        let plan = ha.decide(&observe(200, Local::Empty, other));
        assert_eq!(
            plan.actions.first(),
            Some(&Action::CloneFrom {
                leader: "db2".into()
            })
        );
    }

    #[test]
    fn given_another_member_won_the_claim_i_wait_then_clone_from_the_leader() {
        let mut ha = me("db2");
        let mut claimed = fresh();
        claimed.initialize = Some(Initialize::Claimed { by: "db1".into() });
        let plan = ha.decide(&observe(0, Local::Empty, claimed));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("waiting for db1"), "{}", plan.note);

        let plan = ha.decide(&observe(1, Local::Empty, cluster()));
        assert_eq!(
            plan.actions,
            [
                Action::CloneFrom {
                    leader: "db1".into()
                },
                Action::StartReplica {
                    upstream: Some("db1".into())
                }
            ]
        );
    }

    #[test]
    fn given_a_data_directory_of_another_cluster_i_refuse_to_join() {
        let mut local = standby(1_000, Some("db1"));
        if let Local::Running(running) = &mut local {
            running.system_id = 42;
        }
        let plan = me("db2").decide(&observe(0, local, cluster()));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("system identifier 42"), "{}", plan.note);
        assert!(plan.note.contains("Move it away"), "{}", plan.note);
    }
}

mod leading {
    use super::*;

    #[test]
    fn given_i_lead_with_a_valid_lease_i_renew_it_and_keep_slots_for_the_others() {
        let mut obs = observe(10_000, Local::Running(primary(1_000)), cluster());
        obs.lease_valid_until = Some(12_900);
        let plan = me("db1").decide(&obs);
        assert_eq!(
            plan.actions,
            [
                Action::RenewLeader,
                Action::KeepSlots {
                    names: vec!["db2".into(), "db3".into()],
                    drop: vec![]
                }
            ]
        );
    }

    #[test]
    fn given_a_member_is_gone_longer_than_the_retention_its_slot_is_dropped() {
        let mut ha = me("db1");
        let mut obs = observe(10_000, Local::Running(primary(1_000)), cluster());
        obs.lease_valid_until = Some(12_900);
        ha.decide(&obs);
        let mut gone = cluster();
        gone.members.remove("db3");
        let later = 10_000 + 11 * 60 * 1000;
        let mut obs = observe(later, Local::Running(primary(1_000)), gone);
        obs.lease_valid_until = Some(later + 2_900);
        let plan = ha.decide(&obs);
        assert_eq!(
            plan.actions.last(),
            Some(&Action::KeepSlots {
                names: vec!["db2".into()],
                drop: vec!["db3".into()]
            })
        );
    }

    #[test]
    fn given_my_lease_could_expire_before_i_renew_it_i_stop_accepting_writes_first() {
        let mut obs = observe(10_000, Local::Running(primary(1_000)), cluster());
        obs.lease_valid_until = Some(10_900);
        let plan = me("db1").decide(&obs);
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
    }

    #[test]
    fn given_my_postgresql_crashed_i_restart_it_in_place_then_give_up_the_key_after_the_grace() {
        let mut ha = me("db1");
        let crashed = stopped_primary();
        let plan = ha.decide(&observe(10_000, crashed.clone(), cluster()));
        assert_eq!(plan.actions, [Action::RenewLeader, Action::StartPrimary]);
        let grace = Settings::default().restart_grace_ms;
        let plan = ha.decide(&observe(10_000 + grace, crashed, cluster()));
        assert_eq!(
            plan.actions,
            [
                Action::ReleaseLeader,
                Action::Stop {
                    mode: StopMode::Immediate
                }
            ]
        );
    }

    #[test]
    fn given_i_am_paused_i_only_renew_my_lease() {
        let mut paused = cluster();
        paused.settings.paused = true;
        let mut obs = observe(10_000, Local::Running(primary(1_000)), paused.clone());
        obs.lease_valid_until = Some(12_900);
        assert_eq!(me("db1").decide(&obs).actions, [Action::RenewLeader]);
        paused.leader = None;
        let plan = me("db2").decide(&observe(10_000, standby(1_000, Some("db1")), paused));
        assert!(plan.is_idle(), "paused: no failover: {plan:?}");
    }
}

mod failover {
    use super::*;

    #[test]
    fn given_the_leader_key_expired_and_i_am_the_most_advanced_standby_i_acquire_and_promote() {
        let plan = me("db2").decide(&observe(10_000, standby(1_000, Some("db1")), leaderless()));
        assert_eq!(plan.actions, promotion(&["db3"]));
        assert!(plan.note.contains("taking over"), "{}", plan.note);
    }

    #[test]
    fn given_a_more_advanced_standby_exists_i_wait_a_ttl_before_racing_myself() {
        let mut ha = me("db3");
        let plan = ha.decide(&observe(10_000, standby(900, Some("db1")), leaderless()));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(
            plan.note.contains("db2 is the better candidate"),
            "{}",
            plan.note
        );
        let ttl = Settings::default().ttl_ms;
        let plan = ha.decide(&observe(
            10_000 + ttl,
            standby(900, Some("db1")),
            leaderless(),
        ));
        assert_eq!(
            plan.actions,
            promotion(&["db2"]),
            "db2 did not take over: db3 races"
        );
    }

    #[test]
    fn given_i_am_tagged_nofailover_i_never_take_over() {
        let mut ha = Ha::new(Me {
            name: "db2".into(),
            nofailover: true,
            priority: 100,
        });
        for now in [0, 60_000] {
            let plan = ha.decide(&observe(now, standby(1_000, Some("db1")), leaderless()));
            assert!(plan.is_idle(), "{plan:?}");
        }
    }

    #[test]
    fn given_i_am_further_behind_than_the_lag_limit_i_never_take_over() {
        let mut cluster = leaderless();
        cluster.settings.maximum_lag_on_failover = 50;
        cluster.members.remove("db2");
        let mut ha = me("db3");
        for now in [0, 60_000] {
            let plan = ha.decide(&observe(now, standby(900, Some("db1")), cluster.clone()));
            assert!(plan.is_idle(), "{plan:?}");
            assert!(plan.note.contains("100 bytes behind"), "{}", plan.note);
        }
    }

    #[test]
    fn given_synchronous_mode_only_the_synchronous_standby_takes_over_and_it_resets_the_set_first()
    {
        let mut cluster = leaderless();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::from(["db3".to_string()]),
            quorum: 1,
        });
        let plan = me("db2").decide(&observe(0, standby(1_000, Some("db1")), cluster.clone()));
        assert!(plan.is_idle(), "db2 is ahead but not synchronous: {plan:?}");
        let plan = me("db3").decide(&observe(0, standby(900, Some("db1")), cluster));
        assert_eq!(
            plan.actions,
            [
                Action::AcquireLeader,
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["*".into()],
                    count: 1,
                    quorum: false
                },
                Action::Promote,
                Action::RecordHistory {
                    reason: "failover: the leader key expired".into()
                },
                slots_for(&["db2"]),
            ]
        );
    }

    #[test]
    fn given_a_new_leader_the_other_standbys_re_point_to_it() {
        let mut cluster = cluster();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        cluster.members.remove("db1");
        cluster.members.insert("db2".into(), member(true, 1_100));
        let plan = me("db3").decide(&observe(0, standby(1_000, Some("db1")), cluster));
        assert_eq!(
            plan.actions,
            [Action::Follow {
                upstream: Some("db2".into())
            }]
        );
    }
}

mod old_primary {
    use super::*;

    fn new_leader() -> Cluster {
        let mut cluster = cluster();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        cluster.members.insert("db1".into(), member(true, 1_000));
        cluster.members.insert("db2".into(), member(true, 1_100));
        cluster.members.get_mut("db2").unwrap().timeline = Some(2);
        cluster.latest_timeline = 2;
        cluster
    }

    #[test]
    fn given_another_member_leads_my_running_primary_stops_at_once() {
        let plan = me("db1").decide(&observe(0, Local::Running(primary(1_050)), new_leader()));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
        assert!(
            plan.note.contains("db2 holds the leader key"),
            "{}",
            plan.note
        );
    }

    #[test]
    fn given_i_was_primary_i_rewind_before_following_and_re_clone_when_rewind_fails() {
        let mut ha = me("db1");
        let stopped = stopped_primary();
        let plan = ha.decide(&observe(0, stopped.clone(), new_leader()));
        assert_eq!(
            plan.actions,
            [
                Action::Rewind {
                    leader: "db2".into()
                },
                Action::StartReplica {
                    upstream: Some("db2".into())
                }
            ]
        );
        ha.outcome(
            0,
            &plan.actions[0],
            Err("could not find previous WAL record"),
        );
        let plan = ha.decide(&observe(1, stopped, new_leader()));
        assert_eq!(
            plan.actions[0],
            Action::Reclone {
                leader: "db2".into(),
                reason: "pg_rewind failed: could not find previous WAL record".into()
            }
        );
        assert!(plan.note.contains("pg_rewind failed"), "{}", plan.note);
    }

    #[test]
    fn given_no_leader_yet_a_former_primary_waits_instead_of_starting() {
        let mut cluster = leaderless();
        cluster.members.insert("db1".into(), MemberView::default());
        let plan = me("db1").decide(&observe(0, stopped_primary(), cluster));
        assert!(plan.is_idle(), "{plan:?}");
    }
}

mod switchover {
    use super::*;

    /// db1 leads; db2 and db3 stream from it; a switchover to `to` asked.
    fn asked(to: Option<&str>, due: bool) -> Cluster {
        let mut cluster = cluster();
        for name in ["db2", "db3"] {
            cluster.members.get_mut(name).unwrap().upstream = Some("db1".into());
        }
        cluster.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: to.map(str::to_string),
            requested_ms: 0,
            at_ms: (!due).then_some(1_000_000),
            handoff: None,
        });
        cluster
    }

    fn leading(now: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(now + 2_900);
        obs
    }

    fn handed_over(to: &str) -> Cluster {
        let mut cluster = asked(Some(to), true);
        cluster.leader = None;
        cluster.members.get_mut("db1").unwrap().running = false;
        cluster.switchover.as_mut().unwrap().handoff = Some(Handoff {
            from: "db1".into(),
            to: to.into(),
            final_lsn: 1_040,
            timeline: 1,
            released_ms: 0,
        });
        cluster.last_primary_lsn = Some(1_000);
        cluster
    }

    #[test]
    fn the_leader_stops_cleanly_then_hands_over_to_the_target() {
        let plan = me("db1").decide(&leading(0, asked(Some("db3"), true)));
        assert_eq!(
            plan.actions,
            [
                Action::Stop {
                    mode: StopMode::Fast
                },
                Action::HandOff { to: "db3".into() }
            ]
        );
    }

    #[test]
    fn without_a_target_the_most_advanced_streaming_standby_is_chosen() {
        let plan = me("db1").decide(&leading(0, asked(None, true)));
        assert_eq!(plan.actions[1], Action::HandOff { to: "db2".into() });
    }

    #[test]
    fn a_scheduled_switchover_waits_for_its_time() {
        let plan = me("db1").decide(&leading(0, asked(Some("db2"), false)));
        assert_eq!(plan.actions[0], Action::RenewLeader);
        assert!(!plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::HandOff { .. })));
    }

    #[test]
    fn a_target_that_does_not_stream_cancels_it_and_the_leader_keeps_serving() {
        let mut cluster = asked(Some("db3"), true);
        cluster.members.get_mut("db3").unwrap().streaming = false;
        let plan = me("db1").decide(&leading(0, cluster));
        assert_eq!(plan.actions[0], Action::RenewLeader);
        let Some(Action::ClearSwitchover { outcome }) = plan.actions.last() else {
            panic!("{plan:?}");
        };
        assert!(
            outcome.contains("db3 may not take over: it does not stream from the leader db1"),
            "{outcome}"
        );
    }

    #[test]
    fn a_failed_hand_over_is_given_up_and_the_leader_restarts_in_place() {
        let mut ha = me("db1");
        let plan = ha.decide(&leading(0, asked(Some("db2"), true)));
        ha.outcome(0, &plan.actions[0], Ok(()));
        ha.outcome(0, &plan.actions[1], Err("the switchover key changed"));
        let stopped = stopped_primary();
        let plan = ha.decide(&observe(100, stopped, asked(Some("db2"), true)));
        assert_eq!(plan.actions, [Action::RenewLeader, Action::StartPrimary]);
        let plan = ha.decide(&leading(900, asked(Some("db2"), true)));
        let Some(Action::ClearSwitchover { outcome }) = plan.actions.last() else {
            panic!("{plan:?}");
        };
        assert!(outcome.contains("failed"), "{outcome}");
    }

    #[test]
    fn the_target_takes_over_once_it_has_received_the_final_wal() {
        let mut ha = me("db2");
        let plan = ha.decide(&observe(0, standby(1_040, Some("db1")), handed_over("db2")));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("waiting to receive"), "{}", plan.note);
        let plan = ha.decide(&observe(
            50,
            standby(1_090, Some("db1")),
            handed_over("db2"),
        ));
        assert_eq!(plan.actions[0], Action::AcquireLeader);
        assert!(plan.actions.contains(&Action::Promote), "{plan:?}");
    }

    #[test]
    fn the_others_do_not_race_the_target_until_a_ttl_has_passed() {
        let mut ha = me("db3");
        // db3 is further than db2, and would win an ordinary race.
        let plan = ha.decide(&observe(0, standby(1_100, Some("db1")), handed_over("db2")));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("under way"), "{}", plan.note);
        let plan = ha.decide(&observe(
            3_100,
            standby(1_100, Some("db1")),
            handed_over("db2"),
        ));
        assert_eq!(plan.actions[0], Action::AcquireLeader);
    }

    #[test]
    fn the_old_primary_follows_the_target_without_rewinding() {
        let mut ha = me("db1");
        let plan = ha.decide(&leading(0, asked(Some("db2"), true)));
        assert_eq!(plan.actions[1], Action::HandOff { to: "db2".into() });
        succeeded(&mut ha, 0, &plan);
        let stopped = stopped_primary();
        let plan = ha.decide(&observe(100, stopped.clone(), handed_over("db2")));
        assert!(plan.is_idle(), "{plan:?}");
        let mut promoted = handed_over("db2");
        promoted.leader = Some(Leader {
            member: "db2".into(),
            term: 9,
        });
        promoted.members.insert("db2".into(), member(true, 1_100));
        promoted.members.get_mut("db2").unwrap().timeline = Some(2);
        promoted.latest_timeline = 2;
        let plan = ha.decide(&observe(400, stopped, promoted));
        assert_eq!(
            plan.actions,
            [Action::StartReplica {
                upstream: Some("db2".into())
            }]
        );
    }

    #[test]
    fn the_new_leader_clears_the_request_saying_how_it_ended() {
        let mut cluster = handed_over("db2");
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 9,
        });
        let plan = me("db2").decide(&leading(0, cluster.clone()));
        assert_eq!(
            plan.actions.last(),
            Some(&Action::ClearSwitchover {
                outcome: "switchover from db1 to db2 done".into()
            })
        );
        cluster.leader = Some(Leader {
            member: "db3".into(),
            term: 9,
        });
        let plan = me("db3").decide(&leading(0, cluster));
        let Some(Action::ClearSwitchover { outcome }) = plan.actions.last() else {
            panic!("{plan:?}");
        };
        assert!(outcome.contains("did not finish"), "{outcome}");
    }

    #[test]
    fn a_hand_over_the_cluster_moved_on_from_is_ignored() {
        // db1 handed over to db2, then db3 took over after the timeout and
        // wrote; a late db2 must not take over on the old hand-over.
        let mut cluster = handed_over("db2");
        cluster.latest_timeline = 2;
        let plan = me("db2").decide(&observe(0, standby(1_090, None), cluster.clone()));
        assert!(!plan.note.contains("switchover"), "{}", plan.note);
        cluster.latest_timeline = 1;
        cluster.last_primary_lsn = Some(1_200);
        let plan = me("db2").decide(&observe(0, standby(1_090, None), cluster));
        assert!(!plan.note.contains("switchover"), "{}", plan.note);
    }

    #[test]
    fn a_manual_failover_lets_only_the_named_member_take_over() {
        let mut cluster = leaderless();
        cluster.switchover = Some(manual_failover("db3"));
        // db2 is the better candidate but was not named.
        let plan = me("db2").decide(&observe(0, standby(1_000, None), cluster.clone()));
        assert!(plan.is_idle(), "{plan:?}");
        let plan = me("db3").decide(&observe(0, standby(900, None), cluster));
        assert_eq!(plan.actions[0], Action::AcquireLeader);
    }

    #[test]
    fn paused_only_a_manual_failover_promotes_and_only_the_named_member() {
        let mut cluster = leaderless();
        cluster.settings.paused = true;
        let plan = me("db2").decide(&observe(0, standby(1_000, None), cluster.clone()));
        assert!(plan.is_idle(), "paused: no automatic failover: {plan:?}");
        cluster.switchover = Some(manual_failover("db3"));
        let plan = me("db2").decide(&observe(0, standby(1_000, None), cluster.clone()));
        assert!(plan.is_idle(), "{plan:?}");
        let plan = me("db3").decide(&observe(0, standby(900, None), cluster.clone()));
        assert_eq!(plan.actions[0], Action::AcquireLeader);
        assert!(plan.actions.contains(&Action::Promote), "{plan:?}");
        // Once it leads, it clears the request.
        cluster.leader = Some(Leader {
            member: "db3".into(),
            term: 9,
        });
        let mut obs = observe(10, Local::Running(primary(900)), cluster);
        obs.lease_valid_until = Some(2_900);
        let plan = me("db3").decide(&obs);
        assert_eq!(
            plan.actions,
            [
                Action::RenewLeader,
                Action::ClearSwitchover {
                    outcome: "manual failover to db3 done".into()
                }
            ]
        );
    }

    #[test]
    fn a_leader_that_does_not_serve_gives_up_the_key_for_a_manual_failover() {
        let mut cluster = cluster();
        cluster.switchover = Some(manual_failover("db2"));
        let plan = me("db1").decide(&observe(0, Local::Starting { was_primary: true }, cluster));
        assert_eq!(plan.actions.last(), Some(&Action::ReleaseLeader));
    }
}

mod switchover_in_wall_time {
    use super::*;

    /// db1 leads on timeline 2 (its lease valid), db2 streams from it; a
    /// switchover to db2 asked at wall time 0.
    fn asked(db2_timeline: u32, at_ms: Option<u64>) -> Cluster {
        let mut cluster = cluster();
        cluster.latest_timeline = 2;
        for (name, view) in cluster.members.iter_mut() {
            view.timeline = Some(2);
            view.upstream = (name != "db1").then(|| "db1".into());
        }
        cluster.members.get_mut("db2").unwrap().timeline = Some(db2_timeline);
        cluster.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: Some("db2".into()),
            requested_ms: 0,
            at_ms,
            handoff: None,
        });
        cluster
    }

    fn leading(wall_ms: u64, cluster: Cluster) -> Observation {
        leading_at(10_000, wall_ms, cluster)
    }

    /// db1 leading at `now` on its own clock, `wall_ms` on the wall clock.
    fn leading_at(now: u64, wall_ms: u64, cluster: Cluster) -> Observation {
        let mut running = primary(1_000);
        running.timeline = 2;
        let mut obs = observe(now, Local::Running(running), cluster);
        obs.wall_ms = wall_ms;
        obs.lease_valid_until = Some(now + 2_900);
        obs
    }

    fn hands_over(plan: &ha::Plan) -> bool {
        plan.actions.contains(&Action::HandOff { to: "db2".into() })
    }

    fn clears(plan: &ha::Plan) -> Option<&str> {
        plan.actions.iter().find_map(|a| match a {
            Action::ClearSwitchover { outcome } => Some(outcome.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_scheduled_switchover_is_carried_out_once_the_wall_clock_reaches_its_time() {
        let ha = me("db1");
        let plan = ha.plan(&leading(59_999, asked(2, Some(60_000))));
        assert!(!hands_over(&plan) && clears(&plan).is_none(), "{plan:?}");
        let plan = ha.plan(&leading(60_000, asked(2, Some(60_000))));
        assert!(hands_over(&plan), "{plan:?}");
    }

    /// bench/switchover, round 9: db2 had just handed over to db1 and
    /// rejoined; it streamed from db1 but had not yet replayed the switch
    /// to timeline 2 when the switchover back was asked.
    #[test]
    fn a_target_still_replaying_the_switch_to_my_timeline_is_waited_for_then_taken() {
        let ha = me("db1");
        let plan = ha.plan(&leading(1_000, asked(1, None)));
        assert_eq!(plan.actions[0], Action::RenewLeader);
        assert!(!hands_over(&plan) && clears(&plan).is_none(), "{plan:?}");
        let plan = ha.plan(&leading(1_500, asked(2, None)));
        assert!(hands_over(&plan), "{plan:?}");
    }

    #[test]
    fn a_target_that_never_reaches_my_timeline_cancels_it_after_the_bound() {
        let mut ha = me("db1");
        let bound = ha::switchover::catch_up_bound_ms(Settings::default().ttl_ms);
        // The wait is timed on the leader's own clock from the round that
        // first saw the request due: a wall clock 100 s ahead of the host
        // that recorded the request must not cancel it at once.
        let skewed = 100_000;
        let plan = ha.decide(&leading_at(0, skewed, asked(1, None)));
        assert!(clears(&plan).is_none(), "{plan:?}");
        let plan = ha.decide(&leading_at(bound - 1, skewed + bound - 1, asked(1, None)));
        assert!(clears(&plan).is_none(), "{plan:?}");
        let plan = ha.decide(&leading_at(bound, skewed + bound, asked(1, None)));
        let outcome = clears(&plan).expect("cleared");
        assert!(
            outcome.contains("has not replayed the switch to timeline 2"),
            "{outcome}"
        );
        assert!(!hands_over(&plan));
    }

    #[test]
    fn what_the_api_admits_the_leader_carries_out() {
        for db2_timeline in [1, 2] {
            let cluster = asked(db2_timeline, None);
            let ask = ha::switchover::Ask {
                from: None,
                to: Some("db2".into()),
                at_ms: None,
            };
            assert!(ha::switchover::admit_switchover(&cluster, &ask, 0).is_ok());
            let plan = me("db1").plan(&leading(0, cluster));
            assert!(
                clears(&plan).is_none(),
                "admitted, then cancelled: {plan:?}"
            );
        }
    }

    #[test]
    fn a_hand_over_older_than_two_ttls_by_the_wall_clock_is_over() {
        let mut cluster = asked(2, None);
        cluster.leader = None;
        cluster.members.remove("db1");
        cluster.switchover.as_mut().unwrap().handoff = Some(Handoff {
            from: "db1".into(),
            to: "db2".into(),
            final_lsn: 1_040,
            timeline: 2,
            released_ms: 100_000,
        });
        let mut running = match standby(1_100, Some("db1")) {
            Local::Running(running) => running,
            _ => unreachable!(),
        };
        running.timeline = 2;
        // db3 is further than db2: in the usual race it takes over.
        cluster.members.get_mut("db3").unwrap().lsn = Some(1_100);
        let ttl = Settings::default().ttl_ms;
        let mut obs = observe(0, Local::Running(running), cluster);
        obs.wall_ms = 100_000 + 2 * ttl;
        let plan = me("db3").plan(&obs);
        assert!(plan.note.contains("under way"), "{}", plan.note);
        obs.wall_ms += 1;
        let plan = me("db3").plan(&obs);
        assert_eq!(
            plan.actions.first(),
            Some(&Action::AcquireLeader),
            "{plan:?}"
        );
    }
}

/// The agent reports how each action ended; what the core remembers
/// changes only once an action took effect, so a failure is planned
/// around on the next round instead of being taken for done.
mod outcomes {
    use super::*;

    fn leading(now: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(now + 2_900);
        obs
    }

    /// db1 led; its PostgreSQL stayed down past the grace, so it gives up
    /// the key; then, leaderless, it runs again as the best standby.
    fn gave_up_the_key(release: Result<(), &str>) -> ha::Plan {
        let mut ha = me("db1");
        let grace = Settings::default().restart_grace_ms;
        ha.decide(&observe(0, stopped_primary(), cluster()));
        let plan = ha.decide(&observe(grace, stopped_primary(), cluster()));
        assert_eq!(plan.actions[0], Action::ReleaseLeader, "{plan:?}");
        ha.outcome(grace, &plan.actions[0], release);
        let mut alone = cluster();
        alone.leader = None;
        alone.members.remove("db1");
        ha.decide(&observe(grace + 100, standby(1_100, None), alone))
    }

    #[test]
    fn a_released_key_holds_me_back_from_the_next_race_a_failed_release_does_not() {
        let plan = gave_up_the_key(Ok(()));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(
            plan.note.contains("just gave up leadership"),
            "{}",
            plan.note
        );
        let plan = gave_up_the_key(Err("etcd: request timed out"));
        assert_eq!(
            plan.actions.first(),
            Some(&Action::AcquireLeader),
            "{plan:?}"
        );
    }

    #[test]
    fn a_slot_whose_drop_failed_is_dropped_again() {
        let mut ha = me("db1");
        ha.decide(&leading(0, cluster()));
        let mut gone = cluster();
        gone.members.remove("db3");
        let later = 11 * 60 * 1000;
        let keep = |names: &[&str], drop: &[&str]| Action::KeepSlots {
            names: names.iter().map(|n| n.to_string()).collect(),
            drop: drop.iter().map(|n| n.to_string()).collect(),
        };
        let plan = ha.decide(&leading(later, gone.clone()));
        assert_eq!(plan.actions.last(), Some(&keep(&["db2"], &["db3"])));
        ha.outcome(
            later,
            plan.actions.last().unwrap(),
            Err("permission denied"),
        );
        let plan = ha.decide(&leading(later + 500, gone.clone()));
        assert_eq!(plan.actions.last(), Some(&keep(&["db2"], &["db3"])));
        succeeded(&mut ha, later + 500, &plan);
        let plan = ha.decide(&leading(later + 1_000, gone));
        assert_eq!(plan.actions.last(), Some(&keep(&["db2"], &[])));
    }

    /// Actions whose failure leaves nothing to remember: the next round,
    /// seeing the same world, plans them again.
    #[test]
    fn a_failed_stop_promotion_race_clone_or_start_is_planned_again() {
        let mut new_leader = cluster();
        new_leader.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        let cases: Vec<(&str, Local, Cluster)> = vec![
            ("stop", Local::Running(primary(1_050)), new_leader),
            ("failover", standby(1_000, Some("db1")), leaderless()),
            ("clone", Local::Empty, cluster()),
            (
                "start",
                Local::Stopped(Stopped {
                    system_id: SYSID,
                    timeline: 1,
                    was_primary: false,
                }),
                cluster(),
            ),
        ];
        for (what, local, cluster) in cases {
            let name = if what == "stop" { "db1" } else { "db2" };
            let mut ha = me(name);
            let first = ha.decide(&observe(10_000, local.clone(), cluster.clone()));
            assert!(!first.is_idle(), "{what}: {first:?}");
            ha.outcome(10_000, &first.actions[0], Err("it failed"));
            let again = ha.decide(&observe(10_500, local, cluster));
            assert_eq!(again.actions, first.actions, "{what}");
        }
    }
}

mod store_outage {
    use super::*;

    fn unreachable(now: u64, local: Local, lease_valid_until: Option<u64>) -> Observation {
        Observation {
            now,
            wall_ms: now,
            local,
            store: StoreView::Unreachable,
            lease_valid_until,
            lease_ttl_ms: None,
            failsafe_confirmed: BTreeMap::new(),
            failsafe_promise: None,
            statuses_seen: BTreeMap::new(),
            reach: Reach::Unchecked,
        }
    }

    /// db1 leads, its lease valid until 3 000, the store reachable.
    fn leading(now: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(3_000);
        obs
    }

    /// No leader, db1 gone, failsafe on.
    fn leaderless_failsafe() -> Cluster {
        let mut cluster = leaderless();
        cluster.settings.failsafe = true;
        cluster
    }

    #[test]
    fn given_the_store_is_unreachable_a_standby_never_promotes() {
        let mut ha = me("db2");
        ha.decide(&observe(0, standby(1_000, Some("db1")), leaderless()));
        for now in [1_000, 60_000] {
            let plan = ha.decide(&unreachable(now, standby(1_000, Some("db1")), None));
            assert!(plan.is_idle(), "{plan:?}");
        }
    }

    #[test]
    fn given_the_store_is_unreachable_the_primary_serves_while_its_lease_holds_then_demotes() {
        let mut ha = me("db1");
        let plan = ha.decide(&unreachable(
            10_000,
            Local::Running(primary(1_000)),
            Some(12_000),
        ));
        assert!(plan.is_idle(), "{plan:?}");
        let plan = ha.decide(&unreachable(
            11_100,
            Local::Running(primary(1_000)),
            Some(12_000),
        ));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
    }

    #[test]
    fn given_failsafe_the_primary_serves_while_every_member_confirms_and_the_answers_are_fresh() {
        let mut ha = me("db1");
        let mut failsafe = cluster();
        failsafe.settings.failsafe = true;
        let all = ["db1", "db2", "db3"].map(String::from);
        let plan = ha.decide(&leading(0, failsafe.clone()));
        assert!(
            plan.actions.contains(&Action::PublishFailsafe {
                members: all.to_vec()
            }),
            "the leader lists whom it would ask: {plan:?}"
        );
        failsafe.failsafe_list = Some(FailsafeList {
            leader: "db1".into(),
            members: BTreeSet::from(all),
        });
        let plan = ha.decide(&leading(100, failsafe));
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::PublishFailsafe { .. })),
            "published once: {plan:?}"
        );
        let stop = [Action::Stop {
            mode: StopMode::Immediate,
        }];
        let mut outage = unreachable(20_000, Local::Running(primary(1_000)), Some(3_000));
        outage.failsafe_confirmed = BTreeMap::from([("db2".to_string(), 19_500)]);
        assert_eq!(ha.decide(&outage).actions, stop, "db3 did not confirm");
        // Asked at 19 500: the answers hold until 22 500, the TTL later.
        outage.failsafe_confirmed.insert("db3".into(), 19_500);
        let plan = ha.decide(&outage);
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.starts_with("failsafe"), "{}", plan.note);
        // Not asked again in time: it stops a margin before they run out,
        // as it does before its lease runs out.
        outage.now = 21_600;
        assert_eq!(ha.decide(&outage).actions, stop);
    }

    #[test]
    fn given_failsafe_off_confirmations_change_nothing() {
        let mut ha = me("db1");
        ha.decide(&leading(0, cluster()));
        let mut outage = unreachable(20_000, Local::Running(primary(1_000)), Some(3_000));
        outage.failsafe_confirmed =
            BTreeMap::from([("db2".to_string(), 19_900), ("db3".to_string(), 19_900)]);
        assert_eq!(
            ha.decide(&outage).actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
    }

    #[test]
    fn in_failsafe_mode_a_member_off_the_published_list_does_not_take_over() {
        let mut ha = me("db2");
        let mut cluster = leaderless_failsafe();
        cluster.failsafe_list = Some(FailsafeList {
            leader: "db1".into(),
            members: BTreeSet::from(["db1".to_string(), "db3".to_string()]),
        });
        // Started at 1 000; long after, only the list holds it back.
        ha.decide(&observe(
            1_000,
            standby(1_000, Some("db1")),
            cluster.clone(),
        ));
        let plan = ha.decide(&observe(
            60_000,
            standby(1_000, Some("db1")),
            cluster.clone(),
        ));
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        assert!(
            plan.note.contains("not on the failsafe list"),
            "{}",
            plan.note
        );
        cluster.settings.failsafe = false;
        let plan = ha.decide(&observe(61_000, standby(1_000, Some("db1")), cluster));
        assert!(plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn in_failsafe_mode_an_agent_that_just_started_does_not_race_for_two_ttls() {
        let mut ha = me("db2");
        let cluster = leaderless_failsafe();
        let plan = ha.decide(&observe(
            1_000,
            standby(1_000, Some("db1")),
            cluster.clone(),
        ));
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        assert!(plan.note.contains("may have promised"), "{}", plan.note);
        let plan = ha.decide(&observe(7_000, standby(1_000, Some("db1")), cluster));
        assert!(plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn a_member_that_promised_a_failsafe_primary_neither_races_nor_deposes_until_the_promise_ends()
    {
        let mut ha = me("db2");
        let mut obs = observe(5_000, standby(1_000, Some("db1")), leaderless());
        obs.failsafe_promise = Some(FailsafePromise {
            leader: "db1".into(),
            until: 10_000,
        });
        let plan = ha.decide(&obs);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        assert!(plan.note.contains("failsafe"), "{}", plan.note);
        obs.now = 10_000;
        let plan = ha.decide(&obs);
        assert!(plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn a_caller_asking_with_a_short_ttl_gets_the_answering_members_two_ttls() {
        use ha::failsafe::{answer, Answerer, Question};
        let ttl = Settings::default().ttl_ms;
        let me_db2 = Answerer {
            member: "db2".into(),
            observed: true,
            primary: false,
            leader: Some(("db1".into(), 7)),
            store_reachable: false,
            ttl_ms: ttl,
        };
        // Whoever reaches the API asks with ttl_ms = 1000, hoping for a
        // promise of 2 s while the primary relies on it for its own TTL.
        let asked_at = 5_000;
        let hold = answer(
            &me_db2,
            &Question {
                leader: "db1".into(),
                term: 7,
                ttl_ms: 1_000,
            },
        )
        .unwrap();
        assert_eq!(hold, 2 * ttl);
        let mut ha = me("db2");
        let mut obs = observe(asked_at, standby(1_000, Some("db1")), leaderless());
        obs.failsafe_promise = Some(FailsafePromise {
            leader: "db1".into(),
            until: asked_at + hold,
        });
        // Past the 2 s the caller asked for, and past the TTL the primary
        // relies on the answer: db2 still keeps its word.
        obs.now = asked_at + ttl + 1;
        let plan = ha.decide(&obs);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        obs.now = asked_at + 2 * ttl;
        let plan = ha.decide(&obs);
        assert!(plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }
}

mod synchronous {
    use super::*;

    fn leading(
        sync_applied: &[&str],
        replicas: &[(&str, bool, bool)],
        published: &[&str],
    ) -> Vec<Action> {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: published.iter().map(|s| s.to_string()).collect(),
            quorum: published.len() as u32,
        });
        let mut running = primary(1_000);
        running.sync_applied = sync_applied.iter().map(|s| s.to_string()).collect();
        running.replicas = replicas
            .iter()
            .map(|(name, streaming, synchronous)| Replica {
                name: name.to_string(),
                streaming: *streaming,
                synchronous: *synchronous,
                flush_lsn: if *name == "db2" { 1_000 } else { 900 },
            })
            .collect();
        let mut obs = observe(0, Local::Running(running), cluster);
        obs.lease_valid_until = Some(5_000);
        let mut actions = me("db1").decide(&obs).actions;
        actions.retain(|a| !matches!(a, Action::RenewLeader | Action::KeepSlots { .. }));
        actions
    }

    #[test]
    fn the_primary_first_makes_postgresql_wait_for_the_most_advanced_standby() {
        assert_eq!(
            leading(&[], &[("db2", true, false), ("db3", true, false)], &[]),
            [Action::ApplySynchronous {
                names: vec!["db2".into()],
                count: 1,
                quorum: false
            }]
        );
    }

    #[test]
    fn a_standby_tagged_nosync_is_never_waited_for() {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.members.get_mut("db2").unwrap().nosync = true;
        let mut running = primary(1_000);
        running.replicas = ["db2", "db3"]
            .iter()
            .map(|name| Replica {
                name: name.to_string(),
                streaming: true,
                synchronous: false,
                flush_lsn: if *name == "db2" { 1_000 } else { 900 },
            })
            .collect();
        let mut obs = observe(0, Local::Running(running), cluster);
        obs.lease_valid_until = Some(5_000);
        let actions = me("db1").decide(&obs).actions;
        assert!(
            actions.contains(&Action::ApplySynchronous {
                names: vec!["db3".into()],
                count: 1,
                quorum: false
            }),
            "the less advanced db3, not the nosync db2: {actions:?}"
        );
    }

    #[test]
    fn then_publishes_it_once_postgresql_reports_it_synchronous() {
        assert_eq!(
            leading(&["db2"], &[("db2", true, true), ("db3", true, false)], &[]),
            [Action::PublishSync {
                members: vec!["db2".into()],
                quorum: 1
            }]
        );
        assert_eq!(
            leading(
                &["db2"],
                &[("db2", true, true), ("db3", true, false)],
                &["db2"]
            ),
            []
        );
    }

    #[test]
    fn a_lost_synchronous_standby_leaves_the_published_set_before_postgresql_stops_waiting_for_it()
    {
        assert_eq!(
            leading(&["db2"], &[("db3", true, false)], &["db2"]),
            [
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["db3".into()],
                    count: 1,
                    quorum: false
                }
            ]
        );
    }

    #[test]
    fn strict_mode_keeps_waiting_rather_than_acknowledging_unprotected() {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.settings.synchronous_strict = true;
        let mut running = primary(1_000);
        running.sync_applied = vec!["db2".into()];
        let mut obs = observe(0, Local::Running(running), cluster);
        obs.lease_valid_until = Some(5_000);
        let plan = me("db1").decide(&obs);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::ApplySynchronous { .. })),
            "strict: db2 stays required: {plan:?}"
        );
    }

    #[test]
    fn availability_mode_stops_waiting_when_no_standby_is_left() {
        assert_eq!(
            leading(&["db2"], &[], &["db2"]),
            [
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec![],
                    count: 0,
                    quorum: false
                }
            ]
        );
    }
}

#[test]
fn a_witness_only_observes() {
    let plan = me("w1").decide(&observe(0, Local::Witness, leaderless()));
    assert!(plan.is_idle());
}

/// Stories the deterministic simulation (crates/sim) told first; the seed
/// that found each is in its comment.
mod found_by_simulation {
    use super::*;

    fn primary_obs(now: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(now + 2_900);
        obs
    }

    fn synchronous(sync: Option<SyncSet>) -> Cluster {
        let mut cluster = leaderless();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = sync;
        cluster
    }

    /// Seed 1: db1 led alone (no standby left, not strict), crashed, and
    /// came back as a standby; nobody else was synchronous, and neither was
    /// it, so the cluster stayed without a primary for good.
    #[test]
    fn given_synchronous_mode_the_primary_that_published_the_set_may_take_over_again() {
        let cluster = synchronous(Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::new(),
            quorum: 0,
        }));
        let plan = me("db1").decide(&observe(0, standby(1_100, None), cluster.clone()));
        assert_eq!(plan.actions[0], Action::AcquireLeader, "{plan:?}");
        assert!(plan.actions.contains(&Action::Promote), "{plan:?}");
        let plan = me("db2").decide(&observe(0, standby(1_000, Some("db1")), cluster));
        assert!(
            plan.is_idle(),
            "db2 may lack what db1 acknowledged: {plan:?}"
        );
    }

    /// Seed 1 as well: before any primary published a set, nothing was
    /// acknowledged under synchronous replication; the lag limit decides.
    #[test]
    fn given_synchronous_mode_and_no_set_published_yet_the_lag_limit_alone_decides() {
        let plan = me("db2").decide(&observe(0, standby(1_000, Some("db1")), synchronous(None)));
        assert_eq!(plan.actions[0], Action::AcquireLeader, "{plan:?}");
    }

    /// Seed 648: the primary made PostgreSQL wait for db3 before the
    /// synchronous key existed; its agent died, db2 was promoted (no set
    /// published) and lost a commit db1 had acknowledged with db3.
    #[test]
    fn a_primary_names_itself_in_the_synchronous_key_before_postgresql_waits_for_anyone() {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = None;
        let mut obs = primary_obs(0, cluster);
        if let Local::Running(running) = &mut obs.local {
            running.replicas = vec![Replica {
                name: "db3".into(),
                streaming: true,
                synchronous: false,
                flush_lsn: 1_000,
            }];
        }
        let mut actions = me("db1").decide(&obs).actions;
        actions.retain(|a| !matches!(a, Action::RenewLeader | Action::KeepSlots { .. }));
        assert_eq!(
            actions,
            [
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["db3".into()],
                    count: 1,
                    quorum: false
                }
            ]
        );
    }

    /// Seed 1455: db3 lost its synchronous standby db1 and made PostgreSQL
    /// wait for db2 instead, which PostgreSQL reported synchronous at once
    /// (a standby stays `streaming` however far behind it falls); published,
    /// then promoted, db2 lacked commits db1 had confirmed.
    #[test]
    fn a_new_synchronous_standby_is_published_only_once_it_has_what_was_acknowledged_before() {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::new(),
            quorum: 0,
        });
        let leading = |lsn: u64, flush_lsn: u64| {
            let mut running = primary(lsn);
            running.sync_applied = vec!["db3".into()];
            running.replicas = vec![Replica {
                name: "db3".into(),
                streaming: true,
                synchronous: true,
                flush_lsn,
            }];
            let mut obs = primary_obs(0, cluster.clone());
            obs.local = Local::Running(running);
            obs
        };
        let mut ha = me("db1");
        let published = |ha: &mut Ha, obs: &Observation| -> Vec<Action> {
            let mut actions = ha.decide(obs).actions;
            actions.retain(|a| matches!(a, Action::PublishSync { .. }));
            actions
        };
        assert_eq!(
            published(&mut ha, &leading(1_000, 900)),
            [],
            "db3 is 100 behind"
        );
        assert_eq!(
            published(&mut ha, &leading(1_100, 1_000)),
            [Action::PublishSync {
                members: vec!["db3".into()],
                quorum: 1
            }],
            "db3 holds everything from before PostgreSQL waited for it"
        );
    }

    /// Seed 648 too: the bootstrapping primary publishes the synchronous
    /// key before the others may clone (they wait for the completed
    /// initialize key).
    #[test]
    fn given_synchronous_mode_the_first_primary_publishes_the_set_before_completing_initialisation()
    {
        let mut claimed = cluster();
        claimed.initialize = Some(Initialize::Claimed { by: "db1".into() });
        claimed.leader = None;
        claimed.members.clear();
        claimed.settings.synchronous_mode = SyncMode::First;
        let plan = me("db1").decide(&observe(1, Local::Running(primary(100)), claimed));
        assert_eq!(
            plan.actions,
            [
                Action::AcquireLeader,
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::CompleteInitialize { system_id: SYSID }
            ]
        );
    }

    /// Seed 39: db2, a nofailover primary, thawed after its lease had
    /// expired, saw no leader, "waited for db3" and kept accepting writes
    /// while db3 was promoted.
    #[test]
    fn given_no_leader_a_running_primary_that_may_not_take_over_stops_accepting_writes() {
        let mut ha = Ha::new(Me {
            name: "db1".into(),
            nofailover: true,
            priority: 100,
        });
        let plan = ha.decide(&primary_obs(10_000, leaderless()));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
        assert!(plan.note.contains("may not take over"), "{}", plan.note);
    }

    #[test]
    fn given_no_leader_a_running_primary_that_is_not_the_best_candidate_stops_accepting_writes() {
        let mut cluster = leaderless();
        cluster.members.get_mut("db2").unwrap().priority = 200;
        let plan = me("db1").decide(&primary_obs(10_000, cluster));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }],
            "db2 is as far and preferred: {}",
            plan.note
        );
    }

    /// Seeds 7105 and 12171: a promotion whose history never reached the
    /// store (cut off mid-round), then another promotion to the same
    /// timeline number; a standby on the first branch never streamed again,
    /// and pg_rewind sees nothing to rewind on one timeline.
    #[test]
    fn given_i_cannot_stream_from_the_leader_on_its_timeline_for_long_i_re_clone() {
        let mut ha = me("db3");
        let stuck = Local::Running(Running {
            streaming: false,
            ..match standby(900, Some("db1")) {
                Local::Running(running) => running,
                _ => unreachable!(),
            }
        });
        let plan = ha.decide(&observe(10_000, stuck.clone(), cluster()));
        assert!(plan.is_idle(), "{plan:?}");
        let ttl = Settings::default().ttl_ms;
        let plan = ha.decide(&observe(10_001 + 2 * ttl, stuck, cluster()));
        assert!(
            matches!(&plan.actions[..], [
                Action::Stop { mode: StopMode::Fast },
                Action::Reclone { leader, .. },
                Action::StartReplica { .. },
            ] if leader == "db1"),
            "{plan:?}"
        );
        assert!(plan.note.contains("re-clone"), "{}", plan.note);
        // The re-clone fails: the next round re-clones again, it does not
        // merely restart the diverged standby.
        ha.outcome(10_001 + 2 * ttl, &plan.actions[0], Ok(()));
        ha.outcome(
            10_001 + 2 * ttl,
            &plan.actions[1],
            Err("pg_basebackup: could not connect"),
        );
        let stopped = Local::Stopped(Stopped {
            system_id: SYSID,
            timeline: 1,
            was_primary: false,
        });
        // (Once the failed attempt's wait is over: a re-clone that fails
        // again and again backs off.)
        let plan = ha.decide(&observe(10_002 + 2 * ttl, stopped.clone(), cluster()));
        assert!(plan.is_idle(), "{plan:?}");
        let plan = ha.decide(&observe(10_501 + 2 * ttl, stopped, cluster()));
        assert!(
            matches!(&plan.actions[..], [Action::Reclone { leader, .. }, Action::StartReplica { .. }] if leader == "db1"),
            "{plan:?}"
        );
    }

    /// Seeds 53, 172, 267, 278: a nofailover member initialised the
    /// cluster; once it lost the key nobody else could take over.
    #[test]
    fn given_i_am_tagged_nofailover_i_leave_initialising_the_cluster_to_others() {
        let mut fresh = cluster();
        fresh.initialize = None;
        fresh.leader = None;
        fresh.members.clear();
        let mut ha = Ha::new(Me {
            name: "db1".into(),
            nofailover: true,
            priority: 100,
        });
        let plan = ha.decide(&observe(0, Local::Empty, fresh));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("nofailover"), "{}", plan.note);
    }
}

mod fast_failover {
    use super::*;

    /// db1 leads in synchronous mode with db2 synchronous; nobody streams
    /// from db1 any more (its host died) and its status is frozen.
    fn primary_gone_silent() -> Cluster {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::from(["db2".to_string()]),
            quorum: 1,
        });
        for (name, view) in cluster.members.iter_mut() {
            view.revision = 40;
            if name != "db1" {
                view.streaming = false;
                view.upstream = Some("db1".into());
            }
        }
        cluster
    }

    fn not_streaming(lsn: u64) -> Local {
        Local::Running(Running {
            streaming: false,
            ..match standby(lsn, Some("db1")) {
                Local::Running(running) => running,
                _ => unreachable!(),
            }
        })
    }

    fn decide_twice(ha: &mut Ha, first: Cluster, second: Cluster, lsn: u64) -> ha::Plan {
        ha.decide(&observe(10_000, not_streaming(lsn), first));
        let beats = 2 * Settings::default().heartbeat_ms;
        ha.decide(&observe(10_000 + beats, not_streaming(lsn), second))
    }

    fn quiet_receiver(lsn: u64, quiet_ms: Option<u64>) -> Local {
        match not_streaming(lsn) {
            Local::Running(running) => Local::Running(Running {
                receiver_quiet_ms: quiet_ms,
                ..running
            }),
            _ => unreachable!(),
        }
    }

    /// A receiver still connected to a frozen or cut-off primary hears
    /// nothing: it stopped receiving when it last heard something, so the
    /// standby need not watch it for another heartbeat.
    #[test]
    fn given_my_receiver_heard_nothing_for_a_while_i_depose_at_my_first_look() {
        let mut ha = me("db2");
        ha.decide(&observe(
            10_000,
            standby(1_000, Some("db1")),
            primary_gone_silent(),
        ));
        let beats = 2 * Settings::default().heartbeat_ms;
        let plan = ha.decide(&observe(
            10_000 + beats,
            quiet_receiver(1_000, Some(800)),
            primary_gone_silent(),
        ));
        assert!(
            matches!(plan.actions.first(), Some(Action::DeposeLeader { .. })),
            "{plan:?}"
        );
    }

    /// A standby that receives nothing asks to look again exactly when the
    /// silent leader's two heartbeats are up (and its own heartbeat of not
    /// receiving), not at its next regular round up to a heartbeat later;
    /// at that look it deposes.
    #[test]
    fn given_the_leader_fell_silent_i_know_when_to_look_again() {
        let heartbeat = Settings::default().heartbeat_ms;
        let mut ha = me("db2");
        ha.decide(&observe(
            10_000,
            standby(1_000, Some("db1")),
            primary_gone_silent(),
        ));
        assert_eq!(
            ha.fast_path_due(heartbeat),
            None,
            "still streaming: no timer"
        );
        ha.decide(&observe(
            10_100,
            not_streaming(1_000),
            primary_gone_silent(),
        ));
        let due = ha.fast_path_due(heartbeat).unwrap();
        assert_eq!(due, 10_000 + 2 * heartbeat);
        let early = ha.decide(&observe(
            due - 1,
            not_streaming(1_000),
            primary_gone_silent(),
        ));
        assert!(
            !early
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeposeLeader { .. })),
            "{early:?}"
        );
        let plan = ha.decide(&observe(due, not_streaming(1_000), primary_gone_silent()));
        assert!(
            matches!(plan.actions.first(), Some(Action::DeposeLeader { .. })),
            "{plan:?}"
        );
    }

    /// The store watch delivered the leader's last status 400 ms before
    /// the round that read it: the leader is silent since then, and the
    /// standby deposes it 400 ms sooner. A time the watch reports for
    /// another revision, or from the future, counts for nothing.
    #[test]
    fn given_my_watch_heard_the_leader_last_before_my_round_i_count_from_the_watch() {
        let heartbeat = Settings::default().heartbeat_ms;
        let seen = |revision: u64, at: u64| BTreeMap::from([("db1".to_string(), (revision, at))]);
        let observed = |now: u64, local: Local, statuses_seen| Observation {
            statuses_seen,
            ..observe(now, local, primary_gone_silent())
        };
        let mut ha = me("db2");
        ha.decide(&observed(
            10_400,
            standby(1_000, Some("db1")),
            seen(40, 10_000),
        ));
        ha.decide(&observed(10_500, not_streaming(1_000), seen(40, 10_000)));
        assert_eq!(ha.fast_path_due(heartbeat), Some(10_000 + 2 * heartbeat));
        let plan = ha.decide(&observed(
            10_000 + 2 * heartbeat,
            not_streaming(1_000),
            seen(40, 10_000),
        ));
        assert!(
            matches!(plan.actions.first(), Some(Action::DeposeLeader { .. })),
            "{plan:?}"
        );

        for stale in [seen(39, 10_000), seen(40, 10_401)] {
            let mut ha = me("db2");
            ha.decide(&observed(
                10_400,
                standby(1_000, Some("db1")),
                stale.clone(),
            ));
            ha.decide(&observed(10_500, not_streaming(1_000), stale));
            assert_eq!(ha.fast_path_due(heartbeat), Some(10_400 + 2 * heartbeat));
        }
    }

    /// A receiver that gave up on the silent primary and starts again has
    /// heard nothing yet; the standby remembers when the last one did.
    #[test]
    fn given_my_receiver_gave_up_after_hearing_nothing_i_count_from_its_last_message() {
        let mut ha = me("db2");
        ha.decide(&observe(
            10_000,
            standby(1_000, Some("db1")),
            primary_gone_silent(),
        ));
        let heard = match standby(1_000, Some("db1")) {
            Local::Running(running) => Local::Running(Running {
                receiver_quiet_ms: Some(700),
                ..running
            }),
            _ => unreachable!(),
        };
        ha.decide(&observe(10_500, heard, primary_gone_silent()));
        let beats = 2 * Settings::default().heartbeat_ms;
        let plan = ha.decide(&observe(
            10_000 + beats,
            quiet_receiver(1_000, None),
            primary_gone_silent(),
        ));
        assert!(
            matches!(plan.actions.first(), Some(Action::DeposeLeader { .. })),
            "{plan:?}"
        );
    }

    /// A primary whose PostgreSQL crashed says so before it starts it again;
    /// crash recovery may keep its agent quiet for longer than two
    /// heartbeats, and restarting in place beats a failover.
    #[test]
    fn not_while_the_primary_restarts_its_crashed_postgresql_in_place() {
        let mut cluster = primary_gone_silent();
        if let Some(view) = cluster.members.get_mut("db1") {
            view.running = false;
            view.primary = false;
        }
        let mut ha = me("db2");
        let plan = decide_twice(&mut ha, cluster.clone(), cluster, 1_000);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeposeLeader { .. })),
            "{plan:?}"
        );
    }

    /// Without a quiet time (a receiver that just reconnected and heard
    /// nothing yet), a standby first sees it not streaming for a heartbeat:
    /// a reconnect is no reason to depose anyone.
    #[test]
    fn given_my_receiver_just_reconnected_i_watch_it_for_a_heartbeat_first() {
        let mut ha = me("db2");
        ha.decide(&observe(
            10_000,
            standby(1_000, Some("db1")),
            primary_gone_silent(),
        ));
        let beats = 2 * Settings::default().heartbeat_ms;
        let plan = ha.decide(&observe(
            10_000 + beats,
            quiet_receiver(1_000, None),
            primary_gone_silent(),
        ));
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeposeLeader { .. })),
            "{plan:?}"
        );
        let plan = ha.decide(&observe(
            10_000 + beats + Settings::default().heartbeat_ms,
            quiet_receiver(1_000, None),
            primary_gone_silent(),
        ));
        assert!(
            matches!(plan.actions.first(), Some(Action::DeposeLeader { .. })),
            "{plan:?}"
        );
    }

    #[test]
    fn given_the_synchronous_primary_went_silent_and_nobody_receives_from_it_its_standby_deposes_it(
    ) {
        let mut ha = me("db2");
        let plan = decide_twice(&mut ha, primary_gone_silent(), primary_gone_silent(), 1_000);
        assert_eq!(
            plan.actions,
            [
                Action::DeposeLeader {
                    leader: "db1".into()
                },
                Action::AcquireLeader,
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["*".into()],
                    count: 1,
                    quorum: false
                },
                Action::Promote,
                Action::RecordHistory {
                    reason: "fast failover: the synchronous primary went silent".into()
                },
                slots_for(&["db1", "db3"]),
            ]
        );
        assert!(plan.note.contains("silent for 1000 ms"), "{}", plan.note);
    }

    #[test]
    fn not_while_it_promised_the_primary_to_follow_it_in_failsafe_mode() {
        let mut ha = me("db2");
        let promise = Some(FailsafePromise {
            leader: "db1".into(),
            until: 60_000,
        });
        let mut first = observe(10_000, not_streaming(1_000), primary_gone_silent());
        first.failsafe_promise = promise.clone();
        ha.decide(&first);
        let mut second = observe(11_000, not_streaming(1_000), primary_gone_silent());
        second.failsafe_promise = promise.clone();
        let plan = ha.decide(&second);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeposeLeader { .. })),
            "{plan:?}"
        );
        // The promise, not the timing, held it back: once over, it deposes.
        let mut over = observe(60_000, not_streaming(1_000), primary_gone_silent());
        over.failsafe_promise = promise;
        let plan = ha.decide(&over);
        assert!(
            plan.actions.contains(&Action::DeposeLeader {
                leader: "db1".into()
            }),
            "{plan:?}"
        );
    }

    /// Found by the demo on a loaded machine: the primary, stopping for a
    /// switchover to db2 (its shutdown waiting for the archiver), fell
    /// silent, and db3 deposed it, ending the switchover.
    #[test]
    fn not_while_the_primary_stops_for_a_due_switchover() {
        let switching = || {
            let mut cluster = primary_gone_silent();
            cluster.switchover = Some(SwitchoverRequest {
                from: Some("db1".into()),
                to: Some("db3".into()),
                requested_ms: 0,
                at_ms: None,
                handoff: None,
            });
            cluster
        };
        let mut ha = me("db2");
        let plan = decide_twice(&mut ha, switching(), switching(), 1_000);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::DeposeLeader { .. })),
            "{plan:?}"
        );
        // Scheduled for later, it is no reason to wait: the primary is not
        // stopping for it yet.
        let later = || {
            let mut cluster = switching();
            cluster.switchover.as_mut().unwrap().at_ms = Some(u64::MAX);
            cluster
        };
        let mut ha = me("db2");
        let plan = decide_twice(&mut ha, later(), later(), 1_000);
        assert!(
            plan.actions.contains(&Action::DeposeLeader {
                leader: "db1".into()
            }),
            "{plan:?}"
        );
    }

    #[test]
    fn not_before_the_primary_has_been_silent_for_two_heartbeats() {
        let mut ha = me("db2");
        let plan = ha.decide(&observe(
            10_000,
            not_streaming(1_000),
            primary_gone_silent(),
        ));
        assert!(
            plan.actions.is_empty() || !plan.actions.contains(&Action::AcquireLeader),
            "{plan:?}"
        );
    }

    #[test]
    fn not_while_its_agent_still_publishes() {
        let mut ha = me("db2");
        let mut alive = primary_gone_silent();
        alive.members.get_mut("db1").unwrap().revision = 41;
        let plan = decide_twice(&mut ha, primary_gone_silent(), alive, 1_000);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn not_while_another_standby_still_receives_from_it() {
        let mut ha = me("db2");
        let mut receiving = primary_gone_silent();
        receiving.members.get_mut("db3").unwrap().streaming = true;
        let plan = decide_twice(&mut ha, receiving.clone(), receiving, 1_000);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn not_by_a_standby_outside_the_synchronous_set_nor_in_asynchronous_mode() {
        let mut ha = me("db3");
        let plan = decide_twice(&mut ha, primary_gone_silent(), primary_gone_silent(), 1_000);
        assert!(
            !plan.actions.contains(&Action::AcquireLeader),
            "db3 is not synchronous: {plan:?}"
        );

        let mut asynchronous = primary_gone_silent();
        asynchronous.settings.synchronous_mode = SyncMode::Off;
        let mut ha = me("db2");
        let plan = decide_twice(&mut ha, asynchronous.clone(), asynchronous, 1_000);
        assert!(
            !plan.actions.contains(&Action::AcquireLeader),
            "asynchronous: wait for the lease: {plan:?}"
        );
    }
}

mod unresponsive_postgresql {
    use super::*;

    #[test]
    fn given_i_lead_and_postgresql_stops_answering_past_the_grace_i_stop_it_and_release_the_key() {
        let mut ha = me("db1");
        let hung = Local::Starting { was_primary: true };
        let plan = ha.decide(&observe(10_000, hung.clone(), cluster()));
        assert_eq!(plan.actions, [Action::RenewLeader]);
        let grace = Settings::default().restart_grace_ms;
        let plan = ha.decide(&observe(10_000 + grace, hung, cluster()));
        assert_eq!(
            plan.actions,
            [
                Action::Stop {
                    mode: StopMode::Immediate
                },
                Action::ReleaseLeader
            ]
        );
    }

    #[test]
    fn given_another_member_leads_a_primary_that_does_not_answer_is_stopped() {
        let mut cluster = cluster();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 9,
        });
        let plan = me("db1").decide(&observe(
            0,
            Local::Starting { was_primary: true },
            cluster.clone(),
        ));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Immediate
            }]
        );
        let plan = me("db3").decide(&observe(0, Local::Starting { was_primary: false }, cluster));
        assert!(
            plan.is_idle(),
            "a standby that is starting is left to start: {plan:?}"
        );
    }

    #[test]
    fn raising_the_ttl_does_not_demote_a_leader_whose_lease_still_has_the_old_one() {
        let mut raised = cluster();
        raised.settings.ttl_ms = 10_000;
        let mut obs = observe(10_000, Local::Running(primary(1_000)), raised);
        obs.lease_ttl_ms = Some(3_000);
        obs.lease_valid_until = Some(12_900);
        let plan = me("db1").decide(&obs);
        assert_eq!(plan.actions.first(), Some(&Action::RenewLeader), "{plan:?}");
    }
}

mod following_a_new_primary {
    use super::*;

    fn new_leader_on_timeline_2() -> Cluster {
        let mut cluster = cluster();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 9,
        });
        cluster.members.remove("db1");
        let mut db2 = member(true, 1_100);
        db2.timeline = Some(2);
        cluster.members.insert("db2".into(), db2);
        cluster.latest_timeline = 2;
        cluster
    }

    fn not_streaming_from(upstream: &str) -> Local {
        match standby(1_000, Some(upstream)) {
            Local::Running(running) => Local::Running(Running {
                streaming: false,
                ..running
            }),
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_spent_without_a_leader_does_not_count_against_the_new_one() {
        let mut ha = me("db3");
        // Leaderless for a long while, not streaming from the dead db1.
        ha.decide(&observe(0, not_streaming_from("db1"), leaderless()));
        ha.decide(&observe(20_000, not_streaming_from("db1"), leaderless()));
        // db2 leads now; db3 re-points and gets a fair chance to switch
        // timelines before it is judged stuck.
        let plan = ha.decide(&observe(
            20_100,
            not_streaming_from("db2"),
            new_leader_on_timeline_2(),
        ));
        assert!(plan.is_idle(), "just re-pointed: {plan:?}");
        let ttl = Settings::default().ttl_ms;
        let plan = ha.decide(&observe(
            20_100 + ttl + 1,
            not_streaming_from("db2"),
            new_leader_on_timeline_2(),
        ));
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Fast
            }],
            "stuck on the old timeline for a TTL after re-pointing: stop to rewind"
        );
    }

    /// A standby that was stopped while its primary recycled the WAL it
    /// needs catches up from the archive (restore_command) before it can
    /// stream again: not streaming all that while, but replaying. Taken
    /// for a fork, it was re-cloned after two TTLs (issue 15).
    #[test]
    fn given_i_catch_up_from_the_archive_without_streaming_i_am_not_re_cloned_until_i_stop_moving()
    {
        let mut ha = me("db3");
        let fetching = |lsn: u64| {
            Local::Running(Running {
                streaming: false,
                ..match standby(lsn, Some("db1")) {
                    Local::Running(running) => running,
                    _ => unreachable!(),
                }
            })
        };
        let ttl = Settings::default().ttl_ms;
        let mut now = 10_000;
        let mut lsn = 100;
        // Ten TTLs of segments restored from the archive, one per second.
        while now < 10_000 + 10 * ttl {
            let plan = ha.decide(&observe(now, fetching(lsn), cluster()));
            assert!(plan.is_idle(), "at {now}: {plan:?}");
            now += 1_000;
            lsn += 16;
        }
        // The archive ends and streaming does not start: now it is stuck.
        let stalled_at = now;
        while now <= stalled_at + 2 * ttl {
            let plan = ha.decide(&observe(now, fetching(lsn), cluster()));
            assert!(plan.is_idle(), "at {now}: {plan:?}");
            now += 500;
        }
        let plan = ha.decide(&observe(now, fetching(lsn), cluster()));
        assert!(
            matches!(&plan.actions[..], [
                Action::Stop { mode: StopMode::Fast },
                Action::Reclone { leader, .. },
                Action::StartReplica { .. },
            ] if leader == "db1"),
            "{plan:?}"
        );
        assert!(plan.note.contains("nor replaying"), "{}", plan.note);
    }
}

/// The leader decides who takes the cluster's base backups, and when.
mod backups {
    use super::*;
    use ha::backups::{BackupAssignment, BackupKind, BackupRequest, LastBackup, Schedule};

    /// db1 leads at WAL 1 000; db2 (at 1 000) and db3 (at 900) stream from
    /// it; every member has a repository.
    fn cluster_with_repositories() -> Cluster {
        let mut cluster = cluster();
        for (name, view) in cluster.members.iter_mut() {
            view.can_backup = true;
            view.upstream = (name != "db1").then(|| "db1".into());
        }
        cluster
    }

    fn leading(wall_ms: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(10_000, Local::Running(primary(1_000)), cluster);
        obs.wall_ms = wall_ms;
        obs.lease_valid_until = Some(12_900);
        obs
    }

    fn backup_actions(plan: &ha::Plan) -> Vec<&Action> {
        plan.actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::AssignBackup { .. }
                        | Action::SkipBackup { .. }
                        | Action::EndBackup { .. }
                )
            })
            .collect()
    }

    fn assigned(member: &str, kind: BackupKind) -> Action {
        Action::AssignBackup {
            member: member.into(),
            kind,
        }
    }

    fn asked(cluster: &mut Cluster, force: bool) {
        cluster.backups.request = Some(BackupRequest { kind: None, force });
    }

    #[test]
    fn an_asked_for_backup_goes_to_the_most_advanced_streaming_standby() {
        let mut cluster = cluster_with_repositories();
        asked(&mut cluster, false);
        let plan = me("db1").plan(&leading(0, cluster));
        assert_eq!(backup_actions(&plan), [&assigned("db2", BackupKind::Full)]);
    }

    #[test]
    fn the_primary_takes_it_only_when_no_standby_can() {
        let mut cluster = cluster_with_repositories();
        for name in ["db2", "db3"] {
            cluster.members.get_mut(name).unwrap().streaming = false;
        }
        asked(&mut cluster, false);
        let plan = me("db1").plan(&leading(0, cluster.clone()));
        assert_eq!(backup_actions(&plan), [&assigned("db1", BackupKind::Full)]);
        cluster.members.get_mut("db1").unwrap().can_backup = false;
        let plan = me("db1").plan(&leading(0, cluster));
        assert!(backup_actions(&plan).is_empty(), "{plan:?}");
        assert!(
            plan.note.contains("no member has a repository"),
            "{}",
            plan.note
        );
    }

    #[test]
    fn one_backup_at_a_time() {
        let mut cluster = cluster_with_repositories();
        asked(&mut cluster, true);
        cluster.backups.assignment = Some(BackupAssignment {
            member: "db3".into(),
            kind: BackupKind::Full,
            assigned_ms: 0,
        });
        let plan = me("db1").plan(&leading(1_000, cluster));
        assert!(backup_actions(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn an_assignment_whose_member_went_away_for_a_ttl_ends_failed_a_blip_does_not() {
        let mut cluster = cluster_with_repositories();
        cluster.backups.assignment = Some(BackupAssignment {
            member: "db3".into(),
            kind: BackupKind::Full,
            assigned_ms: 0,
        });
        let mut gone = cluster.clone();
        gone.members.remove("db3");
        let ttl = Settings::default().ttl_ms;
        let at = |now: u64, cluster: &Cluster| {
            let mut obs = leading(now, cluster.clone());
            obs.now = now;
            obs.lease_valid_until = Some(now + 2_900);
            obs
        };
        let mut ha = me("db1");
        for now in [0, ttl - 1] {
            let plan = ha.decide(&at(now, &gone));
            assert!(backup_actions(&plan).is_empty(), "a blip: {plan:?}");
        }
        ha.decide(&at(ttl, &cluster));
        let plan = ha.decide(&at(ttl + 1, &gone));
        assert!(
            backup_actions(&plan).is_empty(),
            "back, then gone again: {plan:?}"
        );
        let plan = ha.decide(&at(2 * ttl + 1, &gone));
        let [Action::EndBackup { outcome }] = backup_actions(&plan)[..] else {
            panic!("{plan:?}");
        };
        assert!(
            outcome.contains("db3") && outcome.contains("failed"),
            "{outcome}"
        );
    }

    fn scheduled(last_stop_lsn: u64, full_done_ms: u64) -> Cluster {
        let mut cluster = cluster_with_repositories();
        cluster.settings.backup = Schedule {
            interval_ms: 3_600_000,
            full_interval_ms: 86_400_000,
        };
        cluster.backups.last = Some(LastBackup {
            done_ms: 1_000_000,
            full_done_ms,
            stop_lsn: last_stop_lsn,
            checked_ms: 0,
        });
        cluster
    }

    #[test]
    fn a_scheduled_backup_is_due_after_its_interval_incremental_until_a_full_one_is() {
        let plan = me("db1").plan(&leading(1_000_000 + 3_599_999, scheduled(500, 1_000_000)));
        assert!(backup_actions(&plan).is_empty(), "not yet: {plan:?}");
        let plan = me("db1").plan(&leading(1_000_000 + 3_600_000, scheduled(500, 1_000_000)));
        assert_eq!(
            backup_actions(&plan),
            [&assigned("db2", BackupKind::Incremental)]
        );
        // The last full one completed at 0: a day later the next is full.
        let cluster = scheduled(500, 0);
        let plan = me("db1").plan(&leading(86_400_001, cluster));
        assert_eq!(backup_actions(&plan), [&assigned("db2", BackupKind::Full)]);
    }

    /// The 2000 seed: the dump is taken only when the data changed.
    #[test]
    fn a_due_backup_is_skipped_when_the_wal_has_not_moved_unless_forced() {
        let due = 1_000_000 + 3_600_000;
        let plan = me("db1").plan(&leading(due, scheduled(1_000, 1_000_000)));
        assert!(
            matches!(backup_actions(&plan)[..], [Action::SkipBackup { .. }]),
            "{plan:?}"
        );
        // Once skipped, the schedule looks again an interval later.
        let mut checked = scheduled(1_000, 1_000_000);
        checked.backups.last.as_mut().unwrap().checked_ms = due;
        let plan = me("db1").plan(&leading(due + 1, checked));
        assert!(backup_actions(&plan).is_empty(), "{plan:?}");
        let mut forced = scheduled(1_000, 1_000_000);
        asked(&mut forced, true);
        let plan = me("db1").plan(&leading(due, forced));
        assert!(
            matches!(backup_actions(&plan)[..], [Action::AssignBackup { .. }]),
            "{plan:?}"
        );
    }

    #[test]
    fn only_the_leader_assigns_backups() {
        let mut cluster = cluster_with_repositories();
        asked(&mut cluster, true);
        let plan = me("db2").plan(&observe(10_000, standby(1_000, Some("db1")), cluster));
        assert!(backup_actions(&plan).is_empty(), "{plan:?}");
    }
}

/// Quorum commit (`ANY k`): what the primary publishes and applies, and who
/// may take over once it is gone.
mod quorum_commit {
    use super::*;

    fn quorum_cluster(published: &[&str], quorum: u32) -> Cluster {
        let mut cluster = cluster();
        cluster.settings.synchronous_mode = SyncMode::Quorum;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: published.iter().map(|s| s.to_string()).collect(),
            quorum,
        });
        cluster
    }

    fn replica(name: &str, synchronous: bool, flush_lsn: u64) -> Replica {
        Replica {
            name: name.into(),
            streaming: true,
            synchronous,
            flush_lsn,
        }
    }

    /// db1's round as the leading primary at WAL position 1000.
    fn leading(
        ha: &mut Ha,
        now: u64,
        cluster: Cluster,
        applied: (&[&str], Option<u32>),
        replicas: Vec<Replica>,
    ) -> Vec<Action> {
        let mut running = primary(1_000);
        running.sync_applied = applied.0.iter().map(|s| s.to_string()).collect();
        running.sync_applied_any = applied.1;
        running.replicas = replicas;
        let mut obs = observe(now, Local::Running(running), cluster);
        obs.lease_valid_until = Some(now + 3_000);
        obs.lease_ttl_ms = Some(3_000);
        let mut actions = ha.decide(&obs).actions;
        actions.retain(|a| {
            matches!(
                a,
                Action::PublishSync { .. } | Action::ApplySynchronous { .. }
            )
        });
        actions
    }

    #[test]
    fn given_two_healthy_standbys_the_primary_publishes_both_with_no_quorum_then_waits_for_any_one()
    {
        let mut ha = me("db1");
        let actions = leading(
            &mut ha,
            0,
            quorum_cluster(&[], 0),
            (&[], None),
            vec![replica("db2", false, 1_000), replica("db3", false, 900)],
        );
        assert_eq!(
            actions,
            [
                Action::PublishSync {
                    members: vec!["db2".into(), "db3".into()],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["db2".into(), "db3".into()],
                    count: 1,
                    quorum: true
                }
            ]
        );
    }

    #[test]
    fn given_postgresql_waits_for_any_one_the_quorum_is_published_once_one_has_passed_the_floor() {
        let mut ha = me("db1");
        let applied: (&[&str], Option<u32>) = (&["db2", "db3"], Some(1));
        // The first round with this set applied records the floor (1000):
        // nobody confirmed past it yet.
        let actions = leading(
            &mut ha,
            0,
            quorum_cluster(&["db2", "db3"], 0),
            applied,
            vec![replica("db2", true, 990), replica("db3", true, 900)],
        );
        assert_eq!(actions, []);
        let actions = leading(
            &mut ha,
            500,
            quorum_cluster(&["db2", "db3"], 0),
            applied,
            vec![replica("db2", true, 1_000), replica("db3", true, 900)],
        );
        assert_eq!(
            actions,
            [Action::PublishSync {
                members: vec!["db2".into(), "db3".into()],
                quorum: 1
            }]
        );
    }

    #[test]
    fn given_a_standby_stops_streaming_postgresql_stops_waiting_for_it_first_and_it_leaves_the_set_after(
    ) {
        let mut ha = me("db1");
        let applied: (&[&str], Option<u32>) = (&["db2", "db3"], Some(1));
        // Published {db2, db3} quorum 1 covers `ANY 1 (db2)`: apply at once.
        let actions = leading(
            &mut ha,
            0,
            quorum_cluster(&["db2", "db3"], 1),
            applied,
            vec![replica("db2", true, 1_000)],
        );
        assert_eq!(
            actions,
            [Action::ApplySynchronous {
                names: vec!["db2".into()],
                count: 1,
                quorum: true
            }]
        );
        let applied: (&[&str], Option<u32>) = (&["db2"], Some(1));
        leading(
            &mut ha,
            500,
            quorum_cluster(&["db2", "db3"], 1),
            applied,
            vec![replica("db2", true, 990)],
        );
        let actions = leading(
            &mut ha,
            1_000,
            quorum_cluster(&["db2", "db3"], 1),
            applied,
            vec![replica("db2", true, 1_000)],
        );
        assert_eq!(
            actions,
            [Action::PublishSync {
                members: vec!["db2".into()],
                quorum: 1
            }]
        );
    }

    #[test]
    fn given_a_new_standby_the_published_set_grows_before_postgresql_waits_for_it() {
        let mut ha = me("db1");
        let actions = leading(
            &mut ha,
            0,
            quorum_cluster(&["db2"], 1),
            (&["db2"], Some(1)),
            vec![replica("db2", true, 1_000), replica("db3", false, 1_000)],
        );
        assert_eq!(
            actions,
            [
                Action::PublishSync {
                    members: vec!["db2".into(), "db3".into()],
                    quorum: 1
                },
                Action::ApplySynchronous {
                    names: vec!["db2".into(), "db3".into()],
                    count: 1,
                    quorum: true
                }
            ]
        );
    }

    /// db1 is gone (its key expired); db2 and db3 are the published set
    /// with quorum 1: each acknowledged commit is on one of them.
    fn leaderless_quorum(db2: MemberView, db3: MemberView) -> Cluster {
        let mut cluster = quorum_cluster(&["db2", "db3"], 1);
        cluster.leader = None;
        cluster.members.remove("db1");
        cluster.members.insert("db2".into(), db2);
        cluster.members.insert("db3".into(), db3);
        cluster
    }

    fn detached(lsn: u64) -> MemberView {
        MemberView {
            streaming: false,
            upstream: None,
            ..member(false, lsn)
        }
    }

    fn still_following(lsn: u64) -> MemberView {
        MemberView {
            upstream: Some("db1".into()),
            ..member(false, lsn)
        }
    }

    fn standby_detached(lsn: u64) -> Local {
        Local::Running(Running {
            streaming: false,
            ..match standby(lsn, None) {
                Local::Running(running) => running,
                _ => unreachable!(),
            }
        })
    }

    #[test]
    fn given_no_leader_a_standby_of_the_set_first_stops_listening_to_the_old_primary() {
        let cluster = leaderless_quorum(still_following(1_000), still_following(900));
        let plan = me("db2").decide(&observe(0, standby(1_000, Some("db1")), cluster));
        assert_eq!(plan.actions, [Action::Follow { upstream: None }]);
    }

    #[test]
    fn given_no_leader_the_most_advanced_waits_until_the_other_member_of_the_set_stopped_listening()
    {
        let cluster = leaderless_quorum(detached(1_000), still_following(900));
        let plan = me("db2").decide(&observe(0, standby_detached(1_000), cluster));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("synchronous set"), "{}", plan.note);
    }

    #[test]
    fn given_no_leader_and_the_other_member_final_and_behind_the_most_advanced_takes_over() {
        let cluster = leaderless_quorum(detached(1_000), detached(900));
        let plan = me("db2").decide(&observe(0, standby_detached(1_000), cluster));
        assert_eq!(
            plan.actions,
            [
                Action::AcquireLeader,
                Action::PublishSync {
                    members: vec![],
                    quorum: 0
                },
                Action::ApplySynchronous {
                    names: vec!["*".into()],
                    count: 1,
                    quorum: true
                },
                Action::Promote,
                Action::RecordHistory {
                    reason: "failover: the leader key expired".into()
                },
                slots_for(&["db3"]),
            ]
        );
    }

    #[test]
    fn given_no_leader_and_the_other_member_ahead_i_leave_it_to_take_over() {
        let cluster = leaderless_quorum(detached(900), detached(1_000));
        let plan = me("db2").decide(&observe(0, standby_detached(900), cluster));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("db3"), "{}", plan.note);
    }

    #[test]
    fn given_no_leader_and_the_other_member_of_the_set_gone_nobody_can_be_sure_and_nobody_takes_over(
    ) {
        let mut cluster = leaderless_quorum(detached(1_000), detached(900));
        cluster.members.remove("db3");
        let plan = me("db2").decide(&observe(0, standby_detached(1_000), cluster));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("1 of the 2"), "{}", plan.note);
    }

    #[test]
    fn given_quorum_two_of_two_either_member_may_take_over_alone() {
        let mut cluster = leaderless_quorum(detached(1_000), still_following(900));
        cluster.sync.as_mut().unwrap().quorum = 2;
        let plan = me("db2").decide(&observe(0, standby_detached(1_000), cluster));
        assert!(plan.actions.contains(&Action::Promote), "{plan:?}");
    }

    #[test]
    fn given_the_primary_went_silent_a_member_of_the_set_stops_listening_then_the_best_deposes_it()
    {
        let silent = || {
            let mut cluster = quorum_cluster(&["db2", "db3"], 1);
            for (name, view) in cluster.members.iter_mut() {
                view.revision = 40;
                if name != "db1" {
                    view.streaming = false;
                    view.upstream = Some("db1".into());
                }
            }
            cluster
        };
        let not_receiving = Local::Running(Running {
            streaming: false,
            ..match standby(1_000, Some("db1")) {
                Local::Running(running) => running,
                _ => unreachable!(),
            }
        });
        let mut ha = me("db2");
        ha.decide(&observe(10_000, not_receiving.clone(), silent()));
        let plan = ha.decide(&observe(11_000, not_receiving, silent()));
        assert_eq!(plan.actions, [Action::Follow { upstream: None }]);

        // db3 still listens: db2 waits, detached.
        let plan = ha.decide(&observe(11_500, standby_detached(1_000), silent()));
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("not listening"), "{}", plan.note);

        let mut both = silent();
        both.members.insert("db3".into(), detached(900));
        both.members.get_mut("db3").unwrap().revision = 40;
        let plan = ha.decide(&observe(12_000, standby_detached(1_000), both));
        assert_eq!(
            &plan.actions[..2],
            [
                Action::DeposeLeader {
                    leader: "db1".into()
                },
                Action::AcquireLeader
            ]
        );

        // The primary speaks again before anyone deposed it: follow it.
        let mut alive = silent();
        alive.members.get_mut("db1").unwrap().revision = 41;
        let plan = ha.decide(&observe(12_500, standby_detached(1_000), alive));
        assert_eq!(
            plan.actions,
            [Action::Follow {
                upstream: Some("db1".into())
            }]
        );
    }
}

/// Retiring a member (`pgwarden ctl remove`) and keeping a slot for one down
/// for maintenance (`slot_retention`).
mod retiring {
    use super::*;

    /// db3 removed, its data directory at system identifier SYSID.
    fn db3_removed(mut cluster: Cluster) -> Cluster {
        cluster.removed.insert(
            "db3".into(),
            Removed {
                system_id: Some(SYSID),
                timeline: Some(1),
                removed_ms: 5_000,
            },
        );
        cluster
    }

    fn leading(now: u64, cluster: Cluster) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(now + 2_900);
        obs
    }

    #[test]
    fn given_a_member_is_removed_the_primary_drops_its_slot_at_once() {
        let mut ha = me("db1");
        ha.decide(&leading(10_000, cluster()));
        let mut gone = db3_removed(cluster());
        gone.members.remove("db3");
        let plan = ha.decide(&leading(10_500, gone));
        assert_eq!(
            plan.actions.last(),
            Some(&Action::KeepSlots {
                names: vec!["db2".into()],
                drop: vec!["db3".into()]
            })
        );
    }

    #[test]
    fn given_the_cluster_is_paused_a_removed_members_slot_still_goes() {
        let mut ha = me("db1");
        ha.decide(&leading(10_000, cluster()));
        let mut paused = db3_removed(cluster());
        paused.settings.paused = true;
        paused.members.remove("db3");
        let plan = ha.decide(&leading(10_500, paused));
        assert_eq!(
            plan.actions,
            [
                Action::RenewLeader,
                Action::KeepSlots {
                    names: vec!["db2".into()],
                    drop: vec!["db3".into()]
                }
            ]
        );
    }

    #[test]
    fn given_a_removed_member_still_publishes_the_primary_keeps_no_slot_for_it() {
        // The first round of a freshly started primary, which never saw db3
        // before: a slot left from an earlier leader is dropped too.
        let plan = me("db1").decide(&leading(10_000, db3_removed(cluster())));
        assert_eq!(
            plan.actions.last(),
            Some(&Action::KeepSlots {
                names: vec!["db2".into()],
                drop: vec!["db3".into()]
            })
        );
    }

    #[test]
    fn given_a_slot_retention_a_member_down_for_maintenance_keeps_its_slot_that_long() {
        let mut long = cluster();
        long.settings.slot_retention_ms = 60 * 60 * 1000;
        let mut ha = me("db1");
        ha.decide(&leading(10_000, long.clone()));
        long.members.remove("db3");
        let later = 10_000 + 59 * 60 * 1000;
        let plan = ha.decide(&leading(later, long.clone()));
        assert_eq!(
            plan.actions.last(),
            Some(&Action::KeepSlots {
                names: vec!["db2".into(), "db3".into()],
                drop: vec![]
            }),
            "59 minutes into a retention of an hour"
        );
        let mut short = long;
        short.settings.slot_retention_ms = 30_000;
        let plan = ha.decide(&leading(later + 1, short));
        assert_eq!(
            plan.actions.last(),
            Some(&Action::KeepSlots {
                names: vec!["db2".into()],
                drop: vec!["db3".into()]
            }),
            "the retention shortened: gone for longer, dropped"
        );
    }

    #[test]
    fn given_a_removed_member_is_the_most_advanced_it_is_never_promoted() {
        let mut cluster = db3_removed(leaderless());
        cluster.members.get_mut("db3").unwrap().lsn = Some(5_000);
        cluster.last_primary_lsn = Some(5_000);
        cluster.settings.maximum_lag_on_failover = 10_000;
        let plan = me("db2").decide(&observe(0, standby(1_000, Some("db1")), cluster.clone()));
        assert_eq!(plan.actions[0], Action::AcquireLeader, "{plan:?}");
        let plan = me("db3").decide(&observe(0, standby(5_000, Some("db1")), cluster));
        assert!(
            !plan.actions.contains(&Action::AcquireLeader),
            "a removed member never takes over: {plan:?}"
        );
    }

    #[test]
    fn given_a_removed_member_streams_the_primary_never_makes_it_synchronous() {
        let mut cluster = db3_removed(cluster());
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::new(),
            quorum: 0,
        });
        let mut obs = leading(10_000, cluster);
        if let Local::Running(running) = &mut obs.local {
            running.replicas = vec![Replica {
                name: "db3".into(),
                streaming: true,
                synchronous: false,
                flush_lsn: 1_000,
            }];
        }
        let plan = me("db1").decide(&obs);
        for action in &plan.actions {
            if let Action::ApplySynchronous { names, .. }
            | Action::PublishSync { members: names, .. } = action
            {
                assert!(!names.contains(&"db3".to_string()), "{plan:?}");
            }
        }
    }

    #[test]
    fn given_failsafe_mode_the_leader_lists_no_removed_member() {
        let mut cluster = db3_removed(cluster());
        cluster.settings.failsafe = true;
        let plan = me("db1").decide(&leading(10_000, cluster));
        assert!(
            plan.actions.contains(&Action::PublishFailsafe {
                members: vec!["db1".into(), "db2".into()]
            }),
            "{plan:?}"
        );
    }

    #[test]
    fn given_i_was_removed_and_still_run_i_stop_postgresql_and_stay_out() {
        let plan = me("db3").decide(&observe(
            0,
            standby(900, Some("db1")),
            db3_removed(cluster()),
        ));
        assert_eq!(plan.role, ha::LogRole::Removed);
        assert_eq!(
            plan.actions,
            [Action::Stop {
                mode: StopMode::Fast
            }]
        );
    }

    #[test]
    fn given_i_was_removed_and_start_again_with_my_data_directory_i_refuse_saying_how_to_rejoin() {
        let stopped = Local::Stopped(Stopped {
            system_id: SYSID,
            timeline: 1,
            was_primary: false,
        });
        let plan = me("db3").decide(&observe(0, stopped, db3_removed(cluster())));
        assert_eq!(plan.role, ha::LogRole::Removed);
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.starts_with("refusing to rejoin"), "{}", plan.note);
        assert!(plan.note.contains("re-clone"), "{}", plan.note);
        assert!(
            plan.note.contains("pgwarden ctl readmit db3"),
            "{}",
            plan.note
        );
    }

    #[test]
    fn given_i_was_removed_and_my_data_directory_is_empty_i_am_readmitted_then_clone() {
        let mut ha = me("db3");
        let plan = ha.decide(&observe(0, Local::Empty, db3_removed(cluster())));
        assert_eq!(plan.actions, [Action::Readmit]);
        let plan = ha.decide(&observe(500, Local::Empty, cluster()));
        assert_eq!(
            plan.actions,
            [
                Action::CloneFrom {
                    leader: "db1".into()
                },
                Action::StartReplica {
                    upstream: Some("db1".into())
                }
            ]
        );
    }

    #[test]
    fn a_switchover_to_a_removed_member_is_refused() {
        let cluster = db3_removed(cluster());
        let ask = ha::switchover::Ask {
            from: Some("db1".into()),
            to: Some("db3".into()),
            at_ms: None,
        };
        let err = ha::switchover::admit_switchover(&cluster, &ask, 0).unwrap_err();
        assert!(err.message.contains("db3"), "{}", err.message);
    }
}

mod reachability {
    //! `[member] reachability`: a member whose check fails is no
    //! candidate; a leader whose check fails hands over, after a grace, to
    //! a standby whose check passes — and to nobody if none does.

    use super::*;

    fn fails() -> Reach {
        Reach::Fails {
            detail: "0 of 1 targets answered (10.1.0.1:80: connection refused)".into(),
        }
    }

    /// db1 leads at 1000; db2 (at 1000) and db3 (at 900) stream from it.
    fn streaming() -> Cluster {
        let mut cluster = cluster();
        for name in ["db2", "db3"] {
            cluster.members.get_mut(name).unwrap().upstream = Some("db1".into());
        }
        cluster
    }

    fn leading(now: u64, cluster: Cluster, reach: Reach) -> Observation {
        let mut obs = observe(now, Local::Running(primary(1_000)), cluster);
        obs.lease_valid_until = Some(now + 2_900);
        obs.reach = reach;
        obs
    }

    fn asks(plan: &ha::Plan) -> Option<&str> {
        plan.actions.iter().find_map(|a| match a {
            Action::AskSwitchover { to, .. } => Some(to.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_standby_whose_check_fails_does_not_take_over_and_says_why() {
        let mut cluster = leaderless();
        cluster.members.get_mut("db2").unwrap().reach = fails();
        let mut obs = observe(0, standby(1_000, None), cluster.clone());
        obs.reach = fails();
        let plan = me("db2").decide(&obs);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        assert!(
            plan.note.contains("its reachability check fails"),
            "{}",
            plan.note
        );
        // db3, further behind but reaching its clients, takes over.
        let plan = me("db3").decide(&observe(0, standby(900, None), cluster));
        assert_eq!(plan.actions, promotion(&["db2"]));
    }

    #[test]
    fn my_own_fresh_check_counts_not_my_last_published_status() {
        // Published as passing a moment ago, failing now: no race.
        let mut obs = observe(0, standby(1_000, None), leaderless());
        obs.reach = fails();
        let plan = me("db2").decide(&obs);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
        // A check still pending is not trusted either.
        let mut obs = observe(0, standby(1_000, None), leaderless());
        obs.reach = Reach::Pending;
        let plan = me("db2").decide(&obs);
        assert!(!plan.actions.contains(&Action::AcquireLeader), "{plan:?}");
    }

    #[test]
    fn a_standby_whose_check_fails_is_no_switchover_target() {
        let mut cluster = streaming();
        cluster.members.get_mut("db3").unwrap().reach = fails();
        cluster.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: Some("db3".into()),
            requested_ms: 0,
            at_ms: None,
            handoff: None,
        });
        let plan = me("db1").decide(&leading(0, cluster, Reach::Passes));
        let outcome = plan.actions.iter().find_map(|a| match a {
            Action::ClearSwitchover { outcome } => Some(outcome.clone()),
            _ => None,
        });
        assert!(
            outcome
                .as_deref()
                .is_some_and(|o| o.contains("db3 may not take over: its reachability check fails")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_leader_whose_check_fails_hands_over_after_the_grace_to_a_standby_that_passes() {
        let mut ha = me("db1");
        let grace = Settings::default().reachability_grace_ms;
        let mut cluster = streaming();
        cluster.members.get_mut("db2").unwrap().reach = fails();
        cluster.members.get_mut("db3").unwrap().reach = Reach::Passes;
        let plan = ha.decide(&leading(1_000, cluster.clone(), fails()));
        assert_eq!(asks(&plan), None);
        assert!(
            plan.note.contains("once it has failed for"),
            "{}",
            plan.note
        );
        let plan = ha.decide(&leading(1_000 + grace - 1, cluster.clone(), fails()));
        assert_eq!(asks(&plan), None, "{plan:?}");
        let plan = ha.decide(&leading(1_000 + grace, cluster.clone(), fails()));
        assert_eq!(
            asks(&plan),
            Some("db3"),
            "db2 is more advanced but fails its own check: {plan:?}"
        );
        assert_eq!(
            plan.actions[0],
            Action::RenewLeader,
            "it keeps leading meanwhile"
        );
        assert!(plan.note.contains("db3 passes its own"), "{}", plan.note);

        // The request in the store: the usual zero-loss switchover.
        succeeded(&mut ha, 1_000 + grace, &plan);
        cluster.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: Some("db3".into()),
            requested_ms: 1_000 + grace,
            at_ms: None,
            handoff: None,
        });
        let plan = ha.decide(&leading(1_000 + grace + 500, cluster, fails()));
        assert_eq!(
            plan.actions,
            [
                Action::Stop {
                    mode: StopMode::Fast
                },
                Action::HandOff { to: "db3".into() }
            ]
        );
    }

    #[test]
    fn a_check_that_recovers_within_the_grace_starts_the_count_afresh() {
        let mut ha = me("db1");
        let grace = Settings::default().reachability_grace_ms;
        let cluster = streaming();
        let mut now = 0;
        // Fails for most of a grace, passes once, again and again.
        for _ in 0..5 {
            for _ in 0..9 {
                let plan = ha.decide(&leading(now, cluster.clone(), fails()));
                assert_eq!(asks(&plan), None, "at {now}: {plan:?}");
                now += grace / 10;
            }
            let plan = ha.decide(&leading(now, cluster.clone(), Reach::Passes));
            assert_eq!(asks(&plan), None);
            now += grace / 10;
        }
    }

    #[test]
    fn a_leader_blind_to_its_clients_stays_when_no_standby_passes() {
        let mut ha = me("db1");
        let mut cluster = streaming();
        for name in ["db2", "db3"] {
            cluster.members.get_mut(name).unwrap().reach = fails();
        }
        ha.decide(&leading(0, cluster.clone(), fails()));
        let plan = ha.decide(&leading(60_000, cluster, fails()));
        assert_eq!(asks(&plan), None);
        assert_eq!(plan.actions[0], Action::RenewLeader);
        assert!(plan.note.contains("beats none"), "{}", plan.note);
    }

    #[test]
    fn a_standby_far_behind_or_not_streaming_is_not_handed_over_to() {
        let mut ha = me("db1");
        let mut cluster = streaming();
        cluster.settings.maximum_lag_on_failover = 50;
        // db2 does not stream; db3 is 100 behind.
        cluster.members.get_mut("db2").unwrap().streaming = false;
        ha.decide(&leading(0, cluster.clone(), fails()));
        let plan = ha.decide(&leading(60_000, cluster.clone(), fails()));
        assert_eq!(asks(&plan), None, "{plan:?}");
        cluster.members.get_mut("db3").unwrap().lsn = Some(990);
        let plan = ha.decide(&leading(60_500, cluster, fails()));
        assert_eq!(asks(&plan), Some("db3"));
    }

    #[test]
    fn after_asking_it_asks_again_no_sooner_than_a_grace_later() {
        let mut ha = me("db1");
        let grace = Settings::default().reachability_grace_ms;
        let cluster = streaming();
        ha.decide(&leading(0, cluster.clone(), fails()));
        let plan = ha.decide(&leading(grace, cluster.clone(), fails()));
        assert_eq!(asks(&plan), Some("db2"));
        succeeded(&mut ha, grace, &plan);
        // The request was cancelled (db2 fell behind, say): no key now.
        let plan = ha.decide(&leading(grace + 1_000, cluster.clone(), fails()));
        assert_eq!(asks(&plan), None, "{plan:?}");
        assert!(plan.note.contains("asking again"), "{}", plan.note);
        let plan = ha.decide(&leading(2 * grace, cluster, fails()));
        assert_eq!(asks(&plan), Some("db2"));
    }

    #[test]
    fn the_grace_counts_from_when_i_began_to_lead() {
        // db2's check began failing while it was a standby; it then led.
        let mut ha = me("db2");
        let grace = Settings::default().reachability_grace_ms;
        let mut obs = observe(0, standby(1_000, Some("db1")), streaming());
        obs.reach = fails();
        ha.decide(&obs);
        let mut cluster = streaming();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        let db1 = cluster.members.get_mut("db1").unwrap();
        (db1.primary, db1.streaming, db1.upstream) = (false, true, Some("db2".into()));
        cluster.members.get_mut("db3").unwrap().upstream = Some("db2".into());
        let leads = |now| leading(now, cluster.clone(), fails());
        let plan = ha.decide(&leads(grace));
        assert_eq!(asks(&plan), None, "{plan:?}");
        let plan = ha.decide(&leads(2 * grace - 1));
        assert_eq!(asks(&plan), None, "{plan:?}");
        let plan = ha.decide(&leads(2 * grace));
        assert_eq!(asks(&plan), Some("db1"));
    }

    #[test]
    fn a_member_without_targets_behaves_as_before() {
        let mut ha = me("db1");
        let cluster = streaming();
        ha.decide(&leading(0, cluster.clone(), Reach::Unchecked));
        let plan = ha.decide(&leading(600_000, cluster, Reach::Unchecked));
        assert_eq!(asks(&plan), None);
        assert_eq!(plan.note, "leading (term 3)");
    }

    #[test]
    fn a_handover_target_whose_check_fails_does_not_take_the_key() {
        let mut cluster = streaming();
        cluster.leader = None;
        cluster.members.get_mut("db1").unwrap().running = false;
        cluster.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: Some("db2".into()),
            requested_ms: 0,
            at_ms: None,
            handoff: Some(Handoff {
                from: "db1".into(),
                to: "db2".into(),
                final_lsn: 1_000,
                timeline: 1,
                released_ms: 0,
            }),
        });
        let mut obs = observe(0, standby(1_040, Some("db1")), cluster);
        obs.reach = fails();
        let plan = me("db2").decide(&obs);
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("not taking over"), "{}", plan.note);
    }

    #[test]
    fn paused_a_manual_failover_to_a_member_whose_check_fails_is_not_carried_out() {
        let mut cluster = leaderless();
        cluster.settings.paused = true;
        cluster.switchover = Some(manual_failover("db2"));
        let mut obs = observe(0, standby(1_000, None), cluster);
        obs.reach = fails();
        let plan = me("db2").decide(&obs);
        assert!(plan.is_idle(), "{plan:?}");
        assert!(plan.note.contains("reachability check"), "{}", plan.note);
    }

    #[test]
    fn a_standby_holding_the_key_whose_check_fails_gives_it_up_instead_of_promoting() {
        let mut cluster = streaming();
        cluster.leader = Some(Leader {
            member: "db2".into(),
            term: 4,
        });
        let mut obs = observe(0, standby(1_000, Some("db1")), cluster);
        obs.reach = fails();
        let plan = me("db2").decide(&obs);
        assert_eq!(plan.actions, [Action::ReleaseLeader]);
    }
}
