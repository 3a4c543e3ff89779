//! Wiring: settings in, a bound and ready server out.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::auth::OnboardingAuth;
use crate::ca::CertificateAuthority;
use crate::config::{ConfigError, FallbackPolicy, Settings};
use crate::fsutil;
use crate::store::{FallbackStore, MemoryStore, RedisConfig, RedisStore};
use crate::token::{MIN_SECRET_LEN, TokenService};

pub const JWT_SECRET_FILE: &str = "jwt.secret";

pub struct Application {
    port: u16,
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
        let certs_dir = &settings.ca.dir;
        std::fs::create_dir_all(certs_dir).with_context(|| {
            format!("cannot create the certs directory {}", certs_dir.display())
        })?;
        let ca = CertificateAuthority::load_or_init(&settings.ca).context("loading the CA")?;
        let tokens = TokenService::new(
            &jwt_secret(&settings)?,
            &settings.tokens.issuer,
            &settings.tokens.audience,
            settings.tokens.ttl(),
        );
        let onboarding = OnboardingAuth::from_settings(&settings.onboarding, certs_dir)?;

        let memory = Arc::new(MemoryStore::new());
        let mut tasks = vec![memory.spawn_sweeper(Duration::from_secs_f64(
            settings.memory.sweep_interval_seconds,
        ))];
        let redis = if settings.redis.enabled {
            let (redis, redis_tasks) =
                RedisStore::connect(RedisConfig::from_settings(&settings.redis)?)
                    .await
                    .map_err(|e| ConfigError::key("redis.url", e))?;
            tasks.extend(redis_tasks);
            Some(redis)
        } else {
            None
        };
        let store = Arc::new(FallbackStore::new(redis, memory, settings.redis.fallback));

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (server.host / server.port)",
                    settings.server.host, settings.server.port
                )
            })?;
        let address = listener.local_addr()?;

        if onboarding.is_open() {
            tracing::warn!(
                "ONBOARDING IS OPEN: anyone who can reach this server can get a device \
                 certificate. Set onboarding.mode = \"key\" (ONBOARDING_MODE=key) for production."
            );
        }
        if settings.redis.enabled && settings.redis.fallback == FallbackPolicy::Memory {
            tracing::info!(
                "redis fallback is memory: tokens issued during an outage live only in this instance"
            );
        }
        tracing::info!(
            %address,
            storage = store.mode().as_str(),
            ca = ca.subject(),
            token_ttl_seconds = settings.tokens.ttl_seconds,
            "provisiond listening"
        );

        let state = web::Data::new(AppState {
            store,
            tokens,
            ca,
            onboarding,
            started: Instant::now(),
            body_limit: settings.server.body_limit_bytes,
        });
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(api::log_requests))
                .configure(api::routes)
        })
        .workers(workers)
        .shutdown_timeout(settings.server.shutdown_timeout_seconds)
        .listen(listener)?
        .run();

        Ok(Self {
            port: address.port(),
            server,
            background: BackgroundTasks(tasks),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere (tests, signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let _background = self.background;
        self.server.await
    }
}

/// The configured secret, or the one kept in `<certs>/jwt.secret` (made on first start),
/// so that a restart, or another instance sharing `certs/`, accepts the same tokens.
fn jwt_secret(settings: &Settings) -> Result<crate::config::Secret, ConfigError> {
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
            crate::config::Secret::new(secret)
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
