//! A client on the far side of a real network link that a test can cut: a network namespace
//! joined to this one by a veth pair. Cutting takes the link down, so every packet either way
//! is dropped: no FIN, no RST, exactly what a peer that lost its network looks like.
//!
//! Creating namespaces and links needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), as the rest of the
//! fault tests' set-up does.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};

/// The namespace and its link, removed when dropped.
#[derive(Debug)]
pub struct FarSide {
    namespace: String,
    far_link: String,
    /// This side's address on the link: where a server listening on all addresses is reached.
    pub near_address: Ipv4Addr,
}

impl FarSide {
    /// A namespace with one link to this one (`10.213.<n>.2` there, `10.213.<n>.1` here).
    pub fn create() -> Self {
        let id = std::process::id() % 10_000;
        let subnet = (std::process::id() % 250) as u8 + 1;
        let namespace = format!("parley-far-{id}");
        let (near_link, far_link) = (format!("pfar{id}n"), format!("pfar{id}f"));
        let near_address = Ipv4Addr::new(10, 213, subnet, 1);
        // Left over from an earlier run with the same process id: start clean.
        let _ = Command::new("ip").args(["netns", "delete", &namespace]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &namespace]);
        let far_side = Self { namespace, far_link, near_address };
        let namespace = far_side.namespace.as_str();
        ip(&["link", "add", &near_link, "type", "veth", "peer", "name", &far_side.far_link, "netns", namespace]);
        ip(&["addr", "add", &format!("{near_address}/30"), "dev", &near_link]);
        ip(&["link", "set", &near_link, "up"]);
        let far_address = format!("10.213.{subnet}.2/30");
        ip(&["-n", namespace, "addr", "add", &far_address, "dev", &far_side.far_link]);
        ip(&["-n", namespace, "link", "set", &far_side.far_link, "up"]);
        far_side
    }

    /// A TCP connection to `port` on this side, opened from inside the namespace: the socket
    /// belongs to the namespace for its whole life, whichever thread uses it afterwards.
    pub fn connect(&self, port: u16) -> tokio::net::TcpStream {
        let namespace = File::open(format!("/var/run/netns/{}", self.namespace)).expect("namespace handle");
        let server = SocketAddrV4::new(self.near_address, port);
        let stream = std::thread::spawn(move || {
            setns(namespace, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            std::net::TcpStream::connect(server)
        })
        .join()
        .expect("connecting thread")
        .unwrap_or_else(|error| panic!("TCP connection from the namespace to {server}: {error}"));
        stream.set_nonblocking(true).expect("non-blocking");
        tokio::net::TcpStream::from_std(stream).expect("tokio stream")
    }

    /// Takes the link down: from now on nothing crosses it, in either direction.
    pub fn cut(&self) {
        ip(&["-n", &self.namespace, "link", "set", &self.far_link, "down"]);
    }
}

impl Drop for FarSide {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "delete", &self.namespace]).status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status();
    assert!(
        status.is_ok_and(|status| status.success()),
        "`ip {}` failed: tests of a cut network link need root (CAP_NET_ADMIN) and iproute2; \
         run the tests as root, e.g. in the project's container",
        args.join(" ")
    );
}
