//! Real browser calls: Debian's headless Chromium (driven by playwright-core) and Firefox ESR
//! (driven by puppeteer-core over WebDriver BiDi) fetch ICE servers from the credential API
//! and complete relay-only data channels between two RTCPeerConnections. Chromium: through any
//! of the three relays the API ranks when given all three (which pair ICE nominates among them
//! is Chromium's choice), and through the top-ranked one when the app asks for one relay.
//! Firefox: through the compact answer, and over TURN/TCP alone. Both, given only the anycast
//! URL, follow the relay's 300 Try Alternate to a unicast relay, over UDP and over TCP. Each
//! first measures what one RTCPeerConnection costs the relays: allocations with every URL of
//! three relays (the answer before) and with the compact answer.
//!
//! The service runs in a network namespace ("server") with 198.18.x addresses on its `lo`:
//! Chromium refuses to follow a redirect to a loopback address. The browser runs in a second
//! namespace ("client", 10.0.0.2) routed to it, so it reaches every relay from one source
//! address, as a real client does, and sees no interface of the host.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use geoturn_tests::http::{metric, request};
use geoturn_tests::netns::{NetNs, veth};
use geoturn_tests::process::{ChildGuard, geoturn_bin, require_tool};
use serde_json::Value;

const SECRET: &str = "browser-call-secret-0123456789abcdef";
const APP_KEY: &str = "browser-app-key-0123456789";
const API: &str = "198.18.0.2:8080";
/// A second API over the same relays, answering as every version before the compact answer:
/// every URL of three relays.
const API_ALL: &str = "198.18.0.3:8080";
const ANYCAST: &str = "198.18.0.9:3478";

fn browser_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (CI does)"
    );
    dir
}

fn wait_for(within: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `node browser.mjs PAGE` in the client namespace: `page` (a file of tests/browser) evaluated
/// in `browser` (`chromium` or `firefox`) on the API at `api`, with the app's key, for a client
/// placed in Frankfurt.
fn page_script(client: &NetNs, browser: &str, page: &str, api: &str) -> std::process::Command {
    let mut cmd = client.command("node");
    cmd.arg(browser_dir().join("browser.mjs"))
        .arg(page)
        .env("BROWSER", browser)
        .env("GEOTURN_API_URL", format!("http://{api}"))
        .env("GEOTURN_APP_KEY", APP_KEY)
        .env("GEOTURN_CLIENT_IP", "192.0.2.10")
        .stderr(Stdio::inherit());
    cmd
}

/// One call in Chromium from the client namespace with `count` relays from the API;
/// `only_urls` replaces the API's relays with these URLs.
fn call(client: &NetNs, count: usize, only_urls: Option<&str>) -> Value {
    call_in(client, "chromium", count, only_urls)
}

/// One call in `browser` (`chromium` or `firefox`), as [`call`].
fn call_in(client: &NetNs, browser: &str, count: usize, only_urls: Option<&str>) -> Value {
    try_call(client, browser, count, only_urls, &[])
        .unwrap_or_else(|status| panic!("{browser}: the call failed ({status})"))
}

/// One call in `browser` with more environment for the script (`HOME` for Chromium's
/// certificate database, `FIREFOX_PROFILE`, `GEOTURN_OPEN_TIMEOUT_MS`); the script's exit status
/// when it fails.
fn try_call(
    client: &NetNs,
    browser: &str,
    count: usize,
    only_urls: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Value, std::process::ExitStatus> {
    let mut cmd = page_script(client, browser, "call-page.js", API);
    cmd.env("GEOTURN_COUNT", count.to_string());
    if let Some(urls) = only_urls {
        cmd.env("GEOTURN_ONLY_URLS", urls);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(out.status);
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// The allocations created on the three relays, once their counters have settled above
/// `at_least` (workers publish every 500 ms; a browser's allocations arrive over a second).
fn allocations_created(ns: &NetNs, at_least: f64) -> f64 {
    let read = || -> f64 {
        (0..3)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 9641 + i).parse().unwrap();
                let page = ns
                    .enter(move || request(addr, "GET", "/metrics", &[], ""))
                    .unwrap()
                    .body;
                metric(&page, "geoturn_allocations_created_total", "").unwrap()
            })
            .sum()
    };
    let t0 = Instant::now();
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(1_200));
        let now = read();
        if (now == last && now > at_least) || t0.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}

/// One RTCPeerConnection in `browser` (`chromium` or `firefox`) gathering relay candidates
/// with the answer of the API at `api`.
fn gather(client: &NetNs, browser: &str, api: &str) -> Value {
    let out = page_script(client, browser, "gather-page.js", api)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{browser}: gathering failed ({})",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The service in its namespace (Redis, three relays, two APIs) and the client namespace.
struct Service {
    ns: NetNs,
    client: NetNs,
    _processes: Vec<ChildGuard>,
    _hosts: Option<NetnsEtc>,
}

/// `/etc/netns/NAME/`: files `ip netns exec NAME` mounts over `/etc` (here `hosts`, so the
/// browsers resolve the relay's name); removed on drop.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn hosts(ns: &NetNs, lines: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), lines).unwrap();
        Self(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the service and waits until both APIs see the three relays.
fn service() -> Service {
    service_with(None)
}

/// The relay name `turns:` URLs carry in [`service_with`]'s TLS setup.
const TLS_NAME: &str = "eu-1.relays.test";

/// As [`service`]; with `tls`, eu-1 is also named [`TLS_NAME`] (resolved in the client
/// namespace through its own hosts file) and serves TLS on 198.18.1.1:443 with `tls`'s
/// certificate.
fn service_with(tls: Option<&geoturn_tests::tls::TestPki>) -> Service {
    require_tool("node", "apt-get install -y nodejs npm");
    require_tool("redis-server", "apt-get install -y redis-server");
    browser_dir();
    let ns = NetNs::new("srv");
    let client = NetNs::new("cli");
    let hosts = tls.map(|_| {
        NetnsEtc::hosts(
            &client,
            &format!("127.0.0.1 localhost\n198.18.1.1 {TLS_NAME}\n"),
        )
    });
    veth(&ns, "to-cli", "10.0.0.1/24", &client, "eth0", "10.0.0.2/24");
    client.ip(&["route", "add", "198.18.0.0/15", "via", "10.0.0.1"]);
    for ip in [
        "198.18.0.2",
        "198.18.0.3",
        "198.18.0.9",
        "198.18.1.1",
        "198.18.1.2",
        "198.18.2.1",
    ] {
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let dir = geoturn_tests::temp_dir("browser-call");
    let geo = geoturn_tests::geo::write_city_db(&dir, &[("192.0.2.0/24", 50.11, 8.68)]);

    let quiet = |mut c: std::process::Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
        ChildGuard::spawn(&mut c).unwrap()
    };
    let mut redis_cmd = ns.command("redis-server");
    redis_cmd.args([
        "--port",
        "6390",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let _redis = quiet(redis_cmd);
    ns.enter(|| {
        wait_for(Duration::from_secs(5), "redis", || {
            TcpStream::connect("127.0.0.1:6390").is_ok()
        })
    });
    let mut relays = Vec::new();
    for (i, (id, region, ip, lat, lon, extra)) in [
        (
            "eu-1",
            "eu-central",
            "198.18.1.1",
            50.1,
            8.7,
            match tls {
                None => vec!["--anycast-listen".to_owned(), ANYCAST.to_owned()],
                Some(pki) => vec![
                    "--anycast-listen".to_owned(),
                    ANYCAST.to_owned(),
                    "--public-host".to_owned(),
                    TLS_NAME.to_owned(),
                    "--tls-listen".to_owned(),
                    "198.18.1.1:443".to_owned(),
                    "--tls-cert".to_owned(),
                    pki.cert_path.display().to_string(),
                    "--tls-key".to_owned(),
                    pki.key_path.display().to_string(),
                ],
            },
        ),
        ("eu-2", "eu-central", "198.18.1.2", 50.1, 8.7, Vec::new()),
        ("us-1", "us-east", "198.18.2.1", 39.0, -77.5, Vec::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = ns.command(geoturn_bin());
        c.args(["relay", "--listen", &format!("{ip}:3478")])
            .args(["--http", &format!("127.0.0.1:{}", 9641 + i)])
            .args(["--node-id", id, "--region", region])
            .args(["--lat", &lat.to_string(), "--lon", &lon.to_string()])
            .args(["--registry", "redis://127.0.0.1:6390", "--heartbeat", "0.3"])
            .args(["--allow-peer", "198.18.0.0/15", "--drain-timeout", "1"])
            .args(extra)
            .env("GEOTURN_AUTH_SECRETS", SECRET);
        relays.push(quiet(c));
    }
    let mut api = ns.command(geoturn_bin());
    api.args([
        "api",
        "--listen",
        API,
        "--registry",
        "redis://127.0.0.1:6390",
    ])
    .arg("--geoip")
    .arg(&geo)
    .args(["--heartbeat", "0.3", "--refresh-ms", "200"])
    .env("GEOTURN_AUTH_SECRETS", SECRET)
    .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"));
    let _api = quiet(api);
    let mut api_all = ns.command(geoturn_bin());
    api_all
        .args(["api", "--listen", API_ALL])
        .args(["--registry", "redis://127.0.0.1:6390"])
        .arg("--geoip")
        .arg(&geo)
        .args(["--heartbeat", "0.3", "--refresh-ms", "200"])
        .args(["--answer-urls", "all", "--relays-per-answer", "3"])
        .env("GEOTURN_AUTH_SECRETS", SECRET)
        .env("GEOTURN_API_KEYS", format!("app:{APP_KEY}"));
    let _api_all = quiet(api_all);
    let api_addr: SocketAddr = API.parse().unwrap();
    for addr in [api_addr, API_ALL.parse().unwrap()] {
        ns.enter(move || {
            wait_for(
                Duration::from_secs(15),
                "three relays behind the API",
                || {
                    request(addr, "GET", "/readyz", &[], "").is_ok_and(|r| {
                        serde_json::from_str::<Value>(&r.body).is_ok_and(|v| v["relays"] == 3)
                    })
                },
            )
        });
    }
    relays.extend([_redis, _api, _api_all]);
    Service {
        ns,
        client,
        _processes: relays,
        _hosts: hosts,
    }
}

/// What one RTCPeerConnection costs the relays: allocations made while it gathers, with every
/// URL of three relays (the answer before) and with the compact answer (now). Returns
/// `[(TURN URLs, allocations)]` for the two answers, in that order.
fn allocation_costs(service: &Service, browser: &str) -> Vec<(usize, f64)> {
    let mut costs = Vec::new();
    for api in [API_ALL, API] {
        let before = allocations_created(&service.ns, 0.0);
        let g = gather(&service.client, browser, api);
        let made = allocations_created(&service.ns, before) - before;
        let urls = g["turnUrls"].as_array().unwrap().len();
        eprintln!(
            "{browser}: one RTCPeerConnection, {api}: {made} allocations for {urls} TURN URLs: {g}"
        );
        costs.push((urls, made));
    }
    println!(
        "allocations per RTCPeerConnection ({browser}, relay only): {} with every URL of three \
         relays ({} URLs), {} with the compact answer ({} URLs)",
        costs[0].1, costs[0].0, costs[1].1, costs[1].0
    );
    assert_eq!((costs[0].0, costs[1].0), (6, 3), "TURN URLs per answer");
    assert!(
        costs[1].1 >= 1.0 && costs[1].1 < costs[0].1,
        "{browser}: the compact answer costs {} allocations, every URL {}",
        costs[1].1,
        costs[0].1
    );
    costs
}

/// The browser client `/v1/client.js`, checked in `browser` by client-check.js: an answer and
/// its ranking, credentials refreshed into a live peer connection, a 429 retried after its
/// Retry-After, a refused key reported at once with the API's code.
fn client_module(client: &NetNs, browser: &str) {
    let out = page_script(client, browser, "client-check.js", API)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{browser}: client-check.js failed ({})",
        out.status
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{browser}: /v1/client.js: {r}");
    assert_ne!(
        r["firstUser"], r["secondUser"],
        "{browser}: not refreshed: {r}"
    );
    let ranking = r["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 2, "{browser}: {r}");
    assert!(
        ranking[0][0]
            .as_str()
            .is_some_and(|u| u.starts_with("turn:198.18.1.")),
        "{browser}: the best relay is not eu-central's: {r}"
    );
    assert_eq!(r["calls"], 2, "{browser}: {r}");
    assert!(
        r["waitedMs"].as_u64().unwrap() >= 900,
        "{browser}: no wait for Retry-After: {r}"
    );
    assert!(r["retriedServers"].as_u64().unwrap() >= 2, "{browser}: {r}");
    assert_eq!(
        (
            &r["refused"]["status"],
            &r["refused"]["code"],
            &r["refusedCalls"]
        ),
        (
            &Value::from(401),
            &Value::from("unknown_api_key"),
            &Value::from(1)
        ),
        "{browser}: {r}"
    );
}

#[test]
fn chromium_calls_through_the_top_ranked_relay_and_follows_anycast_redirects() {
    require_tool(
        "chromium",
        "apt-get install -y --no-install-recommends chromium",
    );
    let service = service();
    let (ns, client) = (&service.ns, &service.client);
    allocation_costs(&service, "chromium");
    client_module(client, "chromium");

    // 1. The API's answer, in a browser: the caller (placed in Frankfurt) gets the two
    // eu-central relays first, then us-east, and both ends talk over relay candidates of them.
    let all = call(client, 3, None);
    eprintln!("browser call, three relays: {all}");
    let ranked: Vec<&str> = all["rankedUrls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        ranked,
        [
            "turn:198.18.1.1:3478?transport=udp",
            "turn:198.18.1.2:3478?transport=udp",
            "turn:198.18.2.1:3478?transport=udp"
        ],
        "{all}"
    );
    for side in ["a", "b"] {
        assert_eq!(all[side]["localType"], "relay", "{all}");
        assert_eq!(all[side]["remoteType"], "relay", "{all}");
        let addr = all[side]["localAddress"].as_str().unwrap();
        assert!(
            ranked.iter().any(|u| u.contains(&format!(":{addr}:"))),
            "relayed on {addr}, not a ranked relay: {all}"
        );
    }
    assert_eq!(all["echo"], "echo:hello through the relay");
    // Asked for one relay, the app gets the top-ranked one, and the call goes through it. The
    // first call's allocations now load eu-1, so that may be eu-2: it is one of the region's.
    let top = call(client, 1, None);
    eprintln!("browser call, one relay: {top}");
    let top_url = top["rankedUrls"][0].as_str().unwrap();
    let top_ip = ["198.18.1.1", "198.18.1.2"]
        .into_iter()
        .find(|ip| top_url == format!("turn:{ip}:3478?transport=udp"))
        .unwrap_or_else(|| panic!("top relay {top_url} is not in eu-central: {top}"));
    for side in ["a", "b"] {
        assert_eq!(top[side]["localType"], "relay", "{top}");
        assert_eq!(top[side]["localAddress"], top_ip, "{top}");
        assert_eq!(top[side]["remoteAddress"], top_ip, "{top}");
    }
    assert_eq!(top["echo"], "echo:hello through the relay");

    // 2. Only the anycast URL: Chromium follows the 300 to a unicast relay of the region, over
    // UDP and over TCP.
    for transport in ["udp", "tcp"] {
        let urls = format!("[\"turn:{ANYCAST}?transport={transport}\"]");
        let r = call(client, 1, Some(&urls));
        eprintln!("anycast {transport}: {r}");
        for side in ["a", "b"] {
            assert_eq!(r[side]["localType"], "relay", "{r}");
            let addr = r[side]["localAddress"].as_str().unwrap();
            assert!(
                addr == "198.18.1.1" || addr == "198.18.1.2",
                "{transport}: relayed on {addr}, not a unicast relay"
            );
        }
        assert_eq!(r["got"], "hello through the relay");
    }
    // Two peer connections × two transports; workers publish counters every 500 ms.
    let t0 = Instant::now();
    let redirects = loop {
        let metrics = ns
            .enter(|| {
                request(
                    "127.0.0.1:9641".parse().unwrap(),
                    "GET",
                    "/metrics",
                    &[],
                    "",
                )
            })
            .unwrap()
            .body;
        let n = metric(&metrics, "geoturn_redirects_total", "reason=\"anycast\"").unwrap();
        if n >= 4.0 || t0.elapsed() > Duration::from_secs(3) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("eu-1 answered {redirects} anycast first contacts with 300");
    assert!(redirects >= 4.0, "{redirects}");
}

/// Firefox ESR (its own ICE and TURN stack, nICEr) with the same service: what one peer
/// connection costs the relays with each answer, a relay-only call through the compact answer,
/// one over TURN/TCP alone, and the anycast address's 300 Try Alternate followed over UDP and
/// TCP.
#[test]
fn firefox_calls_through_the_compact_answer_over_udp_and_tcp_and_follows_anycast_redirects() {
    require_tool(
        "firefox-esr",
        "apt-get install -y --no-install-recommends firefox-esr",
    );
    let service = service();
    let client = &service.client;
    allocation_costs(&service, "firefox");
    client_module(client, "firefox");
    let relayed = |r: &Value, what: &str| {
        for side in ["a", "b"] {
            assert_eq!(r[side]["localType"], "relay", "{what}: {r}");
            assert_eq!(r[side]["remoteType"], "relay", "{what}: {r}");
        }
        assert_eq!(r["echo"], "echo:hello through the relay", "{what}: {r}");
    };
    let compact = call_in(client, "firefox", 2, None);
    eprintln!("firefox, compact answer: {compact}");
    relayed(&compact, "compact answer");
    let tcp = call_in(
        client,
        "firefox",
        1,
        Some(r#"["turn:198.18.1.1:3478?transport=tcp"]"#),
    );
    eprintln!("firefox, TURN over TCP: {tcp}");
    relayed(&tcp, "TURN over TCP");
    for side in ["a", "b"] {
        assert_eq!(tcp[side]["localAddress"], "198.18.1.1", "{tcp}");
    }
    // Firefox follows the anycast address's 300 Try Alternate to a unicast relay, over UDP and
    // over TCP, as Chromium does: the relayed addresses are the unicast relay's.
    for transport in ["udp", "tcp"] {
        let urls = format!("[\"turn:{ANYCAST}?transport={transport}\"]");
        let r = call_in(client, "firefox", 1, Some(&urls));
        eprintln!("firefox, anycast only over {transport}: {r}");
        relayed(&r, "anycast");
        for side in ["a", "b"] {
            let addr = r[side]["localAddress"].as_str().unwrap();
            assert!(
                addr == "198.18.1.1" || addr == "198.18.1.2",
                "{transport}: relayed on {addr}, not a unicast relay"
            );
        }
    }
}

/// `turns:` with a verified certificate: eu-1 is named and serves TLS on 443 with a
/// certificate from a test CA. Each browser trusts that CA in its own certificate database
/// (Chromium: `$HOME/.pki/nssdb`; Firefox: its profile), with no flag that skips verification,
/// and completes a relay-only call over `turns:` alone. Without the CA trusted, neither gets a
/// relayed path: the certificate is checked.
#[test]
fn turns_calls_verify_the_certificate_in_chromium_and_firefox() {
    require_tool(
        "chromium",
        "apt-get install -y --no-install-recommends chromium",
    );
    require_tool(
        "firefox-esr",
        "apt-get install -y --no-install-recommends firefox-esr",
    );
    let dir = geoturn_tests::temp_dir("turns");
    let pki = geoturn_tests::tls::write_ca_signed(&dir, &[TLS_NAME]);
    let service = service_with(Some(&pki));
    let client = &service.client;
    let turns = format!("[\"turns:{TLS_NAME}:443?transport=tcp\"]");
    let home = dir.join("home");
    geoturn_tests::tls::trust_ca_in_nss_db(&home.join(".pki/nssdb"), &pki.ca_path);
    let profile = dir.join("firefox-profile");
    geoturn_tests::tls::trust_ca_in_nss_db(&profile, &pki.ca_path);
    let home = home.display().to_string();
    let profile = profile.display().to_string();
    for (browser, env) in [
        ("chromium", [("HOME", home.as_str())]),
        ("firefox", [("FIREFOX_PROFILE", profile.as_str())]),
    ] {
        let r = try_call(client, browser, 1, Some(&turns), &env)
            .unwrap_or_else(|status| panic!("{browser}: no call over turns: ({status})"));
        eprintln!("{browser}, turns: with a trusted CA: {r}");
        for side in ["a", "b"] {
            assert_eq!(r[side]["localType"], "relay", "{browser}: {r}");
            assert_eq!(r[side]["localAddress"], "198.18.1.1", "{browser}: {r}");
        }
        assert_eq!(r["echo"], "echo:hello through the relay", "{browser}: {r}");
    }
    // The same without the CA: a fresh HOME and profile.
    let (bare_home, bare_profile) = (dir.join("bare-home"), dir.join("bare-profile"));
    std::fs::create_dir_all(&bare_home).unwrap();
    std::fs::create_dir_all(&bare_profile).unwrap();
    let (bare_home, bare_profile) = (
        bare_home.display().to_string(),
        bare_profile.display().to_string(),
    );
    for (browser, env) in [
        (
            "chromium",
            [
                ("HOME", bare_home.as_str()),
                ("GEOTURN_OPEN_TIMEOUT_MS", "8000"),
            ],
        ),
        (
            "firefox",
            [
                ("FIREFOX_PROFILE", bare_profile.as_str()),
                ("GEOTURN_OPEN_TIMEOUT_MS", "8000"),
            ],
        ),
    ] {
        let r = try_call(client, browser, 1, Some(&turns), &env);
        assert!(
            r.is_err(),
            "{browser} relayed over turns: with an untrusted certificate: {r:?}"
        );
    }
}
