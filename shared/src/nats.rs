//! Connecting to NATS: the servers, how to authenticate, TLS, and how soon a server that stopped
//! answering is given up for another. The variables are the ones the `nats` CLI reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::{ConnectOptions, ServerAddr};
use clap::Args;

#[derive(Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated. `nats://user:password@host` authenticates with a
    /// user and password, `nats://token@host` with a token; `tls://` requires TLS.
    #[arg(long = "nats-url", env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub url: String,
    /// User name (with `NATS_PASSWORD`).
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// A file holding an NKey seed (`SU…`).
    #[arg(long = "nats-nkey", env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// A credentials file (user JWT and NKey seed, as `nsc` writes it).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// PEM file of the certificate authorities that sign the server's certificate.
    #[arg(long = "nats-ca", env = "NATS_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate (with `NATS_KEY`), for servers that verify clients.
    #[arg(long = "nats-cert", env = "NATS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long = "nats-key", env = "NATS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// How often the client pings a server it has heard nothing from; after three unanswered
    /// pings the link counts as dead and the client moves to another server.
    #[arg(long = "nats-ping-interval", env = "NATS_PING_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// How long a server may take to greet a new connection before the client tries the next
    /// (a frozen server accepts TCP connections and then says nothing).
    #[arg(long = "nats-connect-timeout", env = "NATS_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

// By hand: a URL may hold a password.
impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs").field("ping_interval", &self.ping_interval).finish_non_exhaustive()
    }
}

/// A setting that must never be printed: `Debug` shows it as `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// How the client proves who it is: at most one way.
#[derive(Debug, PartialEq, Eq)]
enum Auth {
    Anonymous,
    UserPassword { user: String, password: String },
    Token(String),
    NKeyFile(PathBuf),
    CredsFile(PathBuf),
}

impl NatsArgs {
    /// The configured servers without credentials (async-nats ignores the ones in a URL, and a
    /// URL without them can be logged), and how to authenticate.
    fn servers_and_auth(&self) -> anyhow::Result<(Vec<ServerAddr>, Auth)> {
        let mut servers = Vec::new();
        let mut from_urls = Vec::new();
        for (position, server) in self.url.split(',').enumerate() {
            // The error never shows the URL: it may hold a password.
            let mut url = url::Url::parse(server.trim())
                .with_context(|| format!("NATS_URL: URL number {} is not a valid URL", position + 1))?;
            if !url.username().is_empty() {
                let decode = |part: &str| percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned();
                from_urls.push(match url.password() {
                    Some(password) => Auth::UserPassword { user: decode(url.username()), password: decode(password) },
                    None => Auth::Token(decode(url.username())),
                });
                // Cannot fail: the URL has a host, since it has a user.
                let _ = url.set_username("").and_then(|()| url.set_password(None));
            }
            servers.push(
                ServerAddr::from_url(url)
                    .with_context(|| format!("NATS_URL: URL number {} is not a NATS URL", position + 1))?,
            );
        }
        from_urls.dedup();
        let mut configured = from_urls;
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                configured.push(Auth::UserPassword { user: user.clone(), password: password.expose().to_owned() })
            }
            (None, None) => {}
            _ => anyhow::bail!("NATS_USER and NATS_PASSWORD go together"),
        }
        configured.extend(self.token.iter().map(|token| Auth::Token(token.expose().to_owned())));
        configured.extend(self.nkey.iter().map(|path| Auth::NKeyFile(path.clone())));
        configured.extend(self.creds.iter().map(|path| Auth::CredsFile(path.clone())));
        if configured.len() > 1 {
            anyhow::bail!(
                "NATS authentication is configured more than once: use one of the URL's credentials, \
                 NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY or NATS_CREDS"
            );
        }
        Ok((servers, configured.pop().unwrap_or(Auth::Anonymous)))
    }

    async fn options(&self, auth: Auth) -> anyhow::Result<ConnectOptions> {
        let options = ConnectOptions::new();
        let mut options = match auth {
            Auth::Anonymous => options,
            Auth::UserPassword { user, password } => options.user_and_password(user, password),
            Auth::Token(token) => options.token(token),
            Auth::NKeyFile(path) => {
                let seed = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the NKey seed file {} (NATS_NKEY)", path.display()))?;
                options.nkey(seed.trim().to_owned())
            }
            Auth::CredsFile(path) => options
                .credentials_file(&path)
                .await
                .with_context(|| format!("reading the credentials file {} (NATS_CREDS)", path.display()))?,
        };
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.ping_interval(self.ping_interval).connection_timeout(self.connect_timeout))
    }
}

/// A NATS client that keeps (re)connecting in the background, forever: a server started before
/// NATS, or one that loses it, reports not-ready on `/ready` instead of exiting. `name` is the
/// client's name on the server and its inbox prefix (`_INBOX.<name>.…`), so server permissions
/// can keep each service's replies to itself. `on_event` hears every connection event.
pub async fn connect(
    args: &NatsArgs,
    name: &str,
    on_event: impl Fn(async_nats::Event) + Send + Sync + 'static,
) -> anyhow::Result<async_nats::Client> {
    let (servers, auth) = args.servers_and_auth()?;
    let on_event = Arc::new(on_event);
    args.options(auth)
        .await?
        .name(name)
        .custom_inbox_prefix(format!("_INBOX.{name}"))
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let on_event = Arc::clone(&on_event);
            async move {
                on_event(event);
            }
        })
        .connect(servers)
        .await
        .context("connecting to NATS (NATS_URL)")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn args(flags: &[&str]) -> NatsArgs {
        Cli::try_parse_from(std::iter::once("test").chain(flags.iter().copied())).expect("valid flags").nats
    }

    #[test]
    fn credentials_in_urls_are_taken_out_of_them_and_decoded() {
        let parsed = args(&["--nats-url", "nats://api:p%40ss@a:4222, nats://api:p%40ss@b:4223"]);
        let (servers, auth) = parsed.servers_and_auth().expect("valid");
        assert_eq!(auth, Auth::UserPassword { user: "api".into(), password: "p@ss".into() });
        let urls: Vec<&str> = servers.iter().map(ServerAddr::as_url_str).collect();
        assert_eq!(urls, ["nats://a:4222", "nats://b:4223"]);
        let (_, auth) = args(&["--nats-url", "tls://s3cret@a"]).servers_and_auth().expect("valid");
        assert_eq!(auth, Auth::Token("s3cret".into()));
        let (_, auth) = args(&[]).servers_and_auth().expect("valid");
        assert_eq!(auth, Auth::Anonymous);
    }

    #[test]
    fn two_ways_to_authenticate_are_refused_and_no_error_shows_a_secret() {
        let twice = args(&["--nats-url", "nats://u:hunter2@a", "--nats-token", "t0ken"]);
        let error = twice.servers_and_auth().expect_err("two ways").to_string();
        assert!(error.contains("more than once"), "{error}");
        let error = args(&["--nats-user", "u"]).servers_and_auth().expect_err("no password").to_string();
        assert!(error.contains("go together"), "{error}");
        let error =
            format!("{:#}", args(&["--nats-url", "nats://u:hunter2@a, http//x"]).servers_and_auth().expect_err("bad"));
        assert!(error.contains("URL number 2") && !error.contains("hunter2"), "{error}");
        let debug = format!("{:?}", args(&["--nats-password", "hunter2", "--nats-user", "u"]));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
