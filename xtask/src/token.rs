//! `cargo xtask token <user-id> [--name ..] [--ttl ..]`

use std::time::Duration;

use parley_shared::auth::{Claims, DEV_SECRET, issue_hs256};
use parley_shared::ids::UserId;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The user's id (a UUID); it becomes the token's `sub`.
    pub user_id: UserId,
    /// Display name claim.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. `15m`, `24h`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// The secret the local stack verifies with: `PARLEY_JWT_SECRET` if set, else the dev default.
pub fn secret() -> String {
    std::env::var("PARLEY_JWT_SECRET").unwrap_or_else(|_| DEV_SECRET.into())
}

pub fn issue(user: UserId, name: Option<String>, ttl: Duration) -> String {
    issue_hs256(&secret(), &Claims::for_user(user, name, ttl))
}

pub fn print(args: &TokenArgs) -> anyhow::Result<()> {
    println!("{}", issue(args.user_id, args.name.clone(), args.ttl));
    Ok(())
}
