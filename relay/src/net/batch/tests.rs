use super::*;

fn msg(to: &str, len: usize) -> Outgoing<'static> {
    static BYTES: [u8; 70_000] = [0; 70_000];
    Outgoing::new(to.parse().unwrap(), &BYTES[..len])
}

#[test]
fn runs_group_equal_datagrams_to_one_destination() {
    let a = "127.0.0.1:1000";
    let b = "127.0.0.1:2000";
    assert_eq!(gso_run(&[]), 0);
    assert_eq!(gso_run(&[msg(a, 100)]), 1);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(a, 100)]), 3);
    // Another destination ends the run; so does a longer datagram.
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(b, 100)]), 2);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 101)]), 1);
    // A shorter one is the last segment.
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 100)]), 2);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 60)]), 2);
    // Empty datagrams never join a run.
    assert_eq!(gso_run(&[msg(a, 0), msg(a, 0)]), 1);
    assert_eq!(gso_run(&[msg(a, 10), msg(a, 0)]), 1);
}

#[test]
fn runs_stay_within_the_kernel_limits() {
    let a = "[::1]:1000";
    let many: Vec<_> = (0..100).map(|_| msg(a, 10)).collect();
    assert_eq!(gso_run(&many), MAX_GSO_SEGMENTS);
    let big: Vec<_> = (0..10).map(|_| msg(a, 16_000)).collect();
    // 4 x 16 000 fits in MAX_GSO_BYTES, 5 would not.
    assert_eq!(gso_run(&big), 4);
    assert_eq!(gso_run(&[msg(a, 65_000), msg(a, 600)]), 1);
}

/// Real sockets: a run sent with GSO arrives as the original datagrams, in order, and
/// without GSO the same; the receiver never sees a merged datagram.
#[test]
fn gso_sends_arrive_as_the_original_datagrams() {
    for wanted in [true, false] {
        let gso = Gso::new(wanted);
        if wanted && cfg!(target_os = "linux") {
            assert!(gso.enabled(), "this Linux kernel should know UDP_SEGMENT");
        }
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, to2) = (rx.local_addr().unwrap(), rx2.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40u8)
            .map(|i| {
                let len = if i == 9 || i == 39 { 50 } else { 1200 };
                vec![i; len]
            })
            .collect();
        let mut msgs: Vec<Outgoing<'_>> = payloads.iter().map(|p| Outgoing::new(to, p)).collect();
        // One datagram to another destination in the middle.
        msgs.insert(20, Outgoing::new(to2, b"other"));
        assert_eq!(send_batch(&tx, &msgs, &gso).unwrap(), msgs.len());
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 70_000];
        for p in &payloads {
            let n = rx.recv(&mut buf).unwrap();
            // Not assert_eq: a merged datagram would print kilobytes.
            assert!(
                buf[..n] == p[..],
                "wanted GSO: {wanted}: got {n} bytes of {}, sent {} of {}",
                buf[0],
                p.len(),
                p[0]
            );
        }
        rx2.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"other");
    }
}

/// Real sockets: a socket that asked for packet info learns each datagram's destination
/// address (what a wildcard listener keys its 5-tuples on); one that did not learns nothing.
#[test]
fn packet_info_names_the_address_a_datagram_reached() {
    for (addr, ipv6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
        let Ok(rx) = UdpSocket::bind(addr) else {
            assert!(ipv6, "cannot bind {addr}");
            continue; // a host without IPv6 loopback
        };
        rx.set_nonblocking(true).unwrap();
        let plain = UdpSocket::bind(addr).unwrap();
        plain.set_nonblocking(true).unwrap();
        if cfg!(target_os = "linux") {
            set_packet_info(&rx, ipv6).unwrap();
        }
        let tx = UdpSocket::bind(addr).unwrap();
        for to in [&rx, &plain] {
            tx.send_to(b"hello", to.local_addr().unwrap()).unwrap();
        }
        let layout = SlotLayout {
            size: 2048,
            head: 0,
            tail: 0,
        };
        let mut buf = layout.buffer();
        let recv = |sock: &UdpSocket, buf: &mut [u8]| {
            let mut out = [None; BATCH];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match recv_batch(sock, buf, layout, &mut out) {
                    Ok(n) if n > 0 => return out[0].unwrap(),
                    _ if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    r => panic!("nothing received on {addr}: {r:?}"),
                }
            }
        };
        let got = recv(&rx, &mut buf);
        assert_eq!(&buf[..got.len], b"hello");
        if cfg!(target_os = "linux") {
            assert_eq!(got.local, Some(rx.local_addr().unwrap().ip()), "{addr}");
        }
        assert_eq!(recv(&plain, &mut buf).local, None, "{addr}");
    }
}
