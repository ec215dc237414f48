//! Compiles the eBPF fast path (`bpf/channel_relay.bpf.c`) with clang into OUT_DIR, where
//! `src/offload` embeds it. Without clang (or libbpf's headers) the relay still builds: this
//! prints a warning and leaves the `geoturn_offload` cfg unset, so the offload is compiled out
//! and `--offload on` refuses to start. No prebuilt object is ever committed.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/channel_relay.bpf.c";

fn main() {
    println!("cargo:rustc-check-cfg=cfg(geoturn_offload)");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=GEOTURN_CLANG");
    println!("cargo:rerun-if-env-changed=GEOTURN_NO_OFFLOAD");
    if std::env::var_os("GEOTURN_NO_OFFLOAD").is_some() {
        println!("cargo:warning=GEOTURN_NO_OFFLOAD is set: the eBPF offload is not built in");
        return;
    }
    // eBPF objects are only loadable on Linux.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let clang = std::env::var("GEOTURN_CLANG").unwrap_or_else(|_| "clang".into());
    let object = out_dir.join("channel_relay.bpf.o");
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the multiarch directory
    // of the build machine's architecture.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&object)
        .output();
    match result {
        Ok(out) if out.status.success() => {
            println!("cargo:rustc-cfg=geoturn_offload");
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or("no output");
            println!(
                "cargo:warning=the eBPF offload is not built in: {clang} failed on {SOURCE} \
                 ({first}); install clang and libbpf-dev to build it"
            );
        }
        Err(e) => println!(
            "cargo:warning=the eBPF offload is not built in: cannot run {clang} ({e}); install \
             clang and libbpf-dev to build it"
        ),
    }
}
