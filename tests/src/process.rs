//! Child processes for tests: the `geoturn` binary and coturn's tools, each stopped by PID
//! when dropped and never left running past its owner.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The `geoturn` binary of this workspace: `GEOTURN_BIN`, or `target/<profile>/geoturn` beside
/// the test executable. `cargo test --workspace` builds it before running any test, because
/// the root package has an integration test (`tests/cli.rs`).
pub fn geoturn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GEOTURN_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout");
    let bin = profile_dir.join(format!("geoturn{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run `cargo test --workspace` (it builds the binary) or set GEOTURN_BIN",
        bin.display()
    );
    bin
}

/// Fails with a clear message when an external tool is missing.
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is required for this test: {install_hint}"))
}

/// A child process killed (SIGKILL, by its PID) when dropped unless it already exited.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        cmd.spawn().map(Self)
    }

    /// Sends SIGTERM to the child.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.0.id() as libc::pid_t;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with the PID of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits up to `timeout` for the child to exit; its status if it did.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
