//! The etcd v3 backend, through the `etcd-client` crate.
//!
//! Endpoint handling is ours, not the client's balancer: etcd-client puts
//! all endpoints behind tonic's power-of-two-choices balancer, whose lazy
//! per-endpoint connections report a dead endpoint as *ready* and fail the
//! request sent to it, so with one of three endpoints down a good share of
//! requests fails (and a black-holed endpoint costs a connect timeout each
//! time it is picked). Instead, [`EtcdStore`] keeps one single-endpoint
//! client per endpoint, talks to one endpoint at a time and moves to the
//! next as soon as a call to the current one fails, retrying within the
//! call's time budget. See `docs/store.md`.
//!
//! Every call is bounded by [`EtcdOptions::timeout`], retries included.
//! Requests carry etcd's `hasleader` flag: a member cut off from the raft
//! leader answers at once with "no leader" (and closes its watch streams)
//! instead of waiting, and the store moves on to another endpoint.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::time::Instant;
use tonic::Code;

use crate::error::StoreError;
use crate::types::{
    Condition, EventKind, Expect, KeyValue, Lease, LeaseId, Snapshot, WatchEvent, WatchStream,
    Write,
};
use crate::Store;

/// HTTP/2 keep-alive ping interval while streams (watches, keep-alives) are
/// open. etcd refuses pings more often than every 5 s
/// (`--grpc-keepalive-min-time`) and pings on idle connections, so neither.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Most keep-alive streams kept open at once (one per lease refreshed).
const MAX_KEEPERS: usize = 16;

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:2379`, `https://…`) or `host:port` (the
    /// scheme then follows `tls`).
    pub endpoints: Vec<String>,
    /// Prepended to every key, e.g. to share an etcd with other users.
    /// Keys in results and events come back without it.
    pub namespace: String,
    /// Bound on every call, retries on other endpoints included.
    pub timeout: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<EtcdTls>,
}

impl EtcdOptions {
    /// Plain-text, no authentication, no namespace, a 2 s timeout.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            namespace: String::new(),
            timeout: Duration::from_secs(2),
            username: None,
            password: None,
            tls: None,
        }
    }

    /// What a `[store]` section of pgwarden.toml or proxy.toml describes.
    pub fn from_config(section: &config::Store) -> EtcdOptions {
        let tls = (section.ca_file.is_some() || section.cert_file.is_some()).then(|| EtcdTls {
            ca: section.ca_file.clone(),
            cert: section.cert_file.clone(),
            key: section.key_file.clone(),
            domain: None,
        });
        EtcdOptions {
            endpoints: section.endpoints.clone(),
            namespace: String::new(),
            timeout: section.request_timeout,
            username: section.auth.as_ref().map(|a| a.username.clone()),
            password: section
                .auth
                .as_ref()
                .map(|a| a.password.expose().to_string()),
            tls,
        }
    }
}

/// TLS towards etcd (rustls): PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificates (default: the system's
    /// roots are not used, so this is needed for a private CA).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify in the server certificate, when it is not the
    /// endpoint's host.
    pub domain: Option<String>,
}

/// A [`Store`] on an etcd v3 cluster. Clones share connections.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("current", &self.current_endpoint())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoints: Vec<String>,
    namespace: String,
    timeout: Duration,
    connect: ConnectOptions,
    /// One client per endpoint, made on first use.
    clients: Mutex<Vec<Option<Client>>>,
    /// The endpoint calls go to until it fails.
    current: AtomicUsize,
    /// Open keep-alive streams by lease, so a refresh is one round trip.
    keepers: Mutex<HashMap<LeaseId, Keeper>>,
    /// Bumped by [`EtcdStore::break_watches`].
    breaks: tokio::sync::watch::Sender<u64>,
}

struct Keeper {
    endpoint: usize,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

/// How one attempt failed.
enum Fail {
    /// Worth another attempt, on another endpoint.
    Retry(String),
    /// The answer.
    Final(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Final(e)
    }
}

impl EtcdStore {
    /// Checks the options and reaches one endpoint (authenticating when a
    /// username is given) within the timeout.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let refused = |detail: String| StoreError::Refused { detail };
        if options.endpoints.is_empty() {
            return Err(refused(
                "no etcd endpoints given; list at least one client URL such as http://127.0.0.1:2379"
                    .to_string(),
            ));
        }
        if options.timeout.is_zero() {
            return Err(refused("the etcd timeout must be above zero".to_string()));
        }
        let mut connect = ConnectOptions::new()
            .with_require_leader(true)
            // etcd's auth tokens expire (5 min by default): re-authenticate.
            .with_auto_token_refresh(true)
            .with_connect_timeout((options.timeout / 2).max(Duration::from_millis(100)))
            .with_keep_alive(PING_INTERVAL, options.timeout)
            .with_keep_alive_while_idle(false);
        match (&options.username, &options.password) {
            (Some(user), Some(password)) => connect = connect.with_user(user, password),
            (None, None) => {}
            _ => {
                return Err(refused(
                    "etcd username and password go together; give both or neither".to_string(),
                ))
            }
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls_options(tls)?);
        }
        let n = options.endpoints.len();
        let (breaks, _) = tokio::sync::watch::channel(0);
        let store = EtcdStore {
            inner: Arc::new(Inner {
                endpoints: options.endpoints,
                namespace: options.namespace,
                timeout: options.timeout,
                connect,
                clients: Mutex::new(vec![None; n]),
                current: AtomicUsize::new(0),
                keepers: Mutex::new(HashMap::new()),
                breaks,
            }),
        };
        store
            .inner
            .call("reach etcd", |mut client, _, _| async move {
                client.status().await.map(drop).map_err(classify)
            })
            .await?;
        Ok(store)
    }

    /// The endpoint calls currently go to.
    pub fn current_endpoint(&self) -> String {
        self.inner.endpoints[self.inner.current.load(Ordering::Relaxed)].clone()
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Test hook: drops the connection of every watch of this store (client
    /// side). Each resumes on its own, after its last delivered event.
    pub fn break_watches(&self) {
        self.inner.breaks.send_modify(|generation| *generation += 1);
    }
}

/// etcd-client's TLS options for `tls`, with the PEM files read. Public for
/// clients of etcd's own calls, such as the lab's status probe.
pub fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    fn read(what: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
        std::fs::read(path).map_err(|e| StoreError::Refused {
            detail: format!(
                "cannot read the etcd TLS {what} {}: {e}; fix the path in the configuration",
                path.display()
            ),
        })
    }
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Refused {
                detail:
                    "an etcd TLS client certificate and its key go together; give both or neither"
                        .to_string(),
            })
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain);
    }
    Ok(options)
}

/// Sorts an etcd-client error into "try elsewhere" and "that is the answer".
fn classify(error: etcd_client::Error) -> Fail {
    use etcd_client::Error as E;
    let refused = |detail: String| Fail::Final(StoreError::Refused { detail });
    match error {
        E::GRpcStatus(status) => {
            let message = status.message().to_string();
            match status.code() {
                Code::PermissionDenied | Code::Unauthenticated => refused(format!(
                    "{message}; check the etcd username, password and the role's permissions on the key prefix"
                )),
                Code::ResourceExhausted if message.contains("space") => Fail::Final(StoreError::unavailable(format!(
                    "{message}; etcd is out of space: compact and defragment it, then disarm the NOSPACE alarm"
                ))),
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::AlreadyExists
                | Code::NotFound => refused(message),
                _ => Fail::Retry(format!("{:?}: {message}", status.code())),
            }
        }
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::Utf8Error(_) => {
            refused(error.to_string())
        }
        other => Fail::Retry(other.to_string()),
    }
}

fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == Code::NotFound && status.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// Like [`classify`], with "lease not found" naming the lease.
fn classify_lease(lease: Option<LeaseId>) -> impl Fn(etcd_client::Error) -> Fail {
    move |error| match lease {
        Some(lease) if is_lease_not_found(&error) => {
            Fail::Final(StoreError::LeaseNotFound { lease })
        }
        _ => classify(error),
    }
}

impl Inner {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let key = std::str::from_utf8(kv.key())
            .map_err(|_| {
                StoreError::bad_data(
                    &String::from_utf8_lossy(kv.key()),
                    "the key is not UTF-8; delete it with etcdctl",
                )
            })?
            .strip_prefix(self.namespace.as_str())
            .ok_or_else(|| {
                StoreError::bad_data(
                    &String::from_utf8_lossy(kv.key()),
                    format!("the key is outside the namespace `{}`", self.namespace),
                )
            })?
            .to_string();
        Ok(KeyValue {
            key,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        })
    }

    /// The client of endpoint `index`, made (and authenticated) on first use.
    async fn client(&self, index: usize) -> Result<Client, Fail> {
        if let Some(client) = &self.clients.lock().unwrap_or_else(|e| e.into_inner())[index] {
            return Ok(client.clone());
        }
        let client = Client::connect([&self.endpoints[index]], Some(self.connect.clone()))
            .await
            .map_err(classify)?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        Ok(clients[index].get_or_insert(client).clone())
    }

    /// After endpoint `failed` failed: moves calls to the next endpoint,
    /// unless another call already did.
    fn rotate(&self, failed: usize, why: &str) {
        let n = self.endpoints.len();
        if n > 1
            && self
                .current
                .compare_exchange(
                    failed,
                    (failed + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                "etcd endpoint {} failed ({why}); switching to {}",
                self.endpoints[failed],
                self.endpoints[(failed + 1) % n]
            );
        }
    }

    /// Runs `op` against the current endpoint, moving to the next one and
    /// retrying on failures worth a retry, all within the timeout. `op` gets
    /// the client, the endpoint index and the attempt number (0 first): a
    /// write retried after an attempt whose outcome is unknown may find its
    /// own earlier write.
    async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client, usize, u32) -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.endpoints.len() as u32;
        let mut attempt = 0u32;
        let mut last = String::from("none finished");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StoreError::unavailable(format!(
                    "{what}: no etcd endpoint of {} answered within {:?} ({attempt} attempts; last error from {last})",
                    self.endpoints.join(","),
                    self.timeout
                )));
            }
            let index = self.current.load(Ordering::Relaxed);
            // One attempt gets at most half the budget, so an endpoint that
            // takes a request and never answers (a follower that has not
            // yet noticed its leader died) leaves time for another.
            let budget = remaining.min((self.timeout / 2).max(Duration::from_millis(100)));
            let outcome = tokio::time::timeout(budget, async {
                let client = self.client(index).await?;
                op(client, index, attempt).await
            })
            .await;
            let why = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(Fail::Final(error))) => return Err(error),
                Ok(Err(Fail::Retry(why))) => why,
                // Cut short by the deadline: keep the earlier, telling error.
                Err(_) if budget == remaining && attempt > 0 => continue,
                Err(_) => format!("no answer within {budget:?}"),
            };
            last = format!("{}: {why}", self.endpoints[index]);
            tracing::debug!("etcd: {what}: attempt {attempt} failed: {last}");
            self.rotate(index, &why);
            attempt += 1;
            if attempt % n == 0 {
                // Every endpoint failed once more: an election, or all down.
                let round = (attempt / n).min(5);
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(Duration::from_millis(25 << round).min(remaining)).await;
            }
        }
    }
}

/// The transaction condition for `expect` on `full` (a namespaced key).
fn compare(full: String, expect: Expect) -> Compare {
    match expect {
        Expect::Absent => Compare::create_revision(full, CompareOp::Equal, 0),
        Expect::ModRevision(r) => Compare::mod_revision(full, CompareOp::Equal, r),
    }
}

/// A put attached to `lease`, or detached from any lease.
fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l.0))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// The key's state from the `or_else` get of a failed compare transaction.
fn current_from_txn(inner: &Inner, response: &TxnResponse) -> Result<Option<KeyValue>, StoreError> {
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(|kv| inner.key_value(kv)).transpose();
        }
    }
    Ok(None)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let inner = &self.inner;
        let full = inner.full_key(key);
        let response = inner
            .call(&format!("get `{key}`"), |client, _, _| {
                let full = full.clone();
                async move { client.kv_client().get(full, None).await.map_err(classify) }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| inner.key_value(kv))
            .transpose()
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let inner = &self.inner;
        let full = inner.full_key(prefix);
        let response = inner
            .call(&format!("get prefix `{prefix}`"), |client, _, _| {
                let full = full.clone();
                async move {
                    client
                        .kv_client()
                        .get(full, Some(etcd_client::GetOptions::new().with_prefix()))
                        .await
                        .map_err(classify)
                }
            })
            .await?;
        Ok(Snapshot {
            revision: header_revision(response.header()),
            kvs: response
                .kvs()
                .iter()
                .map(|kv| inner.key_value(kv))
                .collect::<Result<_, _>>()?,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        let full = self.inner.full_key(key);
        let response = self
            .inner
            .call(&format!("put `{key}`"), |client, _, _| {
                let (full, value) = (full.clone(), value.clone());
                let options = put_options(lease);
                async move {
                    client
                        .kv_client()
                        .put(full, value, options)
                        .await
                        .map_err(classify_lease(lease))
                }
            })
            .await?;
        Ok(header_revision(response.header()))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        let inner = self.inner.clone();
        let full = inner.full_key(key);
        let compare = compare(full.clone(), expect);
        self.inner
            .call(&format!("compare-and-set `{key}`"), |client, _, attempt| {
                let txn = Txn::new()
                    .when(vec![compare.clone()])
                    .and_then(vec![TxnOp::put(
                        full.clone(),
                        value.clone(),
                        put_options(lease),
                    )])
                    .or_else(vec![TxnOp::get(full.clone(), None)]);
                let (inner, value, key) = (inner.clone(), value.clone(), key.to_string());
                async move {
                    let response = client
                        .kv_client()
                        .txn(txn)
                        .await
                        .map_err(classify_lease(lease))?;
                    if response.succeeded() {
                        return Ok(header_revision(response.header()));
                    }
                    let current = current_from_txn(&inner, &response)?;
                    // A retry after an attempt whose outcome is unknown:
                    // recognise our own write (same bytes, same lease,
                    // written after what we expected).
                    if let Some(kv) = current.as_ref().filter(|_| attempt > 0) {
                        let ours = kv.value == value
                            && kv.lease == lease
                            && match expect {
                                Expect::Absent => kv.create_revision == kv.mod_revision,
                                Expect::ModRevision(r) => kv.mod_revision > r,
                            };
                        if ours {
                            return Ok(kv.mod_revision);
                        }
                    }
                    Err(Fail::Final(StoreError::Conflict { key, current }))
                }
            })
            .await
    }

    async fn transaction(
        &self,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<i64, StoreError> {
        let inner = self.inner.clone();
        let compares: Vec<Compare> = conditions
            .iter()
            .map(|c| compare(inner.full_key(&c.key), c.expect))
            .collect();
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value, lease } => {
                    TxnOp::put(inner.full_key(key), value.clone(), put_options(*lease))
                }
                Write::Delete { key } => TxnOp::delete(inner.full_key(key), None),
            })
            .collect();
        let first_key = conditions
            .first()
            .map_or_else(|| "transaction".to_string(), |c| c.key.clone());
        let lease = writes.iter().find_map(|w| match w {
            Write::Put { lease, .. } => *lease,
            Write::Delete { .. } => None,
        });
        self.inner
            .call("transaction", |client, _, _| {
                let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
                let key = first_key.clone();
                async move {
                    let response = client
                        .kv_client()
                        .txn(txn)
                        .await
                        .map_err(classify_lease(lease))?;
                    if response.succeeded() {
                        Ok(header_revision(response.header()))
                    } else {
                        // A retry whose first attempt did succeed lands here
                        // too: callers re-read and find their own write.
                        Err(Fail::Final(StoreError::Conflict { key, current: None }))
                    }
                }
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let full = self.inner.full_key(key);
        let response = self
            .inner
            .call(&format!("delete `{key}`"), |client, _, _| {
                let full = full.clone();
                async move {
                    client
                        .kv_client()
                        .delete(full, None)
                        .await
                        .map_err(classify)
                }
            })
            .await?;
        Ok(response.deleted() > 0)
    }

    async fn compare_and_delete(&self, key: &str, mod_revision: i64) -> Result<i64, StoreError> {
        let inner = self.inner.clone();
        let full = inner.full_key(key);
        self.inner
            .call(
                &format!("compare-and-delete `{key}`"),
                |client, _, attempt| {
                    let txn = Txn::new()
                        // An absent key has mod revision 0: never match it.
                        .when(vec![Compare::mod_revision(
                            full.clone(),
                            CompareOp::Equal,
                            if mod_revision > 0 { mod_revision } else { -1 },
                        )])
                        .and_then(vec![TxnOp::delete(full.clone(), None)])
                        .or_else(vec![TxnOp::get(full.clone(), None)]);
                    let (inner, key) = (inner.clone(), key.to_string());
                    async move {
                        let response = client.kv_client().txn(txn).await.map_err(classify)?;
                        if response.succeeded() {
                            return Ok(header_revision(response.header()));
                        }
                        let current = current_from_txn(&inner, &response)?;
                        if current.is_none() && attempt > 0 && mod_revision > 0 {
                            // Most likely our own delete, from an attempt whose
                            // outcome was unknown; the key is gone either way.
                            return Ok(header_revision(response.header()));
                        }
                        Err(Fail::Final(StoreError::Conflict { key, current }))
                    }
                },
            )
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Refused {
                detail: "a lease needs a TTL above zero".to_string(),
            });
        }
        // etcd counts lease TTLs in whole seconds: round up.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let response = self
            .inner
            .call("grant a lease", |client, _, _| async move {
                client
                    .lease_client()
                    .grant(seconds, None)
                    .await
                    .map_err(classify)
            })
            .await?;
        if !response.error().is_empty() {
            return Err(StoreError::Refused {
                detail: format!("etcd did not grant the lease: {}", response.error()),
            });
        }
        Ok(Lease {
            id: LeaseId(response.id()),
            ttl: Duration::from_secs(response.ttl().max(0) as u64),
        })
    }

    async fn refresh_lease(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let inner = self.inner.clone();
        self.inner
            .call(&format!("refresh lease {lease}"), |client, endpoint, _| {
                let inner = inner.clone();
                async move {
                    let cached = inner
                        .keepers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&lease)
                        .filter(|k| k.endpoint == endpoint);
                    // A keeper in use is out of the cache: an attempt cut
                    // short drops it with whatever answer it still awaits.
                    let mut keeper = match cached {
                        Some(keeper) => keeper,
                        None => {
                            let (keeper, stream) = client
                                .lease_client()
                                .keep_alive(lease.0)
                                .await
                                .map_err(classify_lease(Some(lease)))?;
                            Keeper {
                                endpoint,
                                keeper,
                                stream,
                            }
                        }
                    };
                    keeper
                        .keeper
                        .keep_alive()
                        .await
                        .map_err(classify_lease(Some(lease)))?;
                    let answer = keeper
                        .stream
                        .message()
                        .await
                        .map_err(classify_lease(Some(lease)))?
                        .ok_or_else(|| Fail::Retry("the keep-alive stream closed".to_string()))?;
                    if answer.ttl() <= 0 {
                        return Err(Fail::Final(StoreError::LeaseNotFound { lease }));
                    }
                    let mut keepers = inner.keepers.lock().unwrap_or_else(|e| e.into_inner());
                    if keepers.len() >= MAX_KEEPERS {
                        // Leases nobody revoked: drop the oldest stream.
                        if let Some(oldest) = keepers.keys().min().copied() {
                            keepers.remove(&oldest);
                        }
                    }
                    keepers.insert(lease, keeper);
                    Ok(Duration::from_secs(answer.ttl() as u64))
                }
            })
            .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner
            .keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease);
        self.inner
            .call(
                &format!("revoke lease {lease}"),
                |client, _, attempt| async move {
                    match client.lease_client().revoke(lease.0).await {
                        Ok(_) => Ok(()),
                        // Gone after an attempt whose outcome is unknown: ours.
                        Err(e) if is_lease_not_found(&e) && attempt > 0 => Ok(()),
                        Err(e) => Err(classify_lease(Some(lease))(e)),
                    }
                },
            )
            .await
    }

    fn watch_prefix(&self, prefix: &str, start_revision: i64) -> WatchStream {
        let watch = EtcdWatch {
            inner: self.inner.clone(),
            prefix: self.inner.full_key(prefix),
            next: start_revision.max(0),
            stream: None,
            pending: VecDeque::new(),
            failures: 0,
            breaks: self.inner.breaks.subscribe(),
            done: false,
        };
        Box::pin(futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next_item().await?;
            Some((item, watch))
        }))
    }
}

/// One watch: connects lazily, reconnects (to whichever endpoint is
/// current) when its stream breaks and resumes from `next`.
struct EtcdWatch {
    inner: Arc<Inner>,
    /// With the namespace.
    prefix: String,
    /// The first revision not yet delivered (0 until connected when
    /// watching "from now").
    next: i64,
    stream: Option<(usize, etcd_client::WatchStream)>,
    /// Received, not yet delivered; always whole revisions.
    pending: VecDeque<Result<WatchEvent, StoreError>>,
    /// Connection failures since the last event, for the backoff.
    failures: u32,
    breaks: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

impl EtcdWatch {
    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some((index, stream)) = &mut self.stream else {
                self.connect().await;
                continue;
            };
            let index = *index;
            tokio::select! {
                Ok(()) = self.breaks.changed() => {
                    tracing::debug!("etcd watch on `{}`: connection dropped on request", self.prefix);
                    self.stream = None;
                }
                message = stream.message() => match message {
                    Ok(Some(response)) => self.receive(index, response),
                    Ok(None) => self.lost(index, "the server ended the watch stream".to_string()),
                    Err(e) => self.lost(index, e.to_string()),
                }
            }
        }
    }

    async fn connect(&mut self) {
        if self.failures > 1 {
            let backoff = Duration::from_millis(25 << self.failures.min(6));
            tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
        }
        let index = self.inner.current.load(Ordering::Relaxed);
        let mut options = WatchOptions::new().with_prefix();
        if self.next > 0 {
            options = options.with_start_revision(self.next);
        }
        let prefix = self.prefix.clone();
        let inner = self.inner.clone();
        let attempt = async move {
            let client = inner.client(index).await?;
            let mut stream = client
                .watch_client()
                .watch(prefix, Some(options))
                .await
                .map_err(classify)?;
            let created = stream
                .message()
                .await
                .map_err(classify)?
                .ok_or_else(|| Fail::Retry("the watch stream closed at once".to_string()))?;
            Ok::<_, Fail>((stream, created))
        };
        match tokio::time::timeout(self.inner.timeout, attempt).await {
            Ok(Ok((stream, created))) => {
                if created.canceled() {
                    self.cancelled(index, &created);
                } else {
                    if self.next == 0 {
                        self.next = header_revision(created.header()) + 1;
                    }
                    self.stream = Some((index, stream));
                    // A created answer may already carry events.
                    self.receive(index, created);
                }
            }
            Ok(Err(Fail::Retry(why))) => self.lost(index, why),
            Ok(Err(Fail::Final(error))) => {
                // Refused (permissions, say): tell the consumer, keep trying.
                self.lost(index, error.to_string());
                self.pending.push_back(Err(error));
            }
            Err(_) => self.lost(index, format!("no answer within {:?}", self.inner.timeout)),
        }
    }

    fn receive(&mut self, index: usize, response: etcd_client::WatchResponse) {
        if response.canceled() {
            self.cancelled(index, &response);
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            self.next = self.next.max(revision + 1);
            self.failures = 0;
            let kind = match event.event_type() {
                etcd_client::EventType::Put => EventKind::Put,
                etcd_client::EventType::Delete => EventKind::Delete,
            };
            self.pending
                .push_back(
                    self.inner
                        .key_value(kv)
                        .map(|kv| WatchEvent { kind, kv, revision }),
                );
        }
    }

    fn cancelled(&mut self, index: usize, response: &etcd_client::WatchResponse) {
        if response.compact_revision() > 0 {
            self.pending.push_back(Err(StoreError::Compacted {
                revision: self.next,
                compact_revision: response.compact_revision(),
            }));
            self.done = true;
            self.stream = None;
        } else {
            let reason = format!(
                "the server cancelled the watch: {}",
                response.cancel_reason()
            );
            self.lost(index, reason);
        }
    }

    fn lost(&mut self, index: usize, why: String) {
        tracing::warn!(
            "etcd watch on `{}` via {} lost ({why}); resuming from revision {}",
            self.prefix,
            self.inner.endpoints[index],
            self.next
        );
        self.stream = None;
        self.failures += 1;
        self.inner.rotate(index, &why);
    }
}
