//! Installing PostgreSQL and nats-server when they are missing, with the system package manager
//! when we may, else printing the exact command.

use std::process::Command;

use parley_testkit::binaries::{nats_server, postgres_tool};

pub fn ensure_services() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("postgresql", postgres_tool("initdb").is_err() || postgres_tool("postgres").is_err()),
        ("nats-server", nats_server().is_err()),
    ]
    .into_iter()
    .filter_map(|(package, missing)| missing.then_some(package))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" and "));
    if has("apt-get") {
        let install =
            format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}", missing.join(" "));
        let runner = if nix::unistd::Uid::effective().is_root() {
            Some(vec!["sh", "-c"])
        } else if Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success()) {
            Some(vec!["sudo", "-n", "sh", "-c"])
        } else {
            None
        };
        match runner {
            Some(runner) => run(&runner, &install)?,
            None => anyhow::bail!("PostgreSQL/nats-server are missing; install them with:\n  sudo sh -c '{install}'"),
        }
    } else if has("brew") {
        let packages: Vec<&str> =
            missing.iter().map(|p| if *p == "postgresql" { "postgresql@16" } else { p }).collect();
        run(&["sh", "-c"], &format!("brew install {}", packages.join(" ")))?;
    } else {
        anyhow::bail!(
            "PostgreSQL/nats-server are missing and no known package manager was found: install {} \
             and make sure `pg_config` or `initdb` and `nats-server` are on the PATH",
            missing.join(" and ")
        );
    }
    postgres_tool("initdb")?;
    nats_server()?;
    Ok(())
}

fn has(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

fn run(prefix: &[&str], script: &str) -> anyhow::Result<()> {
    let status = Command::new(prefix[0]).args(&prefix[1..]).arg(script).status()?;
    anyhow::ensure!(status.success(), "`{script}` failed with {status}");
    Ok(())
}

/// Debian's Chromium (or any `chromium`/`chromium-browser` on the PATH), installed when missing.
pub fn ensure_chromium() -> anyhow::Result<std::path::PathBuf> {
    let find = || {
        ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
            let out = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok()?;
            out.status.success().then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    let install = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium";
    if has("apt-get") && nix::unistd::Uid::effective().is_root() {
        eprintln!("xtask: installing chromium");
        run(&["sh", "-c"], install)?;
    } else {
        anyhow::bail!("Chromium is missing; install it with:\n  sudo sh -c '{install}'");
    }
    find().ok_or_else(|| anyhow::anyhow!("chromium is still not on the PATH after installing it"))
}
