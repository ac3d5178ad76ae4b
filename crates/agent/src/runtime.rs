//! `pgwarden agent`: the event loop around one member.
//!
//! A round runs on every heartbeat, at once when the leader key, the
//! synchronous set, the configuration or the initialize key change (a store
//! watch), so a standby reacts to the leader key's expiry within
//! milliseconds, and within 100 ms of the local postmaster dying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pg::{Endpoint, Instance, InstanceSpec, Role as PgRole, RunAs, Settings, Timeouts};
use store::cluster::{ClusterKey, ClusterKeys, DynamicConfig};
use store::{EtcdOptions, EtcdStore, Store, StoreError};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use api::local::{Activity, AgentRequest, AgentSide, LocalState, Request};

use crate::backup_taker::{ProgressSlot, Serving, Taker, TakerView};
use crate::bootstrap::FromBackup;
use crate::events::EventLog;
use crate::failsafe::HttpPeers;
use crate::hooks::Hooks;
use crate::member::{Member, MemberSpec, Now};
use crate::postgres::{LocalPostgres, RealPostgres, ReplicaSource};
use crate::standby_from_backup::StandbyFromBackup;
use store::HaView;

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("REST API: {0}")]
    Api(#[from] api::ApiError),
    #[error("REST API client (for failsafe questions to the other members): {0}")]
    ApiClient(#[from] api::ClientError),
    #[error("{0}")]
    Bootstrap(String),
}

/// The pieces `run` wires together, built from the configuration.
pub struct Agent {
    member: Member,
    pg: Arc<RealPostgres>,
    keys: ClusterKeys,
    store: Arc<dyn Store>,
    started: Instant,
    events: EventLog,
    side: AgentSide,
    /// What the REST API is started with.
    api: api::ApiContext,
    /// When the lease guard stops PostgreSQL unless a round moves it.
    fence: Arc<Fence>,
    /// The synchronous mode while this member leads with a valid lease,
    /// for the commit hold's watcher.
    hold_policy: watch::Sender<Option<ha::SyncMode>>,
    /// With a backup repository: what each round tells the backup taker,
    /// and the progress of the backup it runs.
    taker: Option<(watch::Sender<TakerView>, ProgressSlot)>,
    /// The reachability checker's latest result (`None`: no targets).
    reach: Option<watch::Receiver<ha::Reach>>,
}

type Fence = tokio::sync::watch::Sender<Option<tokio::time::Instant>>;

impl Agent {
    /// Connects to the store and prepares the member; seeds the dynamic
    /// configuration from the file's timing if the cluster has none yet.
    pub async fn from_config(config: &config::Config) -> Result<Agent, AgentError> {
        let run_as = RunAs::detect()?;
        pg::hide_from_children(config.secret_env_names());
        let member = &config.member;
        let endpoint = Endpoint::new(member.connect_address.clone(), member.port);
        let spec = InstanceSpec {
            data_dir: member.data_dir.clone(),
            bin_dir: member.bin_dir.clone(),
            log_file: member.effective_log_file(),
            endpoint: endpoint.clone(),
            superuser: PgRole {
                name: config.credentials.superuser.username.clone(),
                password: config.credentials.superuser.password.expose().to_string(),
            },
            replication: PgRole {
                name: config.credentials.replication.username.clone(),
                password: config.credentials.replication.password.expose().to_string(),
            },
            hba_networks: config
                .postgresql
                .hba_networks
                .iter()
                .map(|n| n.to_string())
                .collect(),
            run_as,
            timeouts: Timeouts {
                pg_ctl: config.timing.pg_ctl_timeout,
                clone: config.timing.clone_timeout,
            },
        };
        let mut settings = Settings::new(&member.name, &member.listen_address, member.port);
        settings.socket_dir = member
            .unix_socket_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        settings.parameters = config
            .postgresql
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let commands = crate::archive::commands(config)?;
        let from_backup = match (&config.bootstrap, &config.backup, &commands) {
            (Some(bootstrap), Some(backup), Some(commands)) => Some(
                FromBackup::new(bootstrap, backup, commands.restore_command.clone())
                    .map_err(AgentError::Bootstrap)?,
            ),
            _ => None,
        };
        let replica_sources = replica_sources(config.backup.as_ref(), commands.as_ref());
        if let Some(commands) = commands {
            tracing::info!(
                "archiving WAL to {}: archive_command = '{}'",
                config
                    .backup
                    .as_ref()
                    .map(|b| b.repository.to_string())
                    .unwrap_or_default(),
                commands.archive_command
            );
            settings.archive_command = Some(commands.archive_command);
            settings.restore_command = Some(commands.restore_command);
        }
        let mut pg = RealPostgres::new(Instance::new(spec), &member.name, settings);
        if let Some(from_backup) = from_backup {
            pg = pg.bootstrap_from(from_backup);
        }
        pg = pg.replicas_from(replica_sources);
        let pg = Arc::new(pg);

        let store_config = &config.store;
        let store: Arc<dyn Store> =
            Arc::new(EtcdStore::connect(EtcdOptions::from_config(store_config)).await?);
        let keys = ClusterKeys::new(&store_config.namespace, &store_config.cluster)?;
        let seeded = DynamicConfig {
            ttl_ms: config.timing.lease_ttl.as_millis() as u64,
            heartbeat_ms: config.timing.heartbeat.as_millis() as u64,
            ..DynamicConfig::default()
        };
        match keys.config().create(store.as_ref(), &seeded, None).await {
            Ok(_) => tracing::info!(
                "seeded the cluster configuration: lease ttl {} ms, heartbeat {} ms",
                seeded.ttl_ms,
                seeded.heartbeat_ms
            ),
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let repository = match config.backup.as_ref().map(backup::open) {
            None => None,
            Some(Ok(repo)) => Some(repo),
            Some(Err(err)) => {
                tracing::warn!(
                    "{}: the backup repository cannot be opened ({err}); this member takes no base backups until it can",
                    member.name
                );
                None
            }
        };
        let spec = MemberSpec {
            name: member.name.clone(),
            nofailover: member.tags.nofailover,
            nosync: member.tags.nosync,
            noloadbalance: member.tags.noloadbalance,
            priority: member.tags.priority,
            witness: false,
            pg_endpoint: endpoint,
            api_url: config.api_url(),
            can_backup: repository.is_some(),
        };
        let local: Arc<dyn LocalPostgres> = pg.clone();
        let events = EventLog::spawn(
            store.clone(),
            keys.clone(),
            member.name.clone(),
            Hooks::new(keys.cluster(), config.hooks.clone()),
        );
        let taker = repository.clone().map(|repo| {
            let (view, seen) = watch::channel(TakerView::default());
            let progress = ProgressSlot::default();
            Taker {
                member: member.name.clone(),
                store: store.clone(),
                keys: keys.clone(),
                repo,
                pg: pg.clone(),
                events: events.clone(),
                progress: progress.clone(),
                retention: (&config
                    .backup
                    .as_ref()
                    .map_or_else(config::Retention::default, |b| b.retention.clone()))
                    .into(),
            }
            .spawn(seen);
            (view, progress)
        });
        let (link, side) = api::local::link(LocalState {
            member: member.name.clone(),
            ..LocalState::default()
        });
        let mut member_core = Member::new(spec, keys.clone(), store.clone(), local);
        member_core.use_real_timers();
        let started = Instant::now();
        let fence = Arc::new(Fence::new(None));
        let extend = fence.clone();
        member_core.ask_failsafe_with(
            Arc::new(HttpPeers::new(
                api::ApiClient::new(config.api.ca_file.as_deref())?,
                config.api.token.as_ref().map(|t| t.expose().to_string()),
            )),
            Arc::new(move |until| {
                let at = fence_at(started, until);
                // Only ever later, and never where no deadline was set.
                extend.send_if_modified(|current| match current {
                    Some(c) if *c < at => {
                        *current = Some(at);
                        true
                    }
                    _ => false,
                });
            }),
        );
        Ok(Agent {
            member: member_core,
            pg,
            keys: keys.clone(),
            store: store.clone(),
            started,
            events,
            side,
            api: api::ApiContext {
                store,
                keys,
                member: member.name.clone(),
                link,
                api: config.api.clone(),
                repository,
            },
            fence,
            hold_policy: watch::channel(None).0,
            taker,
            reach: crate::reachability::spawn(&member.reachability),
        })
    }

    /// Runs until SIGTERM or SIGINT, then stops PostgreSQL and gives up the
    /// leader key so a standby takes over at once.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        // The API logs where it listens.
        let server = api::start(self.api.clone()).await?;
        let mut watch = self.store.watch_prefix(self.keys.prefix(), 0);
        let guard = tokio::spawn(lease_guard(
            self.fence.subscribe(),
            self.pg.clone(),
            self.member.name().to_string(),
        ));
        let commit_hold = tokio::spawn(crate::commit_hold::watch_commits(
            self.hold_policy.subscribe(),
            self.pg.clone(),
            self.store.clone(),
            self.keys.clone(),
            self.member.name().to_string(),
        ));
        let mut next_round = tokio::time::Instant::now();
        let mut last_round = next_round;
        let mut postmaster_check = tokio::time::interval(Duration::from_millis(100));
        postmaster_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut postmaster_alive = self.pg.instance().postmaster_pid().is_some();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_round) => {}
                _ = postmaster_check.tick() => {
                    // A postmaster that died (or appeared) is worth a round
                    // now rather than at the next heartbeat.
                    if self.pg.instance().postmaster_pid().is_some() == postmaster_alive {
                        continue;
                    }
                }
                event = watch.next() => {
                    if let Some(Ok(event)) = &event {
                        if let Some(ClusterKey::Member(name)) = self.keys.classify(&event.kv.key) {
                            let revision = (event.kind == store::EventKind::Put)
                                .then_some(event.kv.mod_revision as u64);
                            let at = now_since(self.started).mono;
                            self.member.note_status_seen(&name, revision, at);
                        }
                    }
                    match event {
                        Some(Ok(event)) if wakes(&self.keys, &event.kv.key) => {}
                        Some(Ok(event))
                            if self.member.awaits_member_news()
                                && matches!(
                                    self.keys.classify(&event.kv.key),
                                    Some(ClusterKey::Member(_))
                                ) =>
                        {
                            // Soon, not at once: every member publishes each
                            // heartbeat, and a few statuses make one round.
                            next_round = next_round.min(last_round + MEMBER_NEWS_SPACING);
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(err)) => {
                            tracing::debug!("store watch: {err}; watching again");
                            watch = self.store.watch_prefix(self.keys.prefix(), 0);
                            continue;
                        }
                        None => {
                            watch = self.store.watch_prefix(self.keys.prefix(), 0);
                            continue;
                        }
                    }
                }
                request = self.side.requests.recv() => {
                    if let Some(request) = request {
                        self.handle(request).await;
                        next_round = tokio::time::Instant::now();
                    }
                    continue;
                }
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
            let started = std::time::Instant::now();
            let started_at = self.started;
            let promise = self.promise_given();
            self.member.keep_failsafe_promise(promise);
            if let Some(reach) = &self.reach {
                let latest = reach.borrow().clone();
                self.member.set_reach(latest);
            }
            let round = self.member.round(&move || now_since(started_at)).await;
            // The backstop: stop PostgreSQL if no later round renews the
            // leader lease in time, even if that round hangs.
            let deadline = self
                .member
                .writes_valid_until()
                .map(|until| fence_at(self.started, until));
            let leading = deadline.is_some();
            let _ = self.fence.send(deadline);
            let policy = leading.then(|| self.member.records().settings().synchronous_mode);
            self.hold_policy.send_if_modified(|seen| {
                let changed = *seen != policy;
                *seen = policy;
                changed
            });
            postmaster_alive = self.pg.instance().postmaster_pid().is_some();
            self.events.send(self.member.take_events());
            let mut state = self
                .member
                .local_state(now_since(self.started), round.store_reachable);
            if let Some((view, progress)) = &self.taker {
                view.send_if_modified(|seen| {
                    let now = taker_view(self.member.records(), &state);
                    let changed = *seen != now;
                    *seen = now;
                    changed
                });
                if state.activity.is_none() {
                    state.activity = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                }
            }
            self.side.state.send_replace(state);
            let took = started.elapsed();
            let who = format!("{}:{}", self.member.name(), round.plan.role);
            tracing::debug!(
                "{who} round took {} ms: {:?}",
                took.as_millis(),
                round.plan.actions
            );
            if self.member.note_changed(&round.plan) {
                tracing::info!("{who} {}", round.plan.note);
            }
            match &round.failed {
                Some((_, error)) if error.starts_with("lost the leader race") => {
                    tracing::info!("{who} {error}")
                }
                Some((action, error)) => tracing::warn!("{who} {action:?} failed: {error}"),
                None => {}
            }
            let heartbeat =
                Duration::from_millis(self.member.records().settings().heartbeat_ms.max(50));
            if took > heartbeat && !round.plan.actions.iter().any(ha::Action::is_long) {
                tracing::warn!(
                    "{who} a round took {} ms, more than the heartbeat ({} ms): the host, its disk or the store is slow; \
                     rounds slower than the lease TTL demote a primary",
                    took.as_millis(),
                    heartbeat.as_millis()
                );
            }
            last_round = tokio::time::Instant::now();
            // A heartbeat from the round's start: a round slowed by the
            // store must not also delay the next lease renewal by a whole
            // heartbeat (with 400 ms per request, the lease ran out).
            next_round = (tokio::time::Instant::from_std(started) + heartbeat)
                .max(last_round + MEMBER_NEWS_SPACING);
            // A silent leader's timers run out between heartbeats: look
            // again right then (a host death is replaced up to a
            // heartbeat sooner).
            if let Some(due) = self.member.fast_path_due() {
                // A few ms past the deadline: the clock is read in whole ms.
                let due =
                    tokio::time::Instant::from_std(self.started) + Duration::from_millis(due + 5);
                if due > last_round {
                    next_round = next_round.min(due.max(last_round + MEMBER_NEWS_SPACING));
                }
            }
        }
        guard.abort();
        commit_hold.abort();
        server.shutdown().await;
        self.shutdown().await
    }

    /// The failsafe promise this member's API gave, on the agent's
    /// monotonic clock; `None` once it has run out.
    fn promise_given(&self) -> Option<ha::FailsafePromise> {
        let slot = self.side.promise.lock().unwrap_or_else(|e| e.into_inner());
        let promise = slot.as_ref()?;
        let until = promise.until.checked_duration_since(self.started)?;
        Some(ha::FailsafePromise {
            leader: promise.leader.clone(),
            until: until.as_millis() as u64,
        })
    }

    /// A request from the REST API. Rounds wait meanwhile; the keepalive
    /// keeps the member's lease and status fresh.
    async fn handle(&mut self, request: AgentRequest) {
        let AgentRequest { request, reply } = request;
        let now = now_since(self.started);
        let name = self.member.name().to_string();
        match request {
            Request::Restart => {
                tracing::info!("{name} restarting PostgreSQL on request");
                self.side.state.send_modify(|state| {
                    state.activity = Some(Activity {
                        what: "restart".to_string(),
                        done_bytes: 0,
                        total_bytes: None,
                    })
                });
                let keepalive = self
                    .member
                    .keepalive("restarting PostgreSQL on request".into(), now);
                let result = tokio::select! {
                    result = self.member.restart(now) => result,
                    _ = keepalive => unreachable!("the keepalive never ends"),
                };
                self.side.state.send_modify(|state| state.activity = None);
                if let Err(err) = &result {
                    tracing::warn!("{name} {err}");
                }
                let _ = reply.send(result);
            }
            Request::Retire => {
                tracing::info!("{name} retiring on request: stopping PostgreSQL");
                let result = self.member.retire(now).await;
                match &result {
                    Ok(done) => tracing::warn!("{name} {done}"),
                    Err(err) => tracing::warn!("{name} {err}"),
                }
                let _ = reply.send(result);
            }
            Request::Reinit => {
                let leader = match self.member.reinit_source() {
                    Ok(leader) => leader,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                };
                tracing::info!("{name} re-cloning from {leader} on request");
                let _ = reply.send(Ok(format!("re-cloning {name} from {leader}")));
                let keepalive = self
                    .member
                    .keepalive(format!("re-cloning from {leader} on request"), now);
                let Agent {
                    member, pg, side, ..
                } = self;
                let progress = async {
                    let mut tick = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        tick.tick().await;
                        let (done, total) = pg.clone_progress().unwrap_or((0, 0));
                        side.state.send_modify(|state| {
                            state.pg_running = false;
                            state.streaming = false;
                            state.activity = Some(Activity {
                                what: "reinit".to_string(),
                                done_bytes: done,
                                total_bytes: (total > 0).then_some(total),
                            });
                        });
                    }
                };
                let result = tokio::select! {
                    result = member.reinit(&leader, now) => result,
                    _ = keepalive => unreachable!("the keepalive never ends"),
                    _ = progress => unreachable!("the progress loop never ends"),
                };
                side.state.send_modify(|state| state.activity = None);
                if let Err(err) = result {
                    tracing::warn!("{name} {err}");
                }
            }
        }
        self.events.send(self.member.take_events());
    }

    async fn shutdown(mut self) -> Result<(), AgentError> {
        let name = self.member.name().to_string();
        if self.member.is_leader() {
            tracing::info!(
                "{name} shutting down: stopping PostgreSQL, then giving up the leader key"
            );
        } else {
            tracing::info!(
                "{name} shutting down: stopping PostgreSQL (this member holds no leader key)"
            );
        }
        // No writes after the key is given up: stop first.
        if let Err(err) = self.pg.stop(ha::StopMode::Fast).await {
            tracing::warn!("{name} fast stop failed ({err}); stopping immediately");
            self.pg.stop(ha::StopMode::Immediate).await?;
        }
        if let Err(err) = self.member.resign().await {
            tracing::warn!(
                "{name} could not give up the leader key ({err}); it expires with its lease"
            );
        }
        Ok(())
    }
}

/// When the lease guard stops PostgreSQL, for writes safe until `until`
/// (ms on the agent's monotonic clock).
fn fence_at(started: Instant, until: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(
        started + Duration::from_millis(crate::member::fence_before(until)),
    )
}

fn now_since(started: Instant) -> Now {
    Now {
        mono: started.elapsed().as_millis() as u64,
        wall_ms: api::time::now_ms(),
    }
}

/// Stops PostgreSQL immediately when the leader lease is about to run out
/// and no round has renewed it: a primary never waits for permission to stop
/// being primary, not even for its own stuck event loop (DESIGN.md rule 3).
async fn lease_guard(
    mut deadline: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
    pg: Arc<RealPostgres>,
    member: String,
) {
    loop {
        let current = *deadline.borrow_and_update();
        match current {
            None => {
                if deadline.changed().await.is_err() {
                    return;
                }
            }
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        if *deadline.borrow() == Some(at) {
                            tracing::warn!(
                                "{member}: the leader lease (or in failsafe mode the other members' confirmations) runs out \
                                 and no round renewed it: stopping PostgreSQL now"
                            );
                            if let Err(err) = pg.stop(ha::StopMode::Immediate).await {
                                tracing::error!(
                                    "{member}: could not stop PostgreSQL ({err}); it may still accept writes without the leader key: \
                                     stop it by hand now (pg_ctl stop -m immediate -D {})",
                                    pg.instance().data_dir().display()
                                );
                            }
                            if deadline.changed().await.is_err() {
                                return;
                            }
                        }
                    }
                    changed = deadline.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// What the backup taker acts on, from a round's records and this member's
/// state: a store that did not answer changes nothing (the records are the
/// last read).
fn taker_view(records: &store::ClusterRecords, state: &LocalState) -> TakerView {
    let primary = records
        .leader_name()
        .and_then(|leader| records.members.get(leader))
        .and_then(|status| status.value.pg_address().ok())
        .map(|address| pg::Endpoint::new(address.host, address.port));
    TakerView {
        assignment: records.backup_assignment.clone(),
        serving: state.pg_running.then_some(match state.primary {
            true => Serving::Primary,
            false => Serving::Standby,
        }),
        primary,
    }
}

/// The least time between two rounds that other members' statuses wake.
const MEMBER_NEWS_SPACING: Duration = Duration::from_millis(50);

/// Changes that may call for a decision before the next heartbeat.
fn wakes(keys: &ClusterKeys, key: &str) -> bool {
    matches!(
        keys.classify(key),
        Some(
            ClusterKey::Leader
                | ClusterKey::Sync
                | ClusterKey::Config
                | ClusterKey::Initialize
                | ClusterKey::Switchover
        )
    )
}

/// `[backup] replica_from` as the agent carries it out: without a
/// repository, pg_basebackup only; with one that cannot be opened, the
/// methods other than "backup" (none for `["backup"]`: the operator did
/// not want pg_basebackup, and the clone fails saying why).
fn replica_sources(
    backup: Option<&config::Backup>,
    commands: Option<&crate::archive::ArchiveCommands>,
) -> Vec<ReplicaSource> {
    let (Some(backup), Some(commands)) = (backup, commands) else {
        return vec![ReplicaSource::Primary];
    };
    let mut sources = Vec::new();
    for method in &backup.replica_from {
        match method {
            config::ReplicaMethod::Primary => sources.push(ReplicaSource::Primary),
            config::ReplicaMethod::Backup => {
                match StandbyFromBackup::new(backup, commands.restore_command.clone()) {
                    Ok(from) => sources.push(ReplicaSource::Backup(from)),
                    Err(err) => tracing::warn!(
                        "the backup repository cannot be opened ({err}): standbys are not built from backups"
                    ),
                }
            }
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::ReplicaMethod::{Backup, Primary};

    fn names(backup: Option<&config::Backup>) -> Vec<&'static str> {
        let commands = crate::archive::ArchiveCommands {
            archive_command: "pgwarden wal push %p".into(),
            restore_command: "pgwarden wal fetch %f %p".into(),
        };
        replica_sources(backup, Some(&commands))
            .iter()
            .map(ReplicaSource::name)
            .collect()
    }

    #[test]
    fn standbys_are_built_in_the_configured_order() {
        let with = |replica_from: Vec<config::ReplicaMethod>| config::Backup {
            repository: config::Repository::Directory("/mnt/backup".into()),
            retention: config::Retention::default(),
            replica_from,
        };
        assert_eq!(names(None), ["pg_basebackup"]);
        assert_eq!(
            names(Some(&with(vec![Backup, Primary]))),
            ["a backup", "pg_basebackup"]
        );
        assert_eq!(
            names(Some(&with(vec![Primary, Backup]))),
            ["pg_basebackup", "a backup"]
        );
        assert_eq!(names(Some(&with(vec![Primary]))), ["pg_basebackup"]);
        assert_eq!(names(Some(&with(vec![Backup]))), ["a backup"]);
    }
}
