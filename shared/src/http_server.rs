//! The accept loop of both HTTP servers (the credential API and the relay's ops port), in
//! place of `axum::serve`, which sets no timer (so hyper enforces no header timeout) and
//! accepts without bound: a slowloris client could hold connections forever, and a flood of
//! them every descriptor.
//!
//! Here every connection counts against a cap (over it, new connections are closed at once),
//! and must send a request's headers within [`Limits::header_timeout`]; hyper starts that
//! timer again whenever the connection goes idle after a response, so it is the keep-alive
//! idle timeout too. A response in progress (a server-sent event stream, say) is not cut.
//! Each request carries `ConnectInfo<SocketAddr>` as with
//! `into_make_service_with_connect_info`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// Bounds on one HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Time to send a request's headers, from accept or from the end of the last response.
    pub header_timeout: Duration,
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` within `limits` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let (_never, stop) = watch::channel(false);
    serve_until(listener, app, limits, stop).await;
}

/// Serves `app` on `listener` within `limits` until `stop` turns true, then shuts down
/// gracefully: no new connection is accepted (the listener closes), requests in progress are
/// answered, idle keep-alive connections close, and a connection ends once its response is
/// out. Returns when every connection has ended; a response that never ends (an event stream
/// must end itself on the same signal) holds it, so the caller bounds the wait.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused_logged = false;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            if !refused_logged {
                tracing::warn!(
                    max = limits.max_connections,
                    "HTTP connection cap reached: closing new connections until some close"
                );
                refused_logged = true;
            }
            drop(stream);
            continue;
        };
        refused_logged = false;
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _place = place;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopped(&mut stop) => {
                    // Answers the request in progress, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    // Every connection holds a place until it ends: all places back means all ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = places.acquire_many(all).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    use axum::routing::get;

    use super::*;

    async fn start(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    /// Reads until the server closes; the bytes read, or `None` if still open at `wait`.
    fn read_to_close(stream: &mut std::net::TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Some(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
                Err(_) => return None,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_with_connect_info_and_closes_slow_headers() {
        let addr = start(Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(500),
        })
        .await;
        tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let local = c.local_addr().unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let got = read_to_close(&mut c, Duration::from_secs(5)).unwrap();
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.ends_with(&local.to_string()), "{text}");

            // Headers never finished: closed after the timeout, not held.
            let mut slow = std::net::TcpStream::connect(addr).unwrap();
            slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            let started = std::time::Instant::now();
            assert!(read_to_close(&mut slow, Duration::from_secs(5)).is_some());
            assert!(started.elapsed() < Duration::from_secs(4));

            // An idle keep-alive connection is closed too.
            let mut idle = std::net::TcpStream::connect(addr).unwrap();
            idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert!(read_to_close(&mut idle, Duration::from_secs(5)).is_some());
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_cap_are_closed_at_once() {
        let addr = start(Limits {
            max_connections: 2,
            header_timeout: Duration::from_secs(30),
        })
        .await;
        tokio::task::spawn_blocking(move || {
            let held: Vec<_> = (0..2)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // Give the server time to accept both before the third arrives.
            std::thread::sleep(Duration::from_millis(200));
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let got = read_to_close(&mut third, Duration::from_secs(5));
            assert_eq!(got, Some(Vec::new()), "the third got an answer");
            drop(held);
            // Places come back.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let got = read_to_close(&mut c, Duration::from_secs(5)).unwrap_or_default();
                if got.starts_with(b"HTTP/1.1 200") {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no place came back");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_answers_requests_in_progress_and_refuses_new_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "finished"
            }),
        );
        let (stop_tx, stop) = watch::channel(false);
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(30),
        };
        let server = tokio::spawn(serve_until(listener, app, limits, stop));
        let in_progress = tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            read_to_close(&mut c, Duration::from_secs(5))
        });
        // An idle keep-alive connection, open before the stop.
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(true).unwrap();
        // The request in progress is answered, and its connection then closed.
        let got = in_progress.await.unwrap().expect("closed after the answer");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("finished"),
            "{text}"
        );
        // The idle one is closed without an answer; the server returns; nothing new connects.
        let got =
            tokio::task::spawn_blocking(move || read_to_close(&mut idle, Duration::from_secs(5)))
                .await
                .unwrap();
        assert_eq!(got, Some(Vec::new()));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve_until returned")
            .unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still accepting"
        );
    }
}
