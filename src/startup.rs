//! Wiring: settings in, a bound and ready server out.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;

use crate::activity::Activity;
use crate::api::{self, AppState};
use crate::audit::Audit;
use crate::auth::KeyDigests;
use crate::ca::Issuers;
use crate::config::{ConfigError, FallbackPolicy, Settings, TlsSettings};
use crate::crl::{CrlPublisher, ListedFile};
use crate::fsutil;
use crate::groups::{self, GroupTable};
use crate::history::History;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::net::{OverTls, PeerCertificate, TrustedProxies};
use crate::ratelimit::RateLimits;
use crate::registry::retention_after_expiry;
use crate::secret::{MIN_SECRET_LEN, Secret};
use crate::store::{
    BlocksFile, FallbackStore, Ledger, MemoryStore, RedisConfig, RedisStore, StaleInRedis,
};
use crate::token::TokenService;

pub const JWT_SECRET_FILE: &str = "jwt.secret";

/// How often idle rate-limit entries are forgotten.
const RATE_LIMIT_CLEANUP: Duration = Duration::from_secs(60);

pub struct Application {
    port: u16,
    mqtt: Option<crate::mqtt::MqttListener>,
    server: Server,
    background: BackgroundTasks,
}

/// Tasks that live as long as the server: aborted when it is dropped.
struct BackgroundTasks(Vec<JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The port first: a server that cannot listen must not generate a CA, reach
        // Redis or sign a CRL before saying so.
        raise_open_files_limit();
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (server.host / server.port)",
                    settings.server.host, settings.server.port
                )
            })?;
        let address = listener.local_addr()?;
        let certs_dir = &settings.ca.dir;
        fsutil::create_private_dir(certs_dir).with_context(|| {
            format!("cannot create the certs directory {}", certs_dir.display())
        })?;
        fsutil::check_not_shared_writable(certs_dir).map_err(|e| ConfigError::key("ca.dir", e))?;
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let issuers = Arc::new(
            Issuers::load(&settings.ca, &settings.issuers, workers).context("loading the CA")?,
        );
        let secret = jwt_secret(&settings)?;
        let tokens = TokenService::new(
            &secret,
            &settings.tokens.issuer,
            &settings.tokens.audience,
            settings.tokens.ttl(),
        );
        // MQTT's certificate ownership tokens: the same secret, an audience of their own,
        // so that no other door takes one as a provisioning token.
        let ownership = TokenService::new(
            &secret,
            &settings.tokens.issuer,
            &format!("{}#mqtt-ownership", settings.tokens.audience),
            crate::mqtt::OWNERSHIP_TTL,
        );
        let groups = Arc::new(GroupTable::new(groups::load(&settings)?));
        let admin = KeyDigests::load_named(
            &settings.admin.keys,
            settings.admin.keys_file.as_deref(),
            "admin.keys",
        )?;
        let proxies = TrustedProxies::parse(&settings.server.trusted_proxies)?;
        let tls = tls_config(&settings.server.tls, &issuers.cert_ders())?;
        let metrics = Arc::new(Metrics::new());
        metrics.redis_enabled.set(i64::from(settings.redis.enabled));
        // The first to expire: the alert is for whichever issuer needs replacing first.
        let earliest = issuers.iter().map(|(_, ca)| ca.not_after()).min();
        metrics
            .ca_not_after
            .set(earliest.map_or(0, |t| t.unix_timestamp()));
        let limits = Arc::new(RateLimits::new(&settings.rate_limit));

        let retention = retention_after_expiry(settings.renewal.grace());
        let memory = Arc::new(MemoryStore::with_retention(retention));
        let mut tasks = vec![
            memory.spawn_sweeper(
                Duration::from_secs_f64(settings.memory.sweep_interval_seconds),
                metrics.clone(),
            ),
            tokio::spawn(forget_idle_limits(Arc::downgrade(&limits))),
        ];
        let redis = if settings.redis.enabled {
            let config = RedisConfig {
                retention_after_expiry: retention,
                ..RedisConfig::from_settings(&settings.redis)?
            };
            let (redis, redis_tasks) = RedisStore::connect(config, metrics.clone())
                .await
                .map_err(|e| ConfigError::key("redis.url", e))?;
            tasks.extend(redis_tasks);
            Some(redis)
        } else {
            None
        };
        let shared_redis = redis.clone();
        let stale = match &redis {
            Some(_) => {
                StaleInRedis::journaled(certs_dir, settings.tokens.ttl()).with_context(|| {
                    format!(
                        "reading the stale-in-redis journal in {}",
                        certs_dir.display()
                    )
                })?
            }
            None => StaleInRedis::default(),
        };
        let ledger = match &redis {
            Some(_) => None,
            None => {
                let (ledger, registry) = Ledger::open(certs_dir, retention).with_context(|| {
                    format!("reading the registry log in {}", certs_dir.display())
                })?;
                tracing::info!(
                    path = %ledger.path().display(),
                    certificates = registry.records.len(),
                    blocked = registry.blocked.len(),
                    "registry kept in a file (redis is off)"
                );
                memory.restore(registry);
                Some(ledger)
            }
        };
        let store = Arc::new(
            FallbackStore::new(
                redis,
                memory,
                settings.redis.fallback,
                metrics.clone(),
                stale,
                ledger,
            )
            .with_blocks_file(BlocksFile::in_dir(certs_dir)),
        );
        if settings.redis.enabled {
            tasks.push(store.spawn_reconciler(Duration::from_millis(
                settings.redis.health_check_interval_ms,
            )));
        }
        let crl = CrlPublisher::new(
            issuers.clone(),
            store.clone(),
            Duration::from_secs(u64::from(settings.ca.crl_validity_hours) * 3600),
            metrics.clone(),
            Some(ListedFile::in_dir(certs_dir)),
        )
        .await;
        tasks.push(crl.spawn());

        groups::announce(&groups.current(), &metrics);
        tasks.push(groups::spawn_reloader(
            settings.clone(),
            groups.clone(),
            metrics.clone(),
        ));
        if settings.redis.enabled && settings.redis.fallback == FallbackPolicy::Memory {
            tracing::info!(
                "redis fallback is memory: tokens issued during an outage live only in this instance"
            );
        }
        tracing::info!(
            %address,
            tls = tls.is_some(),
            storage = store.mode().as_str(),
            groups = %groups::describe(&groups.current()),
            ca = issuers.first().subject(),
            issuers = issuers.len(),
            token_ttl_seconds = settings.tokens.ttl_seconds,
            "provisiond listening"
        );
        if admin.is_empty() {
            tracing::info!(
                "admin API and console off: no admin key (set ADMIN_KEYS, ADMIN_KEYS_FILE or admin.keys)"
            );
        } else {
            // The names as read: a key meant whole that was read as `name:key` shows here.
            tracing::info!(
                admin_keys = admin.names().join(", "),
                "console at /console/ (admin API on)"
            );
        }

        let audit = Arc::new(Audit::default());
        let activity = Arc::new(Activity::default());
        let history = shared_redis.map(|redis| {
            let (history, copier) = History::spawn(redis, &audit, activity.clone());
            tasks.push(copier);
            history
        });
        let lifecycle = Lifecycle {
            store: store.clone(),
            issuers: issuers.clone(),
            crl: crl.clone(),
            metrics: metrics.clone(),
            audit: audit.clone(),
            activity: activity.clone(),
            revoke_previous: settings.renewal.revoke_previous,
        };
        let state = web::Data::new(AppState {
            store,
            tokens,
            issuers,
            crl,
            groups,
            renewal: settings.renewal.clone(),
            admin,
            limits,
            proxies,
            metrics,
            audit,
            activity,
            lifecycle,
            started: Instant::now(),
            body_limit: settings.server.body_limit_bytes,
            body_timeout: Duration::from_millis(settings.server.body_timeout_ms),
            history,
            ocsp_cache: Default::default(),
            cmp: Default::default(),
        });
        let mqtt = crate::mqtt::listen(
            &settings.mqtt,
            &settings.server.tls,
            state.clone(),
            ownership,
            workers,
        )?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(api::log_requests))
                .configure(api::routes)
        })
        .workers(workers)
        .shutdown_timeout(settings.server.shutdown_timeout_seconds)
        .client_request_timeout(Duration::from_millis(
            settings.server.request_head_timeout_ms,
        ))
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_seconds))
        .on_connect(remember_client_certificate);
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .run();

        Ok(Self {
            port: address.port(),
            mqtt,
            server,
            background: BackgroundTasks(tasks),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the MQTT listener is bound, when `mqtt.listen` is set.
    pub fn mqtt_address(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().map(|listener| listener.address)
    }

    /// A handle to stop the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT (or a stop through the handle): then stops
    /// accepting, lets requests in flight finish for up to
    /// `server.shutdown_timeout_seconds`, and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let _background = self.background;
        let _mqtt = self.mqtt;
        self.server.await
    }
}

/// Keeps a TLS connection's client certificate (verified against our CA by rustls) for
/// the requests on that connection.
fn remember_client_certificate(
    connection: &dyn std::any::Any,
    data: &mut actix_web::dev::Extensions,
) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = connection.downcast_ref::<Tls>() else {
        return;
    };
    data.insert(OverTls);
    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        data.insert(PeerCertificate(leaf.to_vec()));
    }
}

async fn forget_idle_limits(limits: std::sync::Weak<RateLimits>) {
    loop {
        tokio::time::sleep(RATE_LIMIT_CLEANUP).await;
        let Some(limits) = limits.upgrade() else {
            return;
        };
        limits.forget_idle();
    }
}

/// The rustls configuration for `server.tls`, if it is set. Clients may present a
/// certificate from our CA (renewal by mutual TLS); none is required.
fn tls_config(
    tls: &TlsSettings,
    ca_ders: &[Vec<u8>],
) -> anyhow::Result<Option<rustls::ServerConfig>> {
    let Some((chain, key_der)) = tls.identity()? else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in ca_ders {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = crate::config::rustls_server_config(provider, clients, (chain, key_der))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// The configured secret, or the one kept in `<certs>/jwt.secret` (made on first start),
/// so that a restart, or another instance sharing `certs/`, accepts the same tokens.
fn jwt_secret(settings: &Settings) -> Result<Secret, ConfigError> {
    let configured = Settings::read_secret(
        settings.tokens.jwt_secret.as_ref(),
        settings.tokens.jwt_secret_file.as_deref(),
        "tokens.jwt_secret_file",
    )?;
    let secret = match configured {
        Some(secret) => secret,
        None => {
            let path = settings.ca.dir.join(JWT_SECRET_FILE);
            let (secret, created) =
                fsutil::read_or_create_secret(&path, crate::crypto::random_secret).map_err(
                    |e| ConfigError::key("tokens.jwt_secret", format!("{}: {e}", path.display())),
                )?;
            if created {
                tracing::info!(path = %path.display(), "generated a JWT secret");
            }
            Secret::new(secret)
        }
    };
    if secret.expose().len() < MIN_SECRET_LEN {
        return Err(ConfigError::key(
            "tokens.jwt_secret",
            format!("must be at least {MIN_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret)
}

/// Every connection holds a descriptor, idle ones included (keep-alive, or a client that
/// never sends). At the soft limit most systems start with (1,024), a few thousand idle
/// connections make accept fail and stall real clients for seconds (`scripts/abuse`),
/// so the soft limit is raised to the hard one, as Go's runtime does.
fn raise_open_files_limit() {
    const FEW: u64 = 4096;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < FEW => tracing::warn!(
            limit,
            "few open files allowed (RLIMIT_NOFILE): each connection needs one; raise the \
             hard limit (systemd LimitNOFILE=, docker --ulimit nofile=)"
        ),
        Ok(limit) => tracing::debug!(limit, "open files allowed"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise RLIMIT_NOFILE"),
    }
}
