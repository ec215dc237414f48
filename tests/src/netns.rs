//! Network namespaces a test creates and removes itself (`ip netns`), joined by veth pairs:
//! sites, routers and clients on one machine, with routes the test can flip. Needs root and
//! iproute2; without them the test fails with that hint (it never skips).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Panics with a clear message unless this process may create namespaces.
pub fn require_netns() {
    let ip = crate::process::require_tool("ip", "apt-get install -y iproute2");
    // SAFETY-free check: geteuid via /proc is enough for a message.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    assert!(
        root,
        "network-namespace tests need root (CAP_NET_ADMIN) to run {}",
        ip.display()
    );
}

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates `gt<tag><pid>-<n>` with `lo` up.
    pub fn new(tag: &str) -> Self {
        require_netns();
        let name = format!(
            "gt{tag}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) {
        run(&["netns", "exec", &self.name, "sysctl", "-qw", setting]);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it creates live there and
    /// keep working from any thread afterwards.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            #[allow(unsafe_code)]
            // SAFETY: setns(2) on a namespace file we hold open; it changes only this thread,
            // which exists for this closure alone.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` with a veth pair: `a_if` with `a_cidr` in `a`, `b_if` with `b_cidr` in `b`,
/// both up. Interfaces are created directly inside the namespaces, so names never clash with
/// the host's.
pub fn veth(a: &NetNs, a_if: &str, a_cidr: &str, b: &NetNs, b_if: &str, b_cidr: &str) {
    run(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["addr", "add", a_cidr, "dev", a_if]);
    b.ip(&["addr", "add", b_cidr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
