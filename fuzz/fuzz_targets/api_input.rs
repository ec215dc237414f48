//! What the credential API parses from a caller, none of which may panic: the Authorization
//! header (API keys, and JWTs verified with an HS256 key: header, claims, signature), a
//! JSON body of `/v1/ice-servers`, and `X-Forwarded-For` chains against trusted proxies.
//! The first byte picks the parser; the rest is its input.

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use geoturn_api::auth::{AuthConfig, Authenticator};
use geoturn_api::client_ip::client_ip;
use geoturn_api::routes::credentials::IceParams;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = serde_json::json!({
            "api_keys": [{
                "name": "app",
                "sha256": geoturn_api::auth::hash_api_key("app-key-0123456789abcdef"),
            }],
            "jwt_keys": [{
                "id": "k1",
                "algorithm": "HS256",
                "secret": "fuzz-jwt-secret-0123456789abcdef0123",
                "issuer": "https://issuer.example",
                "audience": "geoturn",
            }],
        });
        let config: AuthConfig = serde_json::from_value(config).expect("a valid auth config");
        Authenticator::from_config(&config).expect("the auth config loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => {
            let _ = authenticator().authenticate(Some(&text), NOW);
        }
        1 => {
            let _ = authenticator().authenticate(Some(&format!("Bearer {text}")), NOW);
        }
        2 => {
            let _ = serde_json::from_slice::<IceParams>(rest);
        }
        _ => {
            let trusted = ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
            let hops: Vec<&str> = text.split(',').collect();
            let peer: IpAddr = "10.1.2.3".parse().unwrap();
            let _ = client_ip(peer, &hops, &trusted);
        }
    }
});
